"""jaxssl.kernels.cpu.matmul: float32-accumulating bf16 dots against float64, their gradients, HLO."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dataclasses

from jaxssl.kernels import cpu
from jaxssl.kernels.cpu import attention, matmul, xla_options
from jaxssl.models.vit import MlpBlock, SelfAttention

# bf16 keeps 8 significant bits: rounding one result to it is off by at most 2^-9 relative.
BF16_ROUNDING = 2.0**-8

# (lhs shape, rhs shape, (lhs contracting, rhs contracting)) covering every plan: Dense's
# [..., K] x [K, N]; einsum's swapped operand order; contracting dims in the middle or reordered;
# rhs stored [N, K]; both operands contracting their leading dim (a weight gradient's shape).
CASES = [
  ((4, 6, 10), (10, 4), ((2,), (0,))),
  ((10, 4), (4, 6, 10), ((0,), (2,))),
  ((3, 4, 4, 2), (4, 3, 6), ((0, 2), (1, 0))),
  ((2, 3, 4, 5), (3, 5, 8), ((1, 3), (0, 1))),
  ((8, 6), (10, 6), ((1,), (1,))),
  ((6, 8), (6, 10), ((0,), (0,))),
  ((4, 2, 3), (2, 3, 6), ((1, 2), (0, 1))),
  # Big enough for YNNPACK (which rejects a transposed output layout; XLA:CPU's fallback dot
  # then fails on bf16 x bf16 = f32), rhs stored [N, K], with and without the swap.
  ((32, 16), (24, 16), ((1,), (1,))),
  ((16, 16), (24, 16), ((1,), (1,))),
  # A small activation against a larger kernel (a projection head on a small batch).
  ((16, 128), (128, 32), ((1,), (0,))),
]


def _bf16_operands(lhs_shape, rhs_shape, seed=0):
  rng = np.random.default_rng(seed)
  lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.bfloat16)
  rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.bfloat16)
  return lhs, rhs


def _tensordot64(lhs, rhs, contract):
  """lax.dot_general's result in float64: [lhs free..., rhs free...]."""
  return np.tensordot(np.asarray(lhs, np.float64), np.asarray(rhs, np.float64), axes=contract)


def _assert_bf16_rounded(got, want):
  got = np.asarray(got, np.float64)
  # Each output is one float32 accumulation rounded once to bf16.
  np.testing.assert_array_less(np.abs(got - want), BF16_ROUNDING * np.abs(want) + 1e-6)


@pytest.mark.parametrize("lhs_shape,rhs_shape,contract", CASES)
def test_matches_float64_product_of_the_bf16_operands(lhs_shape, rhs_shape, contract):
  lhs, rhs = _bf16_operands(lhs_shape, rhs_shape)
  product = lambda a, b: matmul.dot_general(a, b, (contract, ((), ())))
  assert "custom_vjp_call" in str(jax.make_jaxpr(product)(lhs, rhs))  # not the lax fallback
  got = jax.jit(product)(lhs, rhs)
  want = _tensordot64(lhs, rhs, contract)
  assert got.shape == want.shape and got.dtype == jnp.bfloat16
  _assert_bf16_rounded(got, want)


