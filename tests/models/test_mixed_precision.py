"""Mixed precision by config: `model.dtype='bfloat16'` computes in bfloat16, keeps float32
params (master weights), and gives a finite loss close to the float32 one."""

import importlib
import os

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config_lib
from jaxssl.data import masking

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2% per op); after a few layers,
# BatchNorm and the float32 loss, the tiny presets' losses agree to well within 2%.
LOSS_RTOL = 2e-2


def _config(method_name, arg, dtype):
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{method_name}.py:{arg}"))
  config.model.dtype = dtype
  return config


def _build(config):
  # The method module itself, not methods.build: that lists every method module, and this
  # test should not depend on unrelated ones importing.
  return importlib.import_module(f"jaxssl.methods.{config.method}").Method(config)


def _batch(method_name, n=8, seed=0):
  rng = np.random.default_rng(seed)
  if method_name == "mae":
    keep, mask, ids_restore = map(
      np.stack, zip(*[masking.random_mask(rng, 16, 0.75) for _ in range(n)])
    )
    return {
      "image": jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32),
      "keep_indices": jnp.asarray(keep),
      "mask": jnp.asarray(mask),
      "ids_restore": jnp.asarray(ids_restore),
    }
  return {k: jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32) for k in ("view1", "view2")}


def _dtypes_in(jaxpr, primitive):
  """Operand dtypes of every `primitive` equation (recursing into sub-jaxprs)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      found.append({v.aval.dtype for v in eqn.invars})
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found.extend(_dtypes_in(sub, primitive))
  return found


# ResNet + projection head (SimCLR) and ViT + MAE decoder: between them every module with a dtype.
@pytest.mark.parametrize(
  "method_name,arg,primitive",
  [
    ("simclr", "test,resnet18_small", "conv_general_dilated"),
    ("mae", "test", "dot_general"),
  ],
)
def test_bfloat16_step_is_close_to_float32_and_keeps_float32_params(method_name, arg, primitive):
  batch = _batch(method_name)
  f32 = _build(_config(method_name, arg, "float32"))
  bf16 = _build(_config(method_name, arg, "bfloat16"))
  params, aux = jax.jit(lambda rng: nn.unbox(f32.init(rng, batch)))(jax.random.PRNGKey(0))
  # The bfloat16 model initialises the same float32 tree (master weights).
  params_bf16, _ = jax.eval_shape(
    lambda rng: nn.unbox(bf16.init(rng, batch)), jax.random.PRNGKey(0)
  )
  assert jax.tree.structure(params_bf16) == jax.tree.structure(params)
  assert {x.dtype for x in jax.tree.leaves(params_bf16)} == {jnp.dtype(jnp.float32)}

  tx = optax.adamw(1e-3)

  def step(method, params, opt_state):
    grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)
    (loss, (metrics, _)), grads = grad_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
    updates, opt_state = tx.update(grads, opt_state, params)
    return loss, metrics, grads, optax.apply_updates(params, updates)

  opt_state = tx.init(params)
  loss32, _, _, _ = jax.jit(lambda p, o: step(f32, p, o))(params, opt_state)
  loss16, metrics16, grads16, new_params = jax.jit(lambda p, o: step(bf16, p, o))(params, opt_state)

  assert loss16.dtype == jnp.float32 and np.isfinite(loss16)
  assert all(np.isfinite(v) for v in jax.tree.leaves(metrics16))
  np.testing.assert_allclose(loss16, loss32, rtol=LOSS_RTOL)
  # Gradients, updated params: float32 and finite; the bf16 step really moved the weights.
  for tree in (grads16, new_params):
    leaves = jax.tree.leaves(tree)
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.float32)}
    assert all(np.all(np.isfinite(x)) for x in leaves)
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))

  # The compute really ran in bfloat16: the backbone's convs / matmuls take bf16 operands in
  # the bf16 model and none do in the float32 one.
  def forward_jaxpr(method):
    return jax.make_jaxpr(lambda p: method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0))(
      params
    ).jaxpr

  ops16 = _dtypes_in(forward_jaxpr(bf16), primitive)
  ops32 = _dtypes_in(forward_jaxpr(f32), primitive)
  bf = jnp.dtype(jnp.bfloat16)
  assert sum(dtypes == {bf} for dtypes in ops16) >= 4
  assert not any(bf in dtypes for dtypes in ops32)


def test_unknown_dtype_fails_clearly():
  with pytest.raises(ValueError, match="model.dtype"):
    _build(_config("simclr", "test", "bfloat17"))
