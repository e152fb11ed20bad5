"""Conv2D: the GEMM backward equals autodiff of XLA's convolution (float64), the forward and the
parameters are flax.linen.Conv's, and a ResNet trains to the same gradients either way."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models import ResNet
from jaxssl.models import conv

# (kernel, stride, C_in, C_out, side): ResNet's 3x3/1, 3x3/2, 7x7/2 stem, 1x1/2 projection,
# plus an odd side so the last window of a strided conv is partial.
CASES = [(3, 1, 4, 5, 9), (3, 2, 4, 5, 9), (7, 2, 3, 6, 16), (1, 2, 4, 5, 8), (1, 1, 4, 5, 7),
         (3, 2, 2, 3, 8)]


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("kernel_size, stride, c_in, c_out, side", CASES)
def test_gemm_backward_equals_autodiff_of_the_convolution(x64, kernel_size, stride, c_in,
                                                          c_out, side):
  del x64
  rng = np.random.default_rng(kernel_size * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2, side, side, c_in)))
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, c_in, c_out)))
  cotangent = jnp.asarray(rng.normal(size=conv.conv_xla(
      x, kernel, (stride, stride), ((kernel_size // 2,) * 2,) * 2).shape))
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
  np.testing.assert_allclose(patches @ kernel.reshape(27, 4),
                             conv.conv_xla(x, kernel, (2, 2), padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["xla", "gemm_grad", "auto"])
def test_module_has_flax_conv_parameters_and_values(impl):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
  ours = conv.Conv2D(6, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), impl=impl)
  flax_conv = nn.Conv(6, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)
  variables = flax_conv.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == \
      jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(ours.apply(variables, x), flax_conv.apply(variables, x),
                             rtol=1e-6, atol=1e-6)


def test_auto_picks_gemm_grad_for_strided_convs_on_cpu_and_unknown_impl_fails():
  cpu = jax.default_backend() == "cpu"
  assert conv.resolve_impl("auto", (2, 2)) == ("gemm_grad" if cpu else "xla")
  assert conv.resolve_impl("auto", (1, 1)) == "xla"
  assert conv.resolve_impl("gemm_grad", (1, 1)) == "gemm_grad"
  with pytest.raises(ValueError, match=r"Unknown conv_impl 'im2col'.*'gemm_grad'"):
    conv.resolve_impl("im2col")


def test_resnet_gradients_agree_between_impls():
  images = jnp.asarray(np.random.default_rng(2).normal(size=(4, 32, 32, 3)), jnp.float32)
  models = {impl: ResNet(depth=18, stem="imagenet", width=8, conv_impl=impl)
            for impl in ("xla", "gemm_grad", "auto")}
  variables = models["xla"].init(jax.random.key(0), images)

  def grads(model):
    def loss(params):
      (out, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
      return jnp.sum(jnp.square(out))
    return jax.grad(loss)(variables["params"])

  want = grads(models["xla"])
  scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(want))
  for impl in ("gemm_grad", "auto"):
    got = grads(models[impl])
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * scale)
