"""Conv2D: the GEMM backward equals autodiff of XLA's convolution (float64), the forward and the
parameters are flax.linen.Conv's; kernel_grad in any batch chunking and sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.kernels.cpu import conv

# (kernel, stride, C_in, C_out, side): ResNet's 3x3/1, 3x3/2, 7x7/2 stem, 1x1/2 projection,
# plus an odd side so the last window of a strided conv is partial.
CASES = [
  (3, 1, 4, 5, 9),
  (3, 2, 4, 5, 9),
  (7, 2, 3, 6, 16),
  (1, 2, 4, 5, 8),
  (1, 1, 4, 5, 7),
  (3, 2, 2, 3, 8),
]


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("kernel_size, stride, c_in, c_out, side", CASES)
def test_gemm_backward_equals_autodiff_of_the_convolution(
  x64, kernel_size, stride, c_in, c_out, side
):
  del x64
  rng = np.random.default_rng(kernel_size * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2, side, side, c_in)))
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, c_in, c_out)))
  cotangent = jnp.asarray(
    rng.normal(
      size=conv.conv_xla(x, kernel, (stride, stride), ((kernel_size // 2,) * 2,) * 2).shape
    )
  )
  padding = ((kernel_size // 2,) * 2,) * 2

  def pullback(fn):
    out, vjp = jax.vjp(lambda a, b: fn(a, b, (stride, stride), padding), x, kernel)
    return out, vjp(cotangent)

  want_out, (want_dx, want_dk) = pullback(conv.conv_xla)
  got_out, (got_dx, got_dk) = pullback(conv.conv_gemm_grad)
  assert got_out.dtype == jnp.float64
  np.testing.assert_array_equal(got_out, want_out)  # the forward is XLA's own
  np.testing.assert_allclose(got_dx, want_dx, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got_dk, want_dk, rtol=1e-12, atol=1e-12)


def test_unfold_times_kernel_is_the_convolution(x64):
  del x64
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)))
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
  padding = ((1, 1), (1, 1))
  patches = conv.unfold(x, (3, 3), (2, 2), padding)
  assert patches.shape == (2, 5, 5, 27)
  np.testing.assert_allclose(
    patches @ kernel.reshape(27, 4),
    conv.conv_xla(x, kernel, (2, 2), padding),
    rtol=1e-12,
    atol=1e-12,
  )


@pytest.mark.parametrize("impl", ["xla", "gemm_grad", "gemm", "auto"])
def test_module_has_flax_conv_parameters_and_values(impl):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
  ours = conv.Conv2D(6, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), impl=impl)
  flax_conv = nn.Conv(6, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)
  variables = flax_conv.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
    jnp.shape, variables
  )
  np.testing.assert_allclose(
    ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-6, atol=1e-6
  )


@pytest.mark.parametrize("kernel_size, stride, c_in, c_out, side", CASES)
def test_unfold_transposed_is_the_transpose_of_unfold(x64, kernel_size, stride, c_in, c_out, side):
  del x64, c_out
  x = jnp.asarray(np.random.default_rng(3).normal(size=(3, side, side, c_in)))
  padding = ((kernel_size // 2,) * 2,) * 2
  args = ((kernel_size, kernel_size), (stride, stride), padding)
  patches = conv.unfold(x, *args)
  np.testing.assert_array_equal(
    conv.unfold_transposed(x, *args), patches.reshape(-1, patches.shape[-1]).T
  )


@pytest.mark.parametrize("chunk", [1, 2, 3, 6])
@pytest.mark.parametrize("kernel_size, stride", [(3, 1), (3, 2), (1, 2), (7, 2)])
def test_kernel_grad_in_any_chunking_equals_autodiff(x64, chunk, kernel_size, stride):
  del x64
  rng = np.random.default_rng(chunk + 10 * kernel_size)
  x = jnp.asarray(rng.normal(size=(6, 11, 11, 3)))
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 4)))
  padding = ((kernel_size // 2,) * 2,) * 2
  strides = (stride, stride)
  out, vjp = jax.vjp(lambda k: conv.conv_xla(x, k, strides, padding), kernel)
  cotangent = jnp.asarray(rng.normal(size=out.shape))
  (want,) = vjp(cotangent)
  got = conv.kernel_grad(x, cotangent, (kernel_size, kernel_size), strides, padding, chunk=chunk)
  assert got.dtype == jnp.float64  # the accumulator follows x64, not only float32
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_kernel_grad_rejects_a_chunk_that_does_not_divide_the_batch():
  x = jnp.zeros((6, 5, 5, 2))
  with pytest.raises(ValueError, match="chunk 4 does not divide the batch 6"):
    conv.kernel_grad(x, jnp.zeros((6, 5, 5, 3)), (3, 3), (1, 1), ((1, 1), (1, 1)), chunk=4)


def test_batch_chunk_is_the_largest_divisor_within_the_budget():
  assert conv.batch_chunk(64, 56 * 56 * 64 * 4) == 2  # 1.6 MB of a ResNet stage-0 input each
  assert conv.batch_chunk(64, 7 * 7 * 512 * 4) == 16
  assert conv.batch_chunk(6, 1, budget=4) == 3  # 4 does not divide 6
  assert conv.batch_chunk(7, 10 << 20) == 1  # one image over the budget still makes a chunk
  assert conv.batch_chunk(64, 1) == 64


def test_kernel_grad_of_a_batch_sharded_over_devices_equals_autodiff():
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = 2 * jax.device_count()
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(batch, 9, 9, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  padding = ((1, 1), (1, 1))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x = jax.device_put(x, sharded)

  def loss(k, fn):
    return jnp.sum(jnp.square(fn(x, k, (1, 1), padding)))

  want = jax.jit(jax.grad(lambda k: loss(k, conv.conv_xla)))(kernel)
  got = jax.jit(jax.grad(lambda k: loss(k, conv.conv_gemm_grad)))(kernel)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


def test_auto_picks_gemm_grad_for_strided_convs_and_unknown_impl_fails():
  assert conv.resolve_impl("auto", (2, 2)) == "gemm_grad"
  assert conv.resolve_impl("auto", (1, 1)) == "xla"
  assert conv.resolve_impl("gemm_grad", (1, 1)) == "gemm_grad"
  assert conv.resolve_impl("gemm", (1, 1)) == "gemm"
  with pytest.raises(ValueError, match=r"Unknown conv_impl 'im2col'.*'gemm_grad'"):
    conv.resolve_impl("im2col")


# Kernels larger than the input in a spatial dimension (ResNet's last stage at 64px and 32px
# images, a 7x7 stem on a tiny input), and the equal-size neighbours that stay with XLA.
SMALL_INPUT_CASES = [
  (3, 1, 4, 5, 2),
  (3, 1, 4, 5, 1),
  (3, 2, 4, 5, 2),
  (7, 2, 3, 6, 5),
  (5, 1, 3, 4, 4),
]


@pytest.mark.parametrize("kernel_size, stride, c_in, c_out, side", CASES + SMALL_INPUT_CASES)
def test_gemm_forward_and_gradients_equal_the_convolution(
  x64, kernel_size, stride, c_in, c_out, side
):
  del x64
  rng = np.random.default_rng(kernel_size * 100 + stride * 10 + side)
  x = jnp.asarray(rng.normal(size=(3, side, side + 1, c_in)))  # H != W: no axis mix-up hides
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, c_in, c_out)))
  padding = ((kernel_size // 2,) * 2,) * 2
  strides = (stride, stride)
  want, vjp_xla = jax.vjp(lambda a, b: conv.conv_xla(a, b, strides, padding), x, kernel)
  got, vjp_gemm = jax.vjp(lambda a, b: conv.conv_gemm(a, b, strides, padding), x, kernel)
  assert got.shape == want.shape and got.dtype == jnp.float64
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  cotangent = jnp.asarray(rng.normal(size=want.shape))
  for got_grad, want_grad in zip(vjp_gemm(cotangent), vjp_xla(cotangent)):
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_gemm_in_bfloat16_returns_bfloat16_close_to_float32():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(8, 2, 2, 16)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 8)) / 12, jnp.float32)
  padding = ((1, 1), (1, 1))
  want = conv.conv_xla(x, kernel, (1, 1), padding)
  got = conv.conv_gemm(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), (1, 1), padding)
  assert got.dtype == jnp.bfloat16
  # bf16 rounding of the operands and the result (8 mantissa bits), sums of 144 terms.
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0.05, atol=0.05)


def test_auto_computes_a_kernel_larger_than_its_input_as_a_gemm():
  assert conv.resolve_impl("auto", (1, 1), (3, 3), (2, 2)) == "gemm"
  assert conv.resolve_impl("auto", (1, 1), (3, 3), (2, 5)) == "gemm"
  assert conv.resolve_impl("auto", (2, 2), (7, 7), (6, 6)) == "gemm"
  assert conv.resolve_impl("auto", (1, 1), (3, 3), (3, 3)) == "xla"  # equal size: XLA's
  assert conv.resolve_impl("auto", (2, 2), (3, 3), (3, 3)) == "gemm_grad"
  assert conv.resolve_impl("xla", (1, 1), (3, 3), (2, 2)) == "xla"  # an explicit choice stands


def test_auto_module_on_a_small_input_compiles_without_a_convolution():
  """The compiled forward + backward of Conv2D('auto') on 2x2 maps holds no convolution op (the
  slow path of XLA:CPU's emitter); on 4x4 maps it is XLA's convolution."""

  def compiled_text(side):
    x = jnp.ones((4, side, side, 8), jnp.float32)
    layer = conv.Conv2D(8, (3, 3), padding=((1, 1), (1, 1)), impl="auto")
    variables = layer.init(jax.random.key(0), x)
    loss = lambda v, x: jnp.sum(jnp.square(layer.apply(v, x)))
    return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, x).compile().as_text()

  assert " convolution(" not in compiled_text(2)
  assert " convolution(" in compiled_text(4)