@pytest.mark.parametrize("lhs_shape,rhs_shape,contract", CASES)
def test_gradients_match_float64(lhs_shape, rhs_shape, contract):
  lhs, rhs = _bf16_operands(lhs_shape, rhs_shape, seed=1)
  out_shape = _tensordot64(lhs, rhs, contract).shape
  # A bf16-exact cotangent, so the only roundings are the gradients' own.
  cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(out_shape), jnp.bfloat16)

  def loss(a, b):
    out = matmul.dot_general(a, b, (contract, ((), ())))
    return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32))

  grad_lhs, grad_rhs = jax.jit(jax.grad(loss, argnums=(0, 1)))(lhs, rhs)
  assert grad_lhs.dtype == grad_rhs.dtype == jnp.bfloat16
  lhs64, rhs64, g64 = (np.asarray(v, np.float64) for v in (lhs, rhs, cotangent))
  # d<g, lhs . rhs>/d lhs and /d rhs, re-derived with einsum letters.
  letters = "abcdefghij"
  lhs_ix = list(letters[: lhs.ndim])
  rhs_ix = list(letters[lhs.ndim : lhs.ndim + rhs.ndim])
  for i, j in zip(*contract):
    rhs_ix[j] = lhs_ix[i]
  out_ix = [c for k, c in enumerate(lhs_ix) if k not in contract[0]] + [
    c for k, c in enumerate(rhs_ix) if k not in contract[1]
  ]
  lhs_s, rhs_s, out_s = "".join(lhs_ix), "".join(rhs_ix), "".join(out_ix)
  _assert_bf16_rounded(grad_lhs, np.einsum(f"{out_s},{rhs_s}->{lhs_s}", g64, rhs64))
  _assert_bf16_rounded(grad_rhs, np.einsum(f"{lhs_s},{out_s}->{rhs_s}", lhs64, g64))


def test_materialized_transpose_is_the_transpose():
  for rows in (48, 12, 6):  # splits of 16, 4 and 2
    x = jnp.arange(rows * 5, dtype=jnp.float32).reshape(rows, 5)
    np.testing.assert_array_equal(jax.jit(matmul.materialized_transpose)(x), x.T)
  for rows in (7, 2):  # odd; or one row group, which XLA would fold back into the dot
    with pytest.raises(ValueError, match="even row count of at least 4"):
      matmul.materialized_transpose(jnp.ones((rows, 5)))


def test_materialized_swapaxes_swaps_one_pair_of_dims():
  x = jnp.arange(2 * 6 * 4 * 3, dtype=jnp.float32).reshape(2, 6, 4, 3)
  np.testing.assert_array_equal(
    jax.jit(lambda x: matmul.materialized_swapaxes(x, 1))(x), x.transpose(0, 2, 1, 3)
  )
  with pytest.raises(ValueError, match="dimension 2"):
    matmul.materialized_swapaxes(jnp.ones((2, 4, 3, 5)), 2)


def test_materialized_transpose_keeps_leading_dims():
  x = jnp.arange(2 * 3 * 6 * 5, dtype=jnp.float32).reshape(2, 3, 6, 5)
  np.testing.assert_array_equal(jax.jit(matmul.materialized_transpose)(x), x.transpose(0, 1, 3, 2))


# (a shape, b shape, b_transposed): attention's logits q k^T and its weights @ values.
BATCHED_CASES = [
  ((2, 3, 8, 5), (2, 3, 6, 5), True),
  ((2, 3, 8, 6), (2, 3, 6, 5), False),
  ((4, 32, 16), (4, 24, 16), True),
]


@pytest.mark.parametrize("a_shape,b_shape,b_transposed", BATCHED_CASES)
@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_batched_matmul_value_and_gradients_match_float64(
  a_shape, b_shape, b_transposed, out_dtype
):
  a, b = _bf16_operands(a_shape, b_shape, seed=5)
  product = lambda a, b: matmul.batched_matmul(a, b, b_transposed, preferred_element_type=out_dtype)
  assert "custom_vjp_call" in str(jax.make_jaxpr(product)(a, b))
  b_spec = "...nk" if b_transposed else "...kn"
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
  want = np.einsum(f"...mk,{b_spec}->...mn", a64, b64)
  got = jax.jit(product)(a, b)
  assert got.shape == want.shape and got.dtype == (out_dtype or jnp.bfloat16)
  _assert_bf16_rounded(got, want)
  cotangent = jnp.asarray(np.random.default_rng(6).standard_normal(want.shape), jnp.bfloat16)
  loss = lambda a, b: jnp.sum(product(a, b).astype(jnp.float32) * cotangent.astype(jnp.float32))
  grad_a, grad_b = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, b)
  assert grad_a.dtype == grad_b.dtype == jnp.bfloat16
  g64 = np.asarray(cotangent, np.float64)
  _assert_bf16_rounded(grad_a, np.einsum(f"...mn,{b_spec}->...mk", g64, b64))
  _assert_bf16_rounded(grad_b, np.einsum(f"...mk,...mn->{b_spec}", a64, g64))


