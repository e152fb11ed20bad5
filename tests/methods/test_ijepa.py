"""I-JEPA method: loss from an independent recomputation, zero gradient into the target
encoder, linear EMA schedule, encode with the target encoder, one train run."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.methods import ijepa
from jaxssl.models import vit
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("ijepa", arg)


def _batch(method, n=4, seed=0):
  rng = np.random.default_rng(seed)
  ctx, tgt = map(np.stack, zip(*[method.masker(rng) for _ in range(n)]))
  return {
    "image": jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32),
    "context_indices": jnp.asarray(ctx),
    "target_indices": jnp.asarray(tgt),
  }


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch(method)
  params, aux = harness.init_method(method, batch)
  # A target encoder that differs from the context encoder, as after some training.
  aux = {**aux, "teacher": jax.tree.map(lambda x: 0.9 * x + 0.01, aux["teacher"])}
  return method, batch, params, aux


def _loss64(method, params, teacher, batch, loss="smooth_l1"):
  """From the pieces: context encoder on the context patches, predictor, target encoder on the
  whole image, param-free LayerNorm in float64; then the official src/train.py
  F.smooth_l1_loss (beta 1, the mean of every element) or eq. 1 (squared L2 per patch,
  averaged over patches)."""
  encoder, predictor = method.model.encoder, method.model.predictor
  _, ctx_aux = encoder.apply(
    {"params": params["encoder"]}, batch["image"], keep_indices=batch["context_indices"]
  )
  pred = predictor.apply(
    {"params": params["predictor"]},
    ctx_aux["tokens"],
    batch["context_indices"],
    batch["target_indices"],
    (4, 4),
  )
  _, tgt_aux = encoder.apply({"params": teacher["encoder"]}, batch["image"])
  h = np.asarray(tgt_aux["tokens"], np.float64)
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
  idx = np.asarray(batch["target_indices"])
  target = np.stack([h[b][idx[b]] for b in range(len(h))])  # [B, T, M, D]
  d = np.abs(np.asarray(pred, np.float64) - target)
  if loss == "l2":
    return np.mean(np.sum(d**2, -1))
  return np.mean(np.where(d < 1.0, 0.5 * d**2, d - 0.5))


def test_registry_structure_and_non_vit_fails(setup):
  method, _, params, aux = setup
  assert methods.get("ijepa") is ijepa.Method
  assert set(params) == {"encoder", "predictor"}
  assert set(aux["teacher"]) == {"encoder"}  # the predictor has no EMA copy
  with pytest.raises(ValueError, match="ijepa needs a ViT encoder"):
    methods.build(_config("test,resnet18_small"))


def test_loss_equals_an_independent_recomputation(setup):
  method, batch, params, aux = setup
  assert method.section.loss == "smooth_l1"  # the official loss, in every preset
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  np.testing.assert_allclose(float(loss), _loss64(method, params, aux["teacher"], batch), rtol=1e-5)
  config = _config()
  config.ijepa.loss = "l2"
  l2, _ = methods.build(config).loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  want = _loss64(method, params, aux["teacher"], batch, loss="l2")
  np.testing.assert_allclose(float(l2), want, rtol=1e-5)
  assert {"pred_std", "target_std", "teacher_momentum", "rankme", "embedding_std"} <= set(metrics)
  assert float(metrics["teacher_momentum"]) == pytest.approx(0.996)
  assert new_aux["teacher"] is aux["teacher"]  # only post_update moves the target encoder


def test_gradient_into_the_target_encoder_is_exactly_zero(setup):
  method, batch, params, aux = setup
  rng = jax.random.PRNGKey(1)
  grads = harness.encoder_teacher_gradients(method, params, aux, batch, rng)
  for part in ("encoder", "predictor"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[part])) > 0, part
  # Only the context patches reach the context encoder: pixels of other patches get none.
  img_grad = jax.jit(
    jax.grad(lambda im: method.loss_fn(params, aux, {**batch, "image": im}, rng, 0)[0])
  )(batch["image"])
  # (The image also feeds the target encoder, but under stop_gradient.)
  per_patch = np.abs(np.asarray(img_grad)).reshape(4, 4, 2, 4, 2).sum((2, 4)).reshape(4, 16)
  for b in range(4):
    ctx = set(np.asarray(batch["context_indices"][b]).tolist())
    for n in range(16):
      assert (per_patch[b, n] > 0) == (n in ctx), (b, n)


@pytest.mark.parametrize("step", [0, 3, 6])
def test_post_update_moves_the_target_by_the_linear_schedule(setup, step):
  method, _, params, aux = setup
  state = TrainState(step=jnp.int32(step + 1), params=params, opt_state=None, aux=aux, rng=None)
  new = method.post_update(state)
  m = 0.996 + (1.0 - 0.996) * step / 6  # K = 6 steps in the test preset
  assert float(method.momentum(step)) == pytest.approx(m, abs=1e-7)
  for got, t, s in zip(
    jax.tree.leaves(new.aux["teacher"]),
    jax.tree.leaves(aux["teacher"]),
    jax.tree.leaves({"encoder": params["encoder"]}),
  ):
    want = np.asarray(t, np.float64) * m + np.asarray(s, np.float64) * (1 - m)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert new.params is params


def test_encode_averages_the_target_encoders_tokens(setup):
  method, batch, params, aux = setup
  feats = method.encode(params, aux, batch["image"])
  assert feats.shape == (4, 32)  # vit_test width
  _, enc_aux = method.model.encoder.apply({"params": aux["teacher"]["encoder"]}, batch["image"])
  np.testing.assert_allclose(feats, enc_aux["tokens"].mean(1), rtol=1e-5, atol=1e-6)
  # The context encoder's weights play no part.
  zeros = jax.tree.map(jnp.zeros_like, params)
  np.testing.assert_array_equal(feats, method.encode(zeros, aux, batch["image"]))
  assert not np.allclose(
    feats,
    method.encode(params, {**aux, "teacher": {"encoder": params["encoder"]}}, batch["image"]),
    atol=1e-4,
  )


def test_predictor_blocks_follow_the_encoders_gelu(setup):
  method, batch, params, aux = setup
  config = _config()
  with config.unlocked():
    config.model.gelu_approximate = False  # not in the test backbone's table entry
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, vit.MlpBlock):
      seen.append(context.module.gelu_approximate)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    methods.build(config).loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  # Context encoder (2 blocks), target encoder (2) and predictor (1): all exact.
  assert len(seen) == 5 and not any(seen)


@pytest.mark.parametrize("backbone,heads", [("", 16), ("vit_b16", 12)])
def test_imagenet_preset_is_the_official_recipe(backbone, heads):
  """ijepa configs/in1k_vith14_ep300.yaml with src/helper.py and src/train.py."""
  c = _config(f"imagenet,{backbone}" if backbone else "imagenet")
  assert c.ijepa.loss == "smooth_l1"
  assert c.ijepa.predictor.num_heads == heads == c.model.get("num_heads", 12)
  assert (c.optim.b1, c.optim.b2, c.optim.weight_decay, c.optim.weight_decay_end) == (
    0.9,
    0.999,
    0.04,
    0.4,
  )
  assert c.optim.base_lr * c.batch_size / 256 == pytest.approx(1e-3)
  assert c.optim.base_lr * c.batch_size / 256 * c.optim.end_lr_factor == pytest.approx(1e-6)
  assert c.optim.warmup_steps == 25_023  # 40 epochs at batch 2048
  assert c.model.gelu_approximate is False
  method = methods.build(c)
  assert method.model.predictor.gelu_approximate is False
  assert method.model.predictor.num_heads == heads


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "ijepa")
  logged, rows = harness.train_test_preset(_config(), workdir, data_dir)
  # Step 6 is update k = 5 of K = 6.
  assert logged["train/teacher_momentum"] == pytest.approx(0.996 + 0.004 * 5 / 6, abs=1e-6)
  assert all(r["train/loss"] > 0 for r in rows)
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
