"""Optimizers and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config_lib
from jaxssl import optim


def _optim(**kw):
  c = config_lib.base_config().optim
  c.update(kw)
  return c


def test_decay_mask_excludes_biases_and_norms():
  params = {
    "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    "norm": {"scale": jnp.ones(4)},
  }
  assert optim.decay_mask(params) == {
    "dense": {"kernel": True, "bias": False},
    "norm": {"scale": False},
  }


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_weight_decay_leaves_biases_alone(name):
  # Zero gradients: only weight decay moves parameters, and only the masked-in ones.
  c = _optim(name=name, base_lr=0.1, weight_decay=0.5, warmup_steps=0)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 256, 10))
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["bias"], params["bias"])
  assert float(new["kernel"][0, 0]) < 1.0


def test_schedule_warmup_peak_and_cosine_end():
  c = _optim(base_lr=0.3, lr_scaling="linear", warmup_steps=10, end_lr_factor=0.0)
  sched = optim.make_schedule(c, 512, 110)
  np.testing.assert_allclose(float(sched(0)), 0.0)
  np.testing.assert_allclose(float(sched(10)), 0.6, rtol=1e-6)  # 0.3 x 512/256
  np.testing.assert_allclose(float(sched(60)), 0.3, rtol=1e-5)  # half-way down the cosine
  assert float(sched(110)) < 1e-6


def test_sqrt_scaling_and_bad_names():
  assert optim.peak_learning_rate(_optim(base_lr=0.1, lr_scaling="sqrt"), 1024) == pytest.approx(
    0.2
  )
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.peak_learning_rate(_optim(lr_scaling="cubic"), 256)
  with pytest.raises(ValueError, match="Unknown optimizer"):
    optim.make_optimizer(_optim(name="adafactor"), lambda s: 0.1)


def _params_and_grads(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {
    "encoder": {
      "embedding": {"kernel": (3, 4), "bias": (4,)},
      "dense": {"kernel": (4, 4), "bias": (4,)},
    }
  }
  draw = lambda: jax.tree.map(
    lambda shape: jnp.asarray(rng.normal(size=shape)),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )
  return draw(), draw()


def _run(c, params, grads, steps=3):
  tx = optim.make_optimizer(c, optim.make_schedule(c, 256, 10))
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_frozen_parameters_never_move_and_the_rest_train_as_before(name):
  params, grads = _params_and_grads()
  base = dict(name=name, base_lr=0.1, weight_decay=0.1, warmup_steps=0)
  frozen = _run(_optim(**base, frozen=(r"^encoder/embedding/",)), params, grads)
  free = _run(_optim(**base), params, grads)
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(
      frozen["encoder"]["embedding"][leaf], params["encoder"]["embedding"][leaf]
    )
    assert not np.allclose(free["encoder"]["embedding"][leaf], params["encoder"]["embedding"][leaf])
  # Per-parameter optimizers: the trained parameters follow the unfrozen run exactly.
  for k in ("kernel", "bias"):
    np.testing.assert_allclose(
      frozen["encoder"]["dense"][k], free["encoder"]["dense"][k], rtol=1e-6
    )


def test_bad_frozen_pattern_is_named():
  params, grads = _params_and_grads()
  with pytest.raises(ValueError, match=r"optim.frozen: '\(' is not a regular expression"):
    _run(_optim(frozen=("(",)), params, grads)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_norm_bias_lr_factor_scales_only_bias_and_norm_steps(name):
  # One step from the same state: biases move factor x as far, weights exactly as far.
  params, grads = _params_and_grads(1)
  base = dict(name=name, base_lr=0.1, weight_decay=0.01, warmup_steps=0)
  scaled = _run(_optim(**base, norm_bias_lr_factor=0.024), params, grads, steps=1)
  plain = _run(_optim(**base), params, grads, steps=1)
  for part in ("embedding", "dense"):
    p0, s, q = (t["encoder"][part] for t in (params, scaled, plain))
    np.testing.assert_allclose(
      s["bias"] - p0["bias"], 0.024 * (q["bias"] - p0["bias"]), atol=2e-7
    )  # float32 round-off of p0 + update
    np.testing.assert_allclose(s["kernel"], q["kernel"], rtol=1e-7)
