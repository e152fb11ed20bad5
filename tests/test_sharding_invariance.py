"""Every method's loss and gradients are the same on any mesh (data, fsdp, tensor) under the
'fsdp_tp' rules: sharding is a layout decision XLA implements with collectives, never a change
to the maths. Methods are discovered with `jaxssl.methods.available()`, so a new method is
covered as soon as it has a `configs/<name>.py` with a `test` preset.

One real batch of the method's own input pipeline (its `test` preset), one jitted
value_and_grad per mesh; the (1,) mesh is the reference.
"""

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import method_batches

from jaxssl import config_lib
from jaxssl import methods
from jaxssl import parallel
from jaxssl import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = parallel.get_rules("fsdp_tp")
# (data, fsdp, tensor). 2x2x2 splits all three axes at once over the 8 devices: every method
# runs on it.
ALL_AXES_MESH = (2, 2, 2)
# One-axis-dominant meshes (8-way data: 2 examples per device; 4-way FSDP) add per-device
# shapes, not new maths, so they run for one method per kind of cross-example computation
# rather than for all 15 (one compile per method and mesh is most of this file's time):
# negatives across the batch (simclr), a batch statistics matrix (barlow_twins), batch-mean
# centering of multi-crop outputs (dino), per-example token gathers (mae), two towers with
# cross-modal logits (clip), token embeddings and a causal LM (gpt).
SKEWED_MESHES = {"8x1x1": (8, 1, 1), "2x4x1": (2, 4, 1)}
SKEWED_MESH_METHODS = ("simclr", "barlow_twins", "dino", "mae", "clip", "gpt")


@functools.lru_cache(maxsize=None)
def _setup(name, data_dir):
  """(method, batch, variables): variables initialised once, on one device, as host arrays;
  each mesh then only places them (no init compile per mesh)."""
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{name}.py:test"))
  config.data.data_dir = data_dir
  method = methods.build(config)
  batch = method_batches.first_batch(config, method, data_dir)
  spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  init_fn, _, _ = state_lib.model_variables(method, spec, _mesh((1, 1, 1)), RULES, config.seed)
  variables = jax.tree.map(np.asarray, jax.jit(init_fn)())
  return method, batch, spec, variables, config.seed


def _mesh(sizes):
  return parallel.make_mesh(
    dict(zip(parallel.MESH_AXES, sizes)), devices=jax.devices()[: math.prod(sizes)]
  )


def _loss_and_grads(name, data_dir, sizes):
  method, batch, spec, host_variables, seed = _setup(name, data_dir)
  mesh = _mesh(sizes)
  _, _, shardings = state_lib.model_variables(method, spec, mesh, RULES, seed)
  rng, step = jax.random.PRNGKey(1), jnp.int32(1)

  def loss_and_grads(variables, batch):
    with nn.logical_axis_rules(RULES):  # read at trace time by activation constraints
      grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)
      (loss, (_, new_aux)), grads = grad_fn(variables["params"], variables["aux"], batch, rng, step)
    return loss, grads, new_aux

  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    variables = jax.device_put(host_variables, shardings)
    batch = jax.device_put(batch, parallel.batch_sharding(mesh, RULES))
    loss, grads, new_aux = jax.jit(
      loss_and_grads,
      out_shardings=(parallel.replicated(mesh), shardings["params"], shardings["aux"]),
    )(variables, batch)
  specs = [str(x.sharding.spec) for x in jax.tree.leaves(variables["params"])]
  return jax.tree.map(np.asarray, (loss, grads, new_aux)), specs


@functools.lru_cache(maxsize=None)
def _reference(name, data_dir):
  return _loss_and_grads(name, data_dir, (1, 1, 1))[0]


def _cases():
  for name in methods.available():
    yield pytest.param(name, ALL_AXES_MESH, id=f"{name}-2x2x2")
    if name in SKEWED_MESH_METHODS:
      for mesh_name, sizes in SKEWED_MESHES.items():
        yield pytest.param(name, sizes, id=f"{name}-{mesh_name}", marks=pytest.mark.slow)


def test_skewed_mesh_methods_exist():
  assert set(SKEWED_MESH_METHODS) <= set(methods.available())


@pytest.mark.parametrize("name,sizes", list(_cases()))
def test_loss_and_gradients_do_not_depend_on_the_mesh(name, sizes, data_dir):
  (loss, grads, new_aux), specs = _loss_and_grads(name, data_dir, sizes)
  ref_loss, ref_grads, ref_aux = _reference(name, data_dir)
  assert np.isfinite(ref_loss)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
  # Absolute tolerance on the scale of the largest gradient: entries whose true value is 0
  # (e.g. a LayerNorm bias followed by BatchNorm) carry only float noise on every mesh.
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
  assert scale > 0
  jax.tree.map(
    lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5 * scale), grads, ref_grads
  )
  jax.tree.map(
    lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6), new_aux, ref_aux
  )
  if sizes[2] > 1:  # the tensor-parallel mesh really splits some parameter over 'tensor'
    assert any("tensor" in s for s in specs), specs
  if sizes[1] > 1:
    assert any("fsdp" in s for s in specs), specs
