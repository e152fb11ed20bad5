"""MAE method: loss from the model outputs, masked-only loss, gradients, encode, the [cls] token
of the official code (encoder, decoder, probe feature), one train run."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config_lib
from jaxssl import losses
from jaxssl import methods
from jaxssl import train as train_lib
from jaxssl.data import datasets
from jaxssl.data import masking
from jaxssl.eval import features as features_lib
from jaxssl.models import vit
from jaxssl.models.mae_decoder import MAEDecoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_PATCHES = 16  # 8x8 digits, vit_test patch 2
NUM_KEPT = 4  # int(16 * (1 - 0.75))


def _config(arg="test"):
  return config_lib.load_config_file(os.path.join(ROOT, f"configs/mae.py:{arg}"))


def _batch(n=4, seed=0):
  rng = np.random.default_rng(seed)
  keep, mask, ids_restore = map(
    np.stack, zip(*[masking.random_mask(rng, NUM_PATCHES, 0.75) for _ in range(n)])
  )
  return {
    "image": jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32),
    "keep_indices": jnp.asarray(keep),
    "mask": jnp.asarray(mask),
    "ids_restore": jnp.asarray(ids_restore),
  }


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = jax.jit(lambda rng: nn.unbox(method.init(rng, batch)))(jax.random.PRNGKey(0))
  return method, batch, params, aux


def _patchify64(images, p):
  """Independent NumPy patchify: patch (i, j) row-major, pixels (row, column, channel)."""
  images = np.asarray(images, np.float64)
  b, h, w, c = images.shape
  return np.stack(
    [
      images[:, i : i + p, j : j + p].reshape(b, p * p * c)
      for i in range(0, h, p)
      for j in range(0, w, p)
    ],
    axis=1,
  )


def test_registry_and_non_vit_backbones_fail_clearly():
  assert "mae" in methods.available()
  with pytest.raises(ValueError, match="MAE needs a ViT encoder"):
    methods.build(_config("test,resnet18_small"))


def test_loss_is_mae_of_decoder_on_kept_encoder_tokens(setup):
  method, batch, params, aux = setup
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  # Independent recomputation: encoder on the kept patches, decoder on its tokens.
  encoder = method.model.encoder
  _, enc_aux = encoder.apply(
    {"params": params["encoder"]}, batch["image"], keep_indices=batch["keep_indices"]
  )
  assert enc_aux["tokens"].shape == (4, NUM_KEPT, 32)
  decoder = MAEDecoder(
    decoder_width=16, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=32, patch_size=2, channels=1
  )
  pred = decoder.apply(
    {"params": params["decoder"]}, enc_aux["tokens"], batch["ids_restore"], (4, 4)
  )
  target = _patchify64(batch["image"], 2)
  ref, _ = losses.mae(pred, target, batch["mask"], norm_pix=True)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
  assert float(metrics["mask_ratio"]) == pytest.approx(0.75)
  assert {"mse_visible", "rankme", "embedding_std"} <= set(metrics)
  assert new_aux == aux  # a ViT has no BatchNorm statistics; nothing else is carried


def _loss_with_pred_offset(method, params, aux, batch, offset):
  """loss_fn with `offset` added to the decoder's prediction (intercepting MAEDecoder)."""

  def add_offset(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, MAEDecoder) and context.method_name == "__call__":
      return out + offset
    return out

  with nn.intercept_methods(add_offset):
    return method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)[0]


def test_loss_only_sees_the_prediction_of_removed_patches(setup):
  method, batch, params, aux = setup
  offset = jnp.zeros((4, NUM_PATCHES, 4))
  grad = jax.grad(lambda o: _loss_with_pred_offset(method, params, aux, batch, o))(offset)
  per_patch = np.abs(np.asarray(grad)).sum(-1)
  mask = np.asarray(batch["mask"])
  np.testing.assert_array_equal(per_patch[mask == 0], 0.0)  # visible patches: no loss
  assert np.all(per_patch[mask == 1] > 0)
  # A large change of the visible patches' prediction leaves the loss exactly as it was.
  visible_noise = 10.0 * (1 - mask)[..., None] * np.ones((1, 1, 4))
  np.testing.assert_allclose(
    float(_loss_with_pred_offset(method, params, aux, batch, visible_noise)),
    float(_loss_with_pred_offset(method, params, aux, batch, offset)),
    rtol=1e-6,
  )


