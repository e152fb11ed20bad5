"""MAE (He et al. 2022): encode the visible 25% of patches, reconstruct the pixels of the rest.

Batch (made by `train_transform`, masks drawn in the data pipeline; jaxssl.data.masking):
{'image': [B, H, W, C] f32, 'keep_indices': [B, K] int32, 'mask': [B, N] f32 (1 = removed),
'ids_restore': [B, N] int32}. The ViT encoder drops the removed patches after its position
embedding (sec. 3, "MAE encoder"); `MAEDecoder` fills them with mask tokens and predicts every
patch's pixels; the loss is the MSE on removed patches against per-patch normalised pixels
(`losses.mae`, "with norm pix", the paper's default). With a [cls] token (ViT pool='cls', the
official `models_mae.py`), the [cls] is prepended after masking with no position embedding,
initialised N(0, 0.02^2), and its final-normed encoding is carried through the decoder (dropped
from the reconstruction); the decoder's blocks use the encoder's GELU form. Config section
`config.mae`: mask_ratio, norm_pix and the decoder's width / depth / heads / mlp_dim.
Evaluation uses the encoder on the full, unmasked image, pooled as the ViT pools: the
final-normed [cls] with pool='cls', as the official linear probe (`main_linprobe.py`,
`global_pool=False`), or the mean of the final-normed tokens with 'gap'.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import augment
from jaxssl.data import masking
from jaxssl.methods import common
from jaxssl.models.mae_decoder import MAEDecoder


class MaskedAutoencoder(nn.Module):
  """ViT encoder on the kept patches + MAE decoder. Returns (pred [B, N, P], encoder aux)."""

  encoder: models.ViT
  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  decoder_mlp_dim: int
  patch_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, keep_indices, ids_restore, *, train: bool = False):
    out, enc_aux = self.encoder(images, train=train, keep_indices=keep_indices)
    # pool='cls': `out` is the final-normed [cls] (the official forward_encoder's x[:, :1]).
    cls_token = out[:, None] if self.encoder.pool == "cls" else None
    decoder = MAEDecoder(
      decoder_width=self.decoder_width,
      decoder_depth=self.decoder_depth,
      decoder_heads=self.decoder_heads,
      decoder_mlp_dim=self.decoder_mlp_dim,
      patch_size=self.patch_size,
      channels=images.shape[-1],
      gelu_approximate=self.encoder.gelu_approximate,
      dtype=self.dtype,
      kernels=self.encoder.kernels,
      name="decoder",
    )
    # The encoder's final-normed tokens are what MAE's decoder_embed reads.
    pred = decoder(enc_aux["tokens"], ids_restore, enc_aux["patch_grid"], cls_token=cls_token)
    return pred, enc_aux

  def encode(self, images):
    """Pooled encoder features of the whole, unmasked image."""
    return self.encoder(images, train=False)[0]


def build_model(
  config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE
) -> MaskedAutoencoder:
  """The MAE model of `config`; the encoder must be a ViT with square patches."""
  encoder = models.build_encoder(config.model, kernels)
  if not isinstance(encoder, models.ViT):
    raise ValueError(
      f"MAE needs a ViT encoder (it drops patch tokens), got "
      f"{type(encoder).__name__} from model.name={config.model.name!r}; pick a "
      "ViT backbone, e.g. configs/mae.py:test,vit_test."
    )
  patch_h, patch_w = encoder.arch()["patch_size"]
  if patch_h != patch_w:
    raise ValueError(
      f"MAE reconstructs square patches; the ViT has patch size "
      f"{(patch_h, patch_w)}. Use one patch side."
    )
  mae = config.mae
  return MaskedAutoencoder(
    encoder=encoder,
    decoder_width=mae.decoder_width,
    decoder_depth=mae.decoder_depth,
    decoder_heads=mae.decoder_heads,
    decoder_mlp_dim=mae.decoder_mlp_dim,
    patch_size=patch_h,
    dtype=jnp.dtype(config.model.get("dtype", "float32")),
  )


def _normal_cls(params, rng):
  """params with the encoder's [cls] redrawn from N(0, 0.02^2), keeping its partitioning box."""
  box = params["encoder"]["cls"]
  value = nn.unbox(box)
  value = 0.02 * jax.random.normal(rng, value.shape, value.dtype)
  if isinstance(box, nn.meta.AxisMetadata):
    value = box.replace_boxed(value)
  return {**params, "encoder": {**params["encoder"], "cls": value}}


class Method:
  """MAE: init / loss_fn / post_update / encode over plain pytrees."""

  batch_keys = ("image", "keep_indices", "mask", "ids_restore")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.model = build_model(config, kernels)
    self.mask_ratio = config.mae.mask_ratio
    self.norm_pix = config.mae.norm_pix

  def train_transform(self, info):
    """One view (random resized crop + flip, MAE sec. A.1) and its mask, seeded per element."""
    aug = augment.SimCLRAugment(
      mean=info.mean,
      std=info.std,
      output_size=self.config.data.image_size,
      crop_scale=tuple(self.config.augment.crop_scale),
      flip_prob=self.config.augment.flip_prob,
      jitter_prob=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return masking.MaskedView(
      aug,
      patch_size=self.model.patch_size,
      mask_ratio=self.mask_ratio,
      image_size=self.config.data.image_size,
    )

  def _inputs(self, batch):
    return batch["image"], batch["keep_indices"], batch["ids_restore"]

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, *self._inputs(batch), train=False)
    if self.model.encoder.pool == "cls":
      # The ViT creates its [cls] as zeros; MAE draws it from N(0, 0.02^2) (models_mae.py
      # `initialize_weights`). A fold keeps every other parameter's draw as with pool='gap'.
      params = _normal_cls(params, jax.random.fold_in(rng, 1))
    return params, {"model_state": model_state}

  def loss_fn(self, params, aux, batch, rng, step):
    del step  # No schedule beyond the learning rate.
    # The masks come with the batch; the rng only feeds dropout, if the ViT has any.
    (pred, enc_aux), model_state = common.apply_model(
      self.model,
      params,
      aux["model_state"],
      *self._inputs(batch),
      train=True,
      rngs={"dropout": rng},
    )
    target = losses.patchify(batch["image"], self.model.patch_size)
    loss, metrics = losses.mae(pred, target, batch["mask"], norm_pix=self.norm_pix)
    # Collapse monitors on the mean of the kept tokens (what a 'gap' encoder pools).
    metrics.update(common.collapse_metrics(jnp.mean(enc_aux["tokens"], axis=1)))
    return loss, (metrics, {**aux, "model_state": model_state})

  def post_update(self, state):
    return state

  def encode(self, params, aux, images):
    """Frozen encoder features [B, width] of full images (no masking) for the eval job."""
    out, _ = common.apply_model(
      self.model, params, aux["model_state"], images, train=False, method=MaskedAutoencoder.encode
    )
    return out
