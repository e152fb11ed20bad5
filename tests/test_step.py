"""The shared train step: identical maths on 1 device and on an 8-device mesh, traced once."""

import os

import jax
import numpy as np
import pytest

from jaxssl import config_lib
from jaxssl import methods
from jaxssl import optim
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import step as step_lib
from jaxssl.kernels.cpu import xla_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(optimizer="sgd"):
  c = config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:test"))
  # SGD for the strict parameter comparison: Adam divides by sqrt(v), which turns the float
  # noise on parameters with an exactly-zero true gradient (e.g. the encoder's final LayerNorm
  # bias, whose shift the head's BatchNorm removes) into full-size +-lr steps.
  c.optim.name = optimizer
  c.optim.base_lr = 0.5
  return c


def _batches(config, n):
  rng = np.random.default_rng(0)
  shape = (config.batch_size, 8, 8, 1)
  return [
    {
      "view1": rng.normal(size=shape).astype(np.float32),
      "view2": rng.normal(size=shape).astype(np.float32),
    }
    for _ in range(n)
  ]


def _run(config, mesh, rules, batches):
  method = methods.build(config)
  sched = optim.make_schedule(config.optim, config.batch_size, 10)
  tx = optim.make_optimizer(config.optim, sched)
  spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batches[0].items()}
  state, shardings = state_lib.create_train_state(method, tx, spec, mesh, rules, seed=0)
  step = step_lib.make_train_step(method, tx, shardings, mesh, rules, lr_schedule=sched)
  losses = []
  with jax.set_mesh(mesh):
    for b in batches:
      b = jax.device_put(b, parallel.batch_sharding(mesh, rules))
      state, metrics = step(state, b)
      losses.append(float(metrics["train/loss"]))
  return state, losses, step


def _one_device():
  return parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def single_device_run():
  config = _config()
  return _run(config, _one_device(), parallel.get_rules("dp"), _batches(config, 3))


@pytest.mark.parametrize("rules_name", ["dp", "fsdp"])
def test_same_losses_and_params_on_1_device_and_4x2_mesh(single_device_run, rules_name):
  config = _config()
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  rules = parallel.get_rules(rules_name)
  state, losses, _ = _run(config, mesh, rules, _batches(config, 3))
  ref_state, ref_losses, _ = single_device_run
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
    state.params,
    ref_state.params,
  )
  if rules_name == "fsdp":
    # Parameters really are split: some leaf is sharded over the fsdp axis.
    specs = [x.sharding.spec for x in jax.tree.leaves(state.params)]
    assert any("fsdp" in str(s) for s in specs)
    assert parallel.parameter_bytes_per_device(state.params) < parallel.parameter_bytes_per_device(
      ref_state.params
    )


def test_adamw_losses_match_on_fsdp_mesh():
  config = _config("adamw")
  _, ref, _ = _run(config, _one_device(), parallel.get_rules("dp"), _batches(config, 3))
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  _, losses, _ = _run(config, mesh, parallel.get_rules("fsdp"), _batches(config, 3))
  np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=1e-6)


def test_loss_falls_and_step_traces_once():
  config = _config("adamw")
  batches = _batches(config, 1) * 6  # the same batch: the loss must go down
  _, losses, step = _run(config, _one_device(), parallel.get_rules("dp"), batches)
  assert losses[-1] < losses[0]
  assert step._cache_size() == 1


def test_rng_is_folded_by_step():
  # Resume is exact because the step's RNG is a pure function of (seed, step).
  k = jax.random.PRNGKey(0)
  a = jax.random.fold_in(k, 3)
  assert np.array_equal(a, jax.random.fold_in(k, 3))
  assert not np.array_equal(a, jax.random.fold_in(k, 4))


def test_step_compiles_with_the_mesh_kernels_compiler_options(monkeypatch):
  # An option value XLA rejects proves the step's jit is given the CPU kernels' options.
  monkeypatch.setattr(
    xla_options, "CPU_OPTIONS", {xla_options.YNN_FUSION_TYPE: "NOT_A_FUSION_TYPE"}
  )
  monkeypatch.setattr(xla_options, "supported", lambda: True)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  config = _config()
  with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
    _run(config, _one_device(), parallel.get_rules("dp"), _batches(config, 1))
