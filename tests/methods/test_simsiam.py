"""SimSiam method: loss from the model outputs, stop-gradient on the projections, no teacher,
encode, one train run with the eval handoff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.methods import byol
from jaxssl.methods import simsiam
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("simsiam", arg)


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = harness.random_views()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def _neg_cos64(p, z):
  p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
  return -np.sum(p * z, -1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)


def test_registry_and_architecture(setup):
  method, _, params, aux = setup
  assert methods.get("simsiam") is simsiam.Method
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(aux) == {"model_state"}  # no teacher
  # Projector: 3 layers, BN on each, the output BN without affine (sec. 3).
  assert set(params["projector"]) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2"}
  assert set(aux["model_state"]["batch_stats"]["projector"]) == {"bn_0", "bn_1", "bn_2"}
  assert params["predictor"]["dense_0"]["kernel"].shape == (32, 8)  # bottleneck 32 -> 8


def test_loss_is_symmetric_negative_cosine_of_predictions_and_projections(setup):
  method, batch, params, aux = setup
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)

  def forward(state, images):
    return method.model.apply(
      {"params": params, **state}, images, train=True, mutable=["batch_stats"]
    )

  (z1, p1), state = forward(aux["model_state"], batch["view1"])
  (z2, p2), state = forward(state, batch["view2"])
  want = np.mean(_neg_cos64(p1, z2) / 2 + _neg_cos64(p2, z1) / 2)  # eq. 2
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert {"cosine", "embedding_std", "rankme"} <= set(metrics)
  for g, w in zip(jax.tree.leaves(new_aux["model_state"]), jax.tree.leaves(state)):
    np.testing.assert_allclose(g, w, rtol=1e-6)


def test_stop_gradient_equals_loss_with_constant_targets(setup):
  """The gradient equals that of the loss where z is replaced by a precomputed constant."""
  method, batch, params, aux = setup
  rng = jax.random.PRNGKey(1)
  grads = jax.jit(jax.grad(lambda p: method.loss_fn(p, aux, batch, rng, 0)[0]))(params)

  def forward(p, state, images):
    return method.model.apply({"params": p, **state}, images, train=True, mutable=["batch_stats"])[
      0
    ]

  # Targets from a separate, non-differentiated forward (same BN batch statistics).
  z1c, _ = forward(params, aux["model_state"], batch["view1"])
  z2c, _ = forward(params, aux["model_state"], batch["view2"])

  def constant_target_loss(p):
    _, p1 = forward(p, aux["model_state"], batch["view1"])
    _, p2 = forward(p, aux["model_state"], batch["view2"])
    cos = lambda a, b: (
      jnp.sum(a * b, -1) / jnp.linalg.norm(a, axis=-1) / jnp.linalg.norm(b, axis=-1)
    )
    return jnp.mean(-cos(p1, z2c) / 2 - cos(p2, z1c) / 2)

  want = jax.jit(jax.grad(constant_target_loss))(params)
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
  for part in ("encoder", "projector", "predictor"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[part])) > 0, part


def test_no_post_update_and_encode_uses_the_encoder(setup):
  method, batch, params, aux = setup
  state = TrainState(step=jnp.int32(1), params=params, opt_state=None, aux=aux, rng=None)
  assert method.post_update(state) is state
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)  # vit_test width
  direct, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["view1"])
  np.testing.assert_allclose(feats, direct, rtol=1e-6)
  assert isinstance(method.model, byol.OnlineNetwork)  # BYOL's network, reused


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "simsiam")
  logged, rows = harness.train_test_preset(_config(), workdir, data_dir)
  assert all(-1.0 <= r["train/loss"] <= 1.0 for r in rows)
  assert logged["train/cosine"] == pytest.approx(-logged["train/loss"], abs=1e-6)
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
