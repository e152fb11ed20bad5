"""I-JEPA (Assran et al. 2023): predict an EMA target encoder's patch representations of
several target blocks from one context block, in representation space (no pixels).

Batch (masks drawn in the data pipeline, jaxssl.data.block_masking): {'image': [B, H, W, C]
f32, 'context_indices': [B, K] int32, 'target_indices': [B, T, M] int32}. Sec. 3:
  * context encoder f_theta: the ViT on the context patches only (`keep_indices` token
    dropping after the position embedding, as MAE);
  * target encoder f_theta_bar: the same ViT on the whole image, an EMA of the context encoder
    (`aux['teacher']`), momentum linear from 0.996 to 1 over the run (sec. 4; the official
    configs set ipe_scale 1.0, so their ramp also ends at exactly 1);
  * targets: the target encoder's output tokens, layer-normalised over the feature axis without
    affine (the official `F.layer_norm(h, (h.size(-1),))`), at each target block's patches;
  * predictor g_phi (jaxssl.models.jepa_predictor): context tokens + mask tokens at the target
    positions -> predictions (its blocks use the encoder's GELU form); loss `losses.ijepa`:
    'smooth_l1' is the official code's `F.smooth_l1_loss` (beta 1, element mean), 'l2' the
    paper's eq. 1.
Evaluation encodes with the target encoder and averages its output tokens, as the paper's
linear probes (sec. 5, appendix C: "average pool the output of the target encoder").

Config section `config.ijepa`: EMA momentum (base_momentum, end_momentum), loss ('l2' or
'smooth_l1'), the mask settings (target_patches, context_patches, num_targets, target_scale, target_aspect,
context_scale) and the predictor (width, depth, num_heads, mlp_dim).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import augment
from jaxssl.data import block_masking
from jaxssl.methods import common
from jaxssl.methods import ema
from jaxssl.models.jepa_predictor import JEPAPredictor


class JEPA(nn.Module):
  """Context encoder + predictor; `target_tokens` / `encode` are the target encoder's paths
  (the same encoder module, applied to the teacher's parameters)."""

  encoder: models.ViT
  predictor: JEPAPredictor

  def __call__(self, images, context_indices, target_indices, *, train: bool = False):
    """(predictions [B, T, M, D], context tokens [B, K, D])."""
    _, aux = self.encoder(images, train=train, keep_indices=context_indices)
    pred = self.predictor(aux["tokens"], context_indices, target_indices, aux["patch_grid"])
    return pred, aux["tokens"]

  def target_tokens(self, images):
    """Final-normed output tokens [B, N, D] of the whole image."""
    return self.encoder(images, train=False)[1]["tokens"]

  def encode(self, images):
    """Average-pooled output tokens [B, D] (independent of the ViT's pool setting)."""
    return jnp.mean(self.target_tokens(images), axis=1)


def vit_encoder(
  config: ml_collections.ConfigDict, method_name: str, kernels: Kernels = REFERENCE
) -> models.ViT:
  """The ViT of `config.model`; other backbones fail with the fix in the message."""
  encoder = models.build_encoder(config.model, kernels)
  if not isinstance(encoder, models.ViT):
    raise ValueError(
      f"{method_name} needs a ViT encoder (it works on patch tokens), got "
      f"{type(encoder).__name__} from model.name={config.model.name!r}; pick a "
      f"ViT backbone, e.g. configs/{method_name}.py:test,vit_test."
    )
  return encoder


def layer_norm_features(x, eps: float = 1e-5):
  """Parameter-free LayerNorm over the last axis (torch's F.layer_norm default eps 1e-5)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def gather_patches(tokens, indices):
  """tokens [B, N, D] at indices int [B, ...] -> [B, ..., D]."""
  batch = tokens.shape[0]
  flat = indices.reshape(batch, -1, 1).astype(jnp.int32)
  out = jnp.take_along_axis(tokens, flat, axis=1)
  return out.reshape(*indices.shape, tokens.shape[-1])


def crop_flip_augment(config: ml_collections.ConfigDict, info) -> augment.SimCLRAugment:
  """A random resized crop (`config.augment.crop_scale`) + horizontal flip (`.flip_prob`) and
  nothing else: the single-view augmentation of I-JEPA (crop scale (0.3, 1)) and data2vec."""
  return augment.SimCLRAugment(
    mean=info.mean,
    std=info.std,
    output_size=config.data.image_size,
    crop_scale=tuple(config.augment.crop_scale),
    flip_prob=config.augment.flip_prob,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
  )


def ema_encoder_update(state, momentum):
  """Moves aux['teacher'] = {'encoder': ...} towards params['encoder'] by `momentum`."""
  teacher = ema.ema_update(state.aux["teacher"], {"encoder": state.params["encoder"]}, momentum)
  return state.replace(aux={**state.aux, "teacher": teacher})


class Method:
  """I-JEPA: init / loss_fn / post_update / encode over plain pytrees.

  params = {'encoder': context encoder, 'predictor': ...}; aux = {'model_state': {} (a ViT has
  no BatchNorm), 'teacher': {'encoder': target encoder}}.
  """

  batch_keys = ("image", "context_indices", "target_indices")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.section = config.ijepa
    encoder = vit_encoder(config, "ijepa", kernels)
    arch = encoder.arch()
    p = self.section.predictor
    self.model = JEPA(
      encoder=encoder,
      predictor=JEPAPredictor(
        width=p.width,
        depth=p.depth,
        num_heads=p.num_heads,
        mlp_dim=p.mlp_dim,
        out_width=arch["width"],
        gelu_approximate=encoder.gelu_approximate,
        dtype=models.compute_dtype(config.model),
        kernels=kernels,
      ),
    )
    patch_h, patch_w = arch["patch_size"]
    size = config.data.image_size
    if size % patch_h or size % patch_w:
      raise ValueError(
        f"data.image_size={size} is not divisible by the patch size "
        f"{(patch_h, patch_w)}; change one of them."
      )
    self.patch_size = patch_h
    self.masker = block_masking.MultiBlockMasker(
      grid=(size // patch_h, size // patch_w),
      target_patches=self.section.target_patches,
      context_patches=self.section.context_patches,
      num_targets=self.section.num_targets,
      target_scale=tuple(self.section.target_scale),
      target_aspect=tuple(self.section.target_aspect),
      context_scale=tuple(self.section.context_scale),
    )

  @functools.cached_property
  def schedule_steps(self) -> int:
    # Resolved on first use (tracing the step), so the eval job reads no dataset metadata.
    return ema.schedule_length(self.config)

  def momentum(self, step):
    """Target-encoder momentum after optimizer step `step` (0-based): linear base -> end."""
    return ema.linear_momentum(
      step, self.schedule_steps, self.section.base_momentum, self.section.end_momentum
    )

  def train_transform(self, info):
    """One view (random resized crop, the paper's only augmentation) and its masks."""
    return block_masking.MultiBlockView(
      crop_flip_augment(self.config, info),
      self.masker,
      patch_size=self.patch_size,
      image_size=self.config.data.image_size,
    )

  def _inputs(self, batch):
    return batch["image"], batch["context_indices"], batch["target_indices"]

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, *self._inputs(batch), train=False)
    # The target encoder starts as a copy of the context encoder.
    return params, {"model_state": model_state, "teacher": {"encoder": params["encoder"]}}

  def targets(self, teacher: Any, batch):
    """Layer-normed target-encoder tokens at the target blocks, [B, T, M, D], constant."""
    tokens = self.model.apply({"params": teacher}, batch["image"], method=JEPA.target_tokens)
    tokens = layer_norm_features(jax.lax.stop_gradient(tokens))
    return gather_patches(tokens, batch["target_indices"])

  def loss_fn(self, params, aux, batch, rng, step):
    (pred, context_tokens), model_state = common.apply_model(
      self.model,
      params,
      aux["model_state"],
      *self._inputs(batch),
      train=True,
      rngs={"dropout": rng},
    )
    target = self.targets(aux["teacher"], batch)
    loss, metrics = losses.ijepa(pred, target, loss=self.section.loss)
    metrics["teacher_momentum"] = self.momentum(step)
    metrics.update(common.collapse_metrics(jnp.mean(context_tokens, axis=1)))
    return loss, (metrics, {**aux, "model_state": model_state})

  def post_update(self, state):
    """EMA of the context encoder into the target encoder (state.step already advanced, so
    the update just applied is step - 1 and the first one uses base_momentum)."""
    return ema_encoder_update(state, self.momentum(state.step - 1))

  def encode(self, params, aux, images):
    """Target-encoder features [B, D]: the average of its output tokens (sec. 5)."""
    del params  # The paper evaluates the EMA target encoder.
    return self.model.apply({"params": aux["teacher"]}, images, method=JEPA.encode)
