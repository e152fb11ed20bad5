"""Barlow Twins method: loss from per-view projector outputs (float64 eq. 1), invariance of
the loss to the projector's output bias, gradients, encode, one train run with the eval
handoff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("barlow_twins", arg)


_batch = harness.random_views


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def _barlow64(z1, z2, lam=5e-3, eps=1e-5):
  """Independent float64 eq. 1 after BatchNorm1d(affine=False) in training mode."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  bn1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
  bn2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
  c = bn1.T @ bn2 / z1.shape[0]
  off = c - np.diag(np.diag(c))
  return np.sum((1 - np.diag(c)) ** 2) + lam * np.sum(off**2)


def _project(method, params, state, images):
  (z, _), updates = method.model.apply(
    {"params": params, **state}, images, train=True, mutable=["batch_stats"]
  )
  return z, updates


def test_loss_is_barlow_twins_of_per_view_projector_outputs(setup):
  method, batch, params, aux = setup
  assert method.lambda_ == 5e-3
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  z1, state = _project(method, params, aux["model_state"], batch["view1"])
  z2, state = _project(method, params, state, batch["view2"])
  assert z1.shape == (8, 16)
  np.testing.assert_allclose(float(loss), _barlow64(z1, z2), rtol=1e-5)
  assert {"on_diagonal", "off_diagonal", "mean_diagonal", "embedding_std", "rankme"} <= set(metrics)
  for g, w in zip(jax.tree.leaves(new_aux["model_state"]), jax.tree.leaves(state)):
    np.testing.assert_allclose(g, w, rtol=1e-6)
  # Projector: 3 layers, BN + ReLU after the first two only, plain linear output.
  assert set(aux["model_state"]["batch_stats"]["head"]) == {"bn_0", "bn_1"}


def test_output_bias_cancels_and_gradients_reach_everything(setup):
  method, batch, params, aux = setup

  def loss(p):
    return method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0)[0]

  grad_fn = jax.jit(jax.value_and_grad(loss))
  value, grads = grad_fn(params)
  # The per-dimension standardisation (the paper's affine-free BN) removes the last bias.
  shifted = jax.tree.map(lambda x: x, params)
  shifted["head"]["dense_2"]["bias"] = params["head"]["dense_2"]["bias"] + 3.0
  np.testing.assert_allclose(float(grad_fn(shifted)[0]), float(value), rtol=1e-5)
  assert float(jnp.abs(grads["head"]["dense_2"]["bias"]).max()) < 1e-5
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  for part in ("encoder", "head"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[part])) > 0, part


def test_post_update_is_identity_and_encode_skips_the_projector(setup):
  method, batch, params, aux = setup
  state = TrainState(step=jnp.int32(1), params=params, opt_state=None, aux=aux, rng=None)
  assert method.post_update(state) is state
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)
  direct, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["view1"])
  np.testing.assert_allclose(feats, direct, rtol=1e-6)


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "barlow_twins")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert {"train/on_diagonal", "train/off_diagonal", "train/rankme"} <= set(logged)
  feats, _ = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and np.all(np.isfinite(feats))
