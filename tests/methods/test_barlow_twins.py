"""Barlow Twins method: loss from per-view projector outputs (float64 eq. 1), invariance of
the loss to the projector's output bias, gradients, the reference run's gradient scale, encode,
one train run with the eval handoff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl import optim
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
  assert method.lambda_ == 5e-3 and method.loss_scale == 1.0
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


def test_loss_scale_scales_the_gradient_and_logs_the_unscaled_loss(setup):
  method, batch, params, aux = setup
  config = _config()
  config.barlow_twins.loss_scale = 1.0 / 16
  scaled = methods.build(config)

  def value_and_grad(m):
    fn = jax.value_and_grad(
      lambda p: m.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0), has_aux=True
    )
    return jax.jit(fn)(params)

  (loss, (metrics, _)), grads = value_and_grad(method)
  (loss16, (metrics16, _)), grads16 = value_and_grad(scaled)
  np.testing.assert_allclose(float(loss16), float(loss) / 16, rtol=1e-6)
  # 'loss' replaces the step's 'train/loss': the unscaled Barlow Twins loss in both runs.
  np.testing.assert_allclose(float(metrics16["loss"]), float(loss), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
  for g16, g in zip(jax.tree.leaves(grads16), jax.tree.leaves(grads)):
    np.testing.assert_allclose(g16, np.asarray(g) / 16, rtol=1e-5, atol=1e-12)


def test_imagenet_preset_is_the_reference_run():
  c = _config("imagenet")
  # main.py defaults of the README run: --lambd 0.0051 --weight-decay 1e-6, cosine to 0.001 x
  # base, 16 GPUs whose DDP average gave 1/16 of the true gradient (audit section 3.1).
  assert c.barlow_twins.lambda_ == 0.0051 and c.barlow_twins.loss_scale == 1.0 / 16
  assert (c.optim.name, c.optim.weight_decay, c.optim.end_lr_factor) == ("lars", 1e-6, 0.001)
  assert c.optim.norm_bias_lr_factor == pytest.approx(0.0048 / 0.2)


def test_loss_scale_under_lars_is_16x_weight_decay_and_a_16x_smaller_bias_lr():
  # What the reference run's 1/16 gradient means for its hyperparameters: under LARS a scale s
  # on the gradient equals wd / s on the weights (the trust ratio removes the scale) and lr x s
  # on the rank-1 parameters (no decay, no adaptation).
  c = _config("imagenet")
  c.optim.warmup_steps = 0  # the first update at the peak LR, not at warmup's 0
  s = c.barlow_twins.loss_scale
  wd = 0.02  # large enough against these gradients that a wrong equivalence shows
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.normal(size=(6, 4))), "bias": jnp.asarray(rng.normal(size=4))}
  grads = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}

  def first_update(weight_decay, g):
    c.optim.weight_decay = weight_decay
    _, tx = optim.build(c, total_steps=100_000)
    return tx.update(g, tx.init(params), params)[0]

  scaled = first_update(wd, jax.tree.map(lambda x: s * x, grads))
  assert all(float(jnp.abs(u).min()) > 0 for u in scaled.values())
  np.testing.assert_allclose(scaled["kernel"], first_update(wd / s, grads)["kernel"], rtol=1e-5)
  unscaled = first_update(wd, grads)
  assert (
    np.abs(np.asarray(scaled["kernel"] - unscaled["kernel"])).max()
    > 1e-2 * np.abs(np.asarray(unscaled["kernel"])).max()
  )
  np.testing.assert_allclose(scaled["bias"], s * np.asarray(unscaled["bias"]), rtol=1e-6)


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
