"""Optimizers and schedules."""
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
  params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
            "norm": {"scale": jnp.ones(4)}}
  assert optim.decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                      "norm": {"scale": False}}


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
  assert optim.peak_learning_rate(_optim(base_lr=0.1, lr_scaling="sqrt"), 1024) == pytest.approx(0.2)
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.peak_learning_rate(_optim(lr_scaling="cubic"), 256)
  with pytest.raises(ValueError, match="Unknown optimizer"):
    optim.make_optimizer(_optim(name="adafactor"), lambda s: 0.1)
