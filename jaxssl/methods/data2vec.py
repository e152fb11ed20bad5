"""data2vec for images (Baevski et al. 2022): a student ViT sees the image with masked patches
replaced by a learned [mask] token and regresses, at the masked positions, the average of the
top-K instance-normalised block outputs of an EMA teacher that sees the whole image.

Batch (mask drawn in the data pipeline): {'image': [B, H, W, C] f32, 'mask': [B, N] f32,
1 = masked}. The masks here are uniformly random at ratio 0.6 (`data.masking.MaskedView`, MAE's
sampler), not the BEiT block-wise masks of the paper (sec. 4.1): on the small patch grids of the
CPU presets (4x4) blocks degenerate, and the paper masks the same 60% of patches.
  * student: the ViT with `token_mask` (the masked patches' embeddings become the [mask]
    token before the position embedding; every token stays in the sequence, sec. 3.2), then a
    linear regression head on its final-normed tokens (sec. 3.3, "Objective");
  * teacher: an EMA of the student encoder (`aux['teacher']`), momentum annealed linearly from
    base to end over `anneal_steps` updates, then constant (sec. 3.3);
  * targets: the teacher's top-K block outputs on the unmasked image, each instance-normalised
    per example over the tokens, averaged (`losses.data2vec`, eq. 1-2), masked positions only.
    The ViT exposes each block's output after its residual; the paper takes the FFN output
    before the last residual (its ablation, table 4, finds both work).
Evaluation encodes with the teacher (issue 4: the EMA teacher for data2vec), pooled as the
backbone pools ('gap': the mean of the final-normed tokens).

Config section `config.data2vec`: mask_ratio, top_k, loss_beta (0 = L2, > 0 smooth L1),
base_momentum, end_momentum, anneal_steps (None = the whole run).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import masking
from jaxssl.methods import common
from jaxssl.methods import ema
from jaxssl.methods import ijepa


class MaskedRegressor(nn.Module):
  """Student: ViT with [mask] tokens + linear regression head. The teacher paths
  (`block_outputs`, `encode`) run the same encoder on the teacher's parameters."""

  encoder: models.ViT

  @nn.compact
  def __call__(self, images, token_mask, *, train: bool = False):
    """(predictions [B, N, D], encoder aux)."""
    _, aux = self.encoder(images, train=train, token_mask=token_mask)
    width = aux["tokens"].shape[-1]
    head = self.encoder.kernels.dense(
      width,
      dtype=self.encoder.dtype,
      param_dtype=jnp.float32,
      name="head",
      kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", None)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
    )
    return head(aux["tokens"]).astype(jnp.float32), aux

  def block_outputs(self, images):
    """Every block's output at the patch tokens, [L, B, N, D] (no [cls])."""
    _, aux = self.encoder(images, train=False)
    num_patches = aux["num_patches"]
    return jnp.stack([b[:, -num_patches:] for b in aux["blocks"]]).astype(jnp.float32)

  def encode(self, images):
    return self.encoder(images, train=False)[0]


class Method:
  """data2vec: init / loss_fn / post_update / encode over plain pytrees.

  params = {'encoder': student ViT (with mask_token), 'head': regression head};
  aux = {'model_state': {}, 'teacher': {'encoder': EMA teacher}}.
  """

  batch_keys = ("image", "mask")

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.section = config.data2vec
    encoder = ijepa.vit_encoder(config, "data2vec", kernels).clone(mask_token=True)
    depth = encoder.arch()["depth"]
    if not 1 <= self.section.top_k <= depth:
      raise ValueError(
        f"data2vec.top_k={self.section.top_k} must be in [1, {depth}] (the "
        "ViT's depth: the targets average its top-K blocks)."
      )
    self.model = MaskedRegressor(encoder=encoder)
    self.patch_size = encoder.arch()["patch_size"][0]

  @functools.cached_property
  def anneal_steps(self) -> int:
    # Resolved on first use (tracing the step), so the eval job reads no dataset metadata.
    steps = self.section.anneal_steps
    return ema.schedule_length(self.config) if steps is None else steps

  def momentum(self, step):
    """Teacher momentum after optimizer step `step` (0-based): base -> end, then constant."""
    return ema.annealed_momentum(
      step, self.anneal_steps, self.section.base_momentum, self.section.end_momentum
    )

  def train_transform(self, info):
    """One view (random resized crop + flip, as BEiT / data2vec) and its random mask."""
    return masking.MaskedView(
      ijepa.crop_flip_augment(self.config, info),
      patch_size=self.patch_size,
      mask_ratio=self.section.mask_ratio,
      image_size=self.config.data.image_size,
    )

  def init(self, rng, batch):
    params, model_state = common.init_variables(
      self.model, rng, batch["image"], batch["mask"], train=False
    )
    return params, {"model_state": model_state, "teacher": {"encoder": params["encoder"]}}

  def loss_fn(self, params, aux, batch, rng, step):
    (pred, enc_aux), model_state = common.apply_model(
      self.model,
      params,
      aux["model_state"],
      batch["image"],
      batch["mask"],
      train=True,
      rngs={"dropout": rng},
    )
    # The teacher's parameters come from aux (no gradient by construction); the loss also
    # stops the gradient of its targets.
    layers = self.model.apply(
      {"params": aux["teacher"]}, batch["image"], method=MaskedRegressor.block_outputs
    )
    loss, metrics = losses.data2vec(
      pred,
      jax.lax.stop_gradient(layers),
      batch["mask"],
      top_k=self.section.top_k,
      loss_beta=self.section.loss_beta,
    )
    metrics["teacher_momentum"] = self.momentum(step)
    metrics.update(common.collapse_metrics(jnp.mean(enc_aux["tokens"], axis=1)))
    return loss, (metrics, {**aux, "model_state": model_state})

  def post_update(self, state):
    """EMA of the student encoder into the teacher (the update just applied is step - 1)."""
    return ijepa.ema_encoder_update(state, self.momentum(state.step - 1))

  def encode(self, params, aux, images):
    """Teacher features [B, D] of full, unmasked images for the eval job."""
    del params  # The EMA teacher is evaluated.
    return self.model.apply({"params": aux["teacher"]}, images, method=MaskedRegressor.encode)