def test_batched_matmul_is_lax_for_float32_and_odd_rows():
  rng = np.random.default_rng(7)
  a = jnp.asarray(rng.standard_normal((2, 3, 8, 5)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((2, 3, 6, 5)), jnp.float32)
  np.testing.assert_array_equal(
    matmul.batched_matmul(a, b, True), jnp.einsum("bhqk,bhsk->bhqs", a, b)
  )
  odd = a[:, :, :7].astype(jnp.bfloat16)  # 7 query rows: the gradient's transpose is not taken
  product = lambda a, b: matmul.batched_matmul(a, b, True)
  assert "custom_vjp_call" not in str(jax.make_jaxpr(product)(odd, b.astype(jnp.bfloat16)))
  np.testing.assert_array_equal(
    product(odd, b.astype(jnp.bfloat16)), jnp.einsum("bhqk,bhsk->bhqs", odd, b.astype(jnp.bfloat16))
  )


def test_everything_else_is_lax_dot_general():
  rng = np.random.default_rng(3)
  x32 = jnp.asarray(rng.standard_normal((4, 6)), jnp.float32)
  w32 = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
  dims = (((1,), (0,)), ((), ()))
  np.testing.assert_array_equal(matmul.dot_general(x32, w32, dims), lax.dot_general(x32, w32, dims))
  x, w = x32.astype(jnp.bfloat16), w32.astype(jnp.bfloat16)
  out = matmul.dot_general(x, w, dims, preferred_element_type=jnp.float32)
  assert out.dtype == jnp.float32  # the caller's output dtype is kept
  batched = jnp.asarray(rng.standard_normal((2, 4, 6)), jnp.bfloat16)
  bdims = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(
    matmul.dot_general(batched, batched.transpose(0, 2, 1), bdims),
    lax.dot_general(batched, batched.transpose(0, 2, 1), bdims),
  )
  # Odd row count (M = 5 x 3): the gradient's transpose could not be materialized.
  odd = jnp.asarray(rng.standard_normal((5, 3, 6)), jnp.bfloat16)
  np.testing.assert_array_equal(
    matmul.dot_general(odd, w, (((2,), (0,)), ((), ()))),
    lax.dot_general(odd, w, (((2,), (0,)), ((), ()))),
  )
  with pytest.raises(TypeError, match="contracting dimensions"):
    matmul.dot_general(x, w[:5], dims)  # lax.dot_general's own shape error


def _grad_dot_types(loss, params):
  """Dot operand types of the compiled gradient of loss at params."""
  return xla_options.dot_operand_types(jax.jit(jax.grad(loss)).lower(params).compile().as_text())


def _mlp_grad_dots(ops):
  """Dot operand types of one compiled bf16 MLP block's forward + backward with `ops`."""
  block = MlpBlock(mlp_dim=64, dtype=jnp.bfloat16, kernels=ops)
  x = jnp.ones((4, 48, 32), jnp.float32)
  params = block.init(jax.random.key(0), x)
  return _grad_dot_types(lambda p: jnp.sum(block.apply(p, x).astype(jnp.float32) ** 2), params)


def test_bf16_mlp_gradient_keeps_every_dot_in_bf16():
  # Two layers: forward, input gradient and weight gradient each (the first layer's input
  # gradient is not needed and not computed: x is not differentiated).
  ours = _mlp_grad_dots(cpu.KERNELS)
  assert len(ours) == 5 and all(d == ("bf16", "bf16") for d in ours), ours
  # What the check catches: autodiff of plain bf16 dots (nn.Dense) leaves XLA float32 dots.
  plain = _mlp_grad_dots(dataclasses.replace(cpu.KERNELS, dense=nn.Dense))
  assert any(d != ("bf16", "bf16") for d in plain), plain


def test_bf16_heads_first_attention_gradient_keeps_every_dot_in_bf16():
  # 4 heads and 16 tokens: both copies between [b, t, h, k] and [b, h, t, k] can be written out.
  layer = SelfAttention(num_heads=4, dtype=jnp.bfloat16, kernels=cpu.KERNELS)
  x = jnp.ones((2, 16, 32), jnp.float32)
  params = layer.init(jax.random.key(0), x)
  loss = lambda p: jnp.sum(layer.apply(p, x).astype(jnp.float32) ** 2)
  dots = _grad_dot_types(loss, params)
  # q, k, v and out projections: forward + weight gradient each, input gradients of q, k, v
  # and out's (x is not differentiated, so only y's); logits and weights @ values: forward
  # and two gradients each. XLA may merge the q/k/v input gradients' sum into fewer dots.
  assert len(dots) >= 12 and all(d == ("bf16", "bf16") for d in dots), dots
  # What the check catches: without the heads-first copies XLA folds the transposes into the
  # batched dots' operand layouts and upcasts those dots to float32.
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(attention, "_swap_heads", lambda x, copy: jnp.swapaxes(x, 1, 2))
    uncopied = _grad_dot_types(loss, params)
  assert any(d == ("f32", "f32") for d in uncopied), uncopied


def test_bf16_attention_matches_float32_attention():
  # The bf16 path (copies, f32-accumulating batched dots, custom gradients) against the same
  # parameters in float32: differences of bf16 rounding only, in the output and every gradient.
  x = jnp.asarray(np.random.default_rng(8).standard_normal((2, 16, 32)), jnp.float32)
  layers = [
    SelfAttention(num_heads=4, dtype=dt, kernels=cpu.KERNELS) for dt in (jnp.bfloat16, jnp.float32)
  ]
  params = layers[1].init(jax.random.key(0), x)
  outs, grads = [], []
  for layer in layers:
    outs.append(np.asarray(layer.apply(params, x), np.float64))
    loss = lambda p, x, layer=layer: jnp.sum(layer.apply(p, x).astype(jnp.float32) ** 2)
    grads.append(jax.tree.leaves(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)))
  np.testing.assert_allclose(outs[0], outs[1], atol=3e-2 * np.abs(outs[1]).max())
  for got, want in zip(*grads):
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=5e-2 * np.abs(want).max())