def test_gradient_reaches_every_encoder_and_decoder_parameter(setup):
  method, batch, params, aux = setup
  grads = jax.jit(jax.grad(lambda p: method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0)[0]))(
    params
  )
  assert set(grads) == {"encoder", "decoder"}
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  for path, g in flat:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
    assert float(jnp.abs(g).sum()) > 0, jax.tree_util.keystr(path)
  assert float(jnp.abs(grads["decoder"]["mask_token"]).sum()) > 0


def test_encode_uses_every_patch_of_the_unmasked_image(setup):
  method, batch, params, aux = setup
  feats = method.encode(params, aux, batch["image"])
  assert feats.shape == (4, 32)  # vit_test width
  encoder = method.model.encoder
  all_patches = jnp.tile(jnp.arange(NUM_PATCHES)[None], (4, 1))
  full, _ = encoder.apply({"params": params["encoder"]}, batch["image"], keep_indices=all_patches)
  np.testing.assert_allclose(feats, full, rtol=1e-5, atol=1e-6)
  kept, _ = encoder.apply(
    {"params": params["encoder"]}, batch["image"], keep_indices=batch["keep_indices"]
  )
  assert not np.allclose(feats, kept, atol=1e-3)  # masking would change the features


@pytest.fixture(scope="module")
def setup_cls():
  config = _config()
  config.model.pool = "cls"
  method = methods.build(config)
  batch = _batch()
  params, aux = jax.jit(lambda rng: nn.unbox(method.init(rng, batch)))(jax.random.PRNGKey(0))
  return method, batch, params, aux


def _layer_norm64(x, p, eps=1e-6):
  x = np.asarray(x, np.float64)
  y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
  return y * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def _dense64(x, p):
  return np.asarray(x, np.float64) @ np.asarray(p["kernel"], np.float64) + np.asarray(
    p["bias"], np.float64
  )


def test_cls_token_init_is_normal_002_and_other_draws_are_unchanged(setup, setup_cls):
  _, _, gap_params, _ = setup
  _, _, params, _ = setup_cls
  cls = np.asarray(params["encoder"]["cls"])
  assert cls.shape == (1, 1, 32)
  assert 0.012 < cls.std() < 0.03 and np.abs(cls).max() < 0.1  # N(0, 0.02^2), not zeros
  # Only the [cls] is new: every parameter a 'gap' encoder has is drawn as before.
  for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(gap_params)[0], jax.tree.leaves(params_without_cls(params))
  ):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def params_without_cls(params):
  return {**params, "encoder": {k: v for k, v in params["encoder"].items() if k != "cls"}}


def test_cls_is_carried_through_the_decoder_as_the_official_forward_decoder(setup_cls):
  """models_mae.py: the final-normed [cls] goes through decoder_embed, stays first with a zero
  position embedding, runs through the blocks, and its row is dropped after decoder_pred."""
  method, batch, params, aux = setup_cls
  loss, _ = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  encoder = method.model.encoder
  _, enc_aux = encoder.apply(
    {"params": params["encoder"]}, batch["image"], keep_indices=batch["keep_indices"]
  )
  assert enc_aux["tokens"].shape == (4, NUM_KEPT, 32)
  # The encoder's output tokens with the [cls] first, final-normed (the last block's output).
  last = np.asarray(enc_aux["blocks"][-1], np.float64)
  assert last.shape == (4, 1 + NUM_KEPT, 32)
  encoded = _layer_norm64(last, params["encoder"]["encoder_norm"])
  dec = params["decoder"]
  x = _dense64(encoded, dec["decoder_embed"])  # [B, 1 + K, 16]
  cls, kept = x[:, :1], x[:, 1:]
  mask_tokens = np.broadcast_to(np.asarray(dec["mask_token"], np.float64), (4, 12, 16))
  shuffled = np.concatenate([kept, mask_tokens], 1)
  ids = np.asarray(batch["ids_restore"])
  patches = np.stack([shuffled[b][ids[b]] for b in range(4)])
  patches = patches + np.asarray(vit.posemb_sincos_2d(4, 4, 16), np.float64)
  x = np.concatenate([cls, patches], 1)  # the [cls] slot's position embedding is zero
  block = vit.EncoderBlock(mlp_dim=32, num_heads=2)
  x = np.asarray(block.apply({"params": dec["decoder_block_0"]}, jnp.asarray(x, jnp.float32)))
  pred = _dense64(_layer_norm64(x, dec["decoder_norm"]), dec["decoder_pred"])[:, 1:]
  target = _patchify64(batch["image"], 2)
  target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
    target.var(-1, ddof=1, keepdims=True) + 1e-6
  )
  mask = np.asarray(batch["mask"], np.float64)
  want = np.sum(np.mean((pred - target) ** 2, -1) * mask) / mask.sum()
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_cls_encoding_changes_the_reconstruction_and_gets_gradient(setup_cls):
  method, batch, params, aux = setup_cls

  def pred_with_cls(cls_value):
    p = {**params, "encoder": {**params["encoder"], "cls": cls_value}}
    return method.model.apply(
      {"params": p}, batch["image"], batch["keep_indices"], batch["ids_restore"]
    )[0]

  moved = pred_with_cls(params["encoder"]["cls"] + 1.0)
  assert not np.allclose(moved, pred_with_cls(params["encoder"]["cls"]), atol=1e-4)
  grads = jax.jit(jax.grad(lambda p: method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0)[0]))(
    params
  )
  assert float(jnp.abs(grads["encoder"]["cls"]).sum()) > 0


