"""VICReg method: loss from per-view expander outputs (float64 eq. 6), symmetry, gradients,
encode, one train run with the eval handoff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("vicreg", arg)


_batch = harness.random_views


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def _vicreg64(z1, z2, lam=25.0, mu=25.0, nu=1.0, eps=1e-4, halve=True):
  """Independent float64 eq. 6 (invariance as alg. 1's mse_loss, unbiased statistics), the
  variance terms halved as in the official `main_vicreg.py` l.205-207 (or summed, as eq. 6
  is printed and old records computed)."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  d = z1.shape[1]

  def v(z):
    return np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + eps)))

  def c(z):
    cov = np.cov(z, rowvar=False)  # unbiased
    return (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / d

  half = 0.5 if halve else 1.0
  return lam * np.mean((z1 - z2) ** 2) + mu * half * (v(z1) + v(z2)) + nu * (c(z1) + c(z2))


def _expand(method, params, state, images):
  (z, _), updates = method.model.apply(
    {"params": params, **state}, images, train=True, mutable=["batch_stats"]
  )
  return z, updates


def test_loss_is_vicreg_of_per_view_expander_outputs(setup):
  method, batch, params, aux = setup
  assert method.coeffs == dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  # One BatchNorm batch per view, as the official code.
  z1, state = _expand(method, params, aux["model_state"], batch["view1"])
  z2, state = _expand(method, params, state, batch["view2"])
  assert z1.shape == (8, 16)
  np.testing.assert_allclose(float(loss), _vicreg64(z1, z2), rtol=1e-5)
  assert {"invariance", "variance", "covariance", "expander_std", "embedding_std", "rankme"} <= set(
    metrics
  )
  want_std = 0.5 * (
    np.sqrt(np.var(np.asarray(z1, np.float64), 0, ddof=1) + 1e-4).mean()
    + np.sqrt(np.var(np.asarray(z2, np.float64), 0, ddof=1) + 1e-4).mean()
  )
  assert float(metrics["expander_std"]) == pytest.approx(want_std, rel=1e-5)
  for g, w in zip(jax.tree.leaves(new_aux["model_state"]), jax.tree.leaves(state)):
    np.testing.assert_allclose(g, w, rtol=1e-6)


def test_summed_variance_terms_reproduce_old_records(setup):
  _, batch, params, aux = setup
  config = _config()
  config.vicreg.variance_terms = "sum"
  method = methods.build(config)
  loss, _ = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  z1, state = _expand(method, params, aux["model_state"], batch["view1"])
  z2, _ = _expand(method, params, state, batch["view2"])
  np.testing.assert_allclose(float(loss), _vicreg64(z1, z2, halve=False), rtol=1e-5)
  config.vicreg.variance_terms = "half"
  with pytest.raises(ValueError, match="variance_terms='half'"):
    methods.build(config)


def test_swapping_the_views_leaves_the_loss_unchanged_and_gradients_reach_everything(setup):
  method, batch, params, aux = setup
  swapped = {"view1": batch["view2"], "view2": batch["view1"]}

  def loss(p, b):
    return method.loss_fn(p, aux, b, jax.random.PRNGKey(1), 0)[0]

  grad_fn = jax.jit(jax.value_and_grad(loss))
  value, grads = grad_fn(params, batch)
  np.testing.assert_allclose(float(value), float(grad_fn(params, swapped)[0]), rtol=1e-5)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  for part in ("encoder", "head"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[part])) > 0, part


def test_post_update_is_identity_and_encode_skips_the_expander(setup):
  method, batch, params, aux = setup
  state = TrainState(step=jnp.int32(1), params=params, opt_state=None, aux=aux, rng=None)
  assert method.post_update(state) is state
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)  # vit_test width, not the expander's 16
  direct, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["view1"])
  np.testing.assert_allclose(feats, direct, rtol=1e-6)


def test_imagenet_preset_is_the_official_recipe():
  c = _config("imagenet")
  assert dict(c.vicreg) == dict(
    sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, variance_terms="mean"
  )
  # main_vicreg.py adjust_learning_rate: cosine to end_lr = 0.001 x base_lr.
  assert c.optim.end_lr_factor == 0.001
  assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay) == ("lars", 0.2, 1e-6)


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "vicreg")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert {"train/variance", "train/covariance", "train/rankme"} <= set(logged)
  feats, _ = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and np.all(np.isfinite(feats))