def test_dense_is_nn_dense_in_float32_and_with_a_given_dot_general():
  x = jnp.asarray(np.random.default_rng(9).standard_normal((4, 6, 12)), jnp.float32)
  params = nn.Dense(8).init(jax.random.key(0), x)
  np.testing.assert_array_equal(matmul.Dense(8).apply(params, x), nn.Dense(8).apply(params, x))
  calls = []

  def counting_dot(*args, **kwargs):
    calls.append(1)
    return lax.dot_general(*args, **kwargs)

  for dtype in (jnp.float32, jnp.bfloat16):
    got = matmul.Dense(8, dtype=dtype, dot_general=counting_dot).apply(params, x)
    want = nn.Dense(8, dtype=dtype, dot_general=lax.dot_general).apply(params, x)
    np.testing.assert_array_equal(got, want)
  assert len(calls) == 2  # the caller's dot, in bf16 too


def test_bf16_dense_under_a_sharded_batch_matches_one_device():
  devices = np.array(jax.devices()[:8])
  if devices.size < 2:
    pytest.skip("needs several devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  mesh = jax.sharding.Mesh(devices, ("data",))
  dense = nn.Dense(16, dtype=jnp.bfloat16, dot_general=matmul.dot_general)
  x = jnp.asarray(np.random.default_rng(4).standard_normal((8 * devices.size, 12)), jnp.float32)
  params = dense.init(jax.random.key(0), x)
  apply = jax.jit(dense.apply)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(dense.apply(p, x).astype(jnp.float32) ** 2)))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded_x = jax.device_put(x, sharding)
  # Rows are independent in the forward, so sharding them changes nothing.
  np.testing.assert_array_equal(apply(params, sharded_x), apply(params, x))
  # Gradients sum over the sharded rows: other summation order, bf16-level differences only.
  for got, want in zip(jax.tree.leaves(grad(params, sharded_x)), jax.tree.leaves(grad(params, x))):
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, atol=2.0**-7 * np.abs(want).max())
