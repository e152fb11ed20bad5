"""MAE method: loss from the model outputs, masked-only loss, gradients, encode, one train run."""

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