def test_cls_encode_is_the_final_normed_cls_of_the_full_image(setup_cls):
  """The official linear probe's feature: norm(x)[:, 0] (models_vit.py, global_pool=False)."""
  method, batch, params, aux = setup_cls
  feats = method.encode(params, aux, batch["image"])
  assert feats.shape == (4, 32)
  _, enc_aux = method.model.encoder.apply({"params": params["encoder"]}, batch["image"])
  assert enc_aux["blocks"][-1].shape == (4, 1 + NUM_PATCHES, 32)  # every patch is seen
  want = _layer_norm64(enc_aux["blocks"][-1][:, 0], params["encoder"]["encoder_norm"])
  np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(feats, enc_aux["tokens"].mean(1), atol=1e-3)


def test_decoder_blocks_follow_the_encoders_gelu(setup):
  method, batch, params, aux = setup
  config = _config()
  with config.unlocked():
    config.model.gelu_approximate = False  # not in the test backbone's table entry
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, vit.MlpBlock):
      seen.append((context.module.name, context.module.gelu_approximate))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    methods.build(config).model.apply(
      {"params": params}, batch["image"], batch["keep_indices"], batch["ids_restore"]
    )
  assert len(seen) == 3 and not any(approximate for _, approximate in seen)  # 2 + 1 blocks


def test_imagenet_preset_has_the_official_cls_and_exact_gelu():
  config = _config("imagenet")
  assert (config.model.pool, config.model.gelu_approximate) == ("cls", False)
  model = methods.build(config).model
  assert model.encoder.pool == "cls" and model.encoder.gelu_approximate is False
  assert _config("fashion_mnist").model.pool == "gap"  # the CPU benchmark keeps 'gap'


def test_train_transform_and_one_training_run(tmp_path, data_dir):
  config = _config()
  method = methods.build(config)
  info = datasets.get_info("digits", data_dir)
  example = datasets.get_source("digits", "train", data_dir)[0]
  out = method.train_transform(info).random_map(example, np.random.default_rng(0))
  assert out["image"].shape == (8, 8, 1) and out["image"].dtype == np.float32
  assert out["keep_indices"].shape == (NUM_KEPT,)
  assert out["mask"].shape == out["ids_restore"].shape == (NUM_PATCHES,)

  config.data.data_dir = data_dir
  config.mesh.fsdp = 2  # parameters sharded by their logical names: decoder annotations count
  workdir = str(tmp_path / "mae")
  logged = train_lib.train(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["step"] == 6
  assert all(np.isfinite(r["train/loss"]) for r in rows)
  assert logged["train/mask_ratio"] == pytest.approx(0.75)
  # The eval job rebuilds the method from the run's files and encodes full images.
  encoder = features_lib.Encoder(workdir)
  feats, labels = encoder.features(
    encoder.random_init(), datasets.get_source("digits", "test[:40]", data_dir), info, batch_size=16
  )
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
