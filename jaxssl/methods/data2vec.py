"""data2vec for images (Baevski et al. 2022): a student ViT sees the image with masked patches
replaced by a learned [mask] token and regresses, at the masked positions, the top-K block outputs
of an EMA teacher that sees the whole image, normalised and averaged.

Batch (mask drawn in the data pipeline): {'image': [B, H, W, C] f32, 'mask': [B, N] f32,
1 = masked}. `masking` picks the mask: 'block' is BEiT's block-wise mask of about `num_masked`
patches in blocks of at least `min_block` (`block_masking.block_mask`, the official
`MaskingGenerator`: 120 of 196, blocks >= 16); 'random' masks a uniformly random `mask_ratio`
of the patches (MAE's sampler, `data.masking.MaskedView`), for the small patch grids of the
CPU presets (4x4), where blocks degenerate.
  * student: the ViT with `token_mask` (the masked patches' embeddings become the [mask]
    token before the position embedding; every token stays in the sequence, sec. 3.2), then a
    linear regression head on its final-normed tokens (sec. 3.3, "Objective");
  * teacher: an EMA of the student encoder (`aux['teacher']`), run without drop path; momentum
    linear from base to end over `anneal_steps` updates, then constant (sec. 3.3; the official
    ViT-B command keeps it at 0.9998: base = end);
  * targets: the teacher's top-K block outputs on the unmasked image, normalised as
    `target_norm` says and averaged (`losses.data2vec`): 'layer' (the official vision code,
    data2vec_vision `beit/engine_for_cyclical.py`) layer-normalises each block over the
    features, averages and layer-normalises again; 'instance' is fairseq's audio form
    (instance norm over the tokens). The loss is taken at the masked positions, reduced as
    `loss_reduction` says: 'mean' is the element mean of the vision code's
    `F.smooth_l1_loss`, 'sqrt_dim' fairseq's sum over D / sqrt(D). The ViT exposes each
    block's output after its residual, as the vision code's `--layer_results end`.
Evaluation encodes with the student (the official fine-tuning and linear probes load the
checkpoint's `model`, not `model_ema`), pooled as the backbone pools ('gap': the mean of the
final-normed tokens).

Config section `config.data2vec`: masking, mask_ratio, num_masked, min_block, top_k,
target_norm, loss_reduction, loss_beta (0 = L2, > 0 smooth L1), base_momentum, end_momentum,
anneal_steps (None = the whole run).
"""

from __future__ import annotations

import functools

import dataclasses

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import augment as augment_lib
from jaxssl.data import masking
from jaxssl.data import block_masking
from jaxssl.losses import predictive
from jaxssl.methods import common
from jaxssl.methods import ema
from jaxssl.methods import ijepa

MASKINGS = ("block", "random")
LOSS_REDUCTIONS = ("mean", "sqrt_dim")


@dataclasses.dataclass(frozen=True)
class BlockMaskedView(grain.transforms.RandomMap):
  """{'image', 'label'} -> one augmented view and its BEiT block-wise mask.

  Output: 'image' f32 [S, S, C], 'mask' f32 [N] (1 = masked, row-major over the patch grid;
  about `num_masked` patches, fewer when no further block fits) and 'label' int32. The
  augmentation and the mask draw from the same per-element generator, one after the other.
  """

  augment: augment_lib.SimCLRAugment
  patch_size: int
  image_size: int
  num_masked: int
  min_block: int

  def __post_init__(self):
    if self.patch_size < 1 or self.image_size % self.patch_size:
      raise ValueError(
        f"image_size={self.image_size} must be a multiple of patch_size="
        f"{self.patch_size}; change one of them."
      )
    side = self.image_size // self.patch_size
    if side < 2 or not 1 <= self.min_block <= self.num_masked <= side * side:
      raise ValueError(
        f"data2vec block masking needs 1 <= min_block={self.min_block} <= num_masked="
        f"{self.num_masked} <= {side * side} patches on a {side}x{side} grid (at least 2x2); "
        "change them or use data2vec.masking='random'."
      )

  def random_map(self, element, rng: np.random.Generator):
    image = self.augment(element["image"], rng)
    side = self.image_size // self.patch_size
    # max_block = every patch: BEiT's `max_num_patches` None / 196, so only the budget limits.
    mask = block_masking.block_mask(
      rng, (side, side), self.num_masked, min_block=self.min_block, max_block=side * side
    )
    return {"image": image, "mask": mask.astype(np.float32), "label": np.int32(element["label"])}


class MaskedRegressor(nn.Module):
  """Student: ViT with [mask] tokens + linear regression head. `block_outputs` (the teacher's
  path, on the teacher's parameters) and `encode` run the encoder on the unmasked image."""

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
  aux = {'model_state': {}, 'teacher': {'encoder': EMA teacher}}. Only the student is
  encoded for evaluation.
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
    if self.section.masking not in MASKINGS:
      raise ValueError(f"data2vec.masking={self.section.masking!r}; choose one of {MASKINGS}.")
    if self.section.masking == "block" and self.section.num_masked is None:
      raise ValueError(
        "data2vec.masking='block' needs data2vec.num_masked (BEiT / data2vec: 120 of 196)."
      )
    if self.section.loss_reduction not in LOSS_REDUCTIONS:
      raise ValueError(
        f"data2vec.loss_reduction={self.section.loss_reduction!r}; choose one of {LOSS_REDUCTIONS}."
      )
    if self.section.target_norm not in predictive.TARGET_NORMS:
      raise ValueError(
        f"data2vec.target_norm={self.section.target_norm!r}; choose one of "
        f"{predictive.TARGET_NORMS}."
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
    """One view (random resized crop + flip, as BEiT / data2vec) and its mask."""
    if self.section.masking == "block":
      return BlockMaskedView(
        ijepa.crop_flip_augment(self.config, info),
        patch_size=self.patch_size,
        image_size=self.config.data.image_size,
        num_masked=self.section.num_masked,
        min_block=self.section.min_block,
      )
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
    # 'mean': the element mean over masked tokens x D, i.e. the per-token sum / D.
    scale = 1.0 / pred.shape[-1] if self.section.loss_reduction == "mean" else None
    loss, metrics = losses.data2vec(
      pred,
      jax.lax.stop_gradient(layers),
      batch["mask"],
      top_k=self.section.top_k,
      loss_beta=self.section.loss_beta,
      loss_scale=scale,
      target_norm=self.section.target_norm,
    )
    metrics["teacher_momentum"] = self.momentum(step)
    metrics.update(common.collapse_metrics(jnp.mean(enc_aux["tokens"], axis=1)))
    return loss, (metrics, {**aux, "model_state": model_state})

  def post_update(self, state):
    """EMA of the student encoder into the teacher (the update just applied is step - 1)."""
    return ijepa.ema_encoder_update(state, self.momentum(state.step - 1))

  def encode(self, params, aux, images):
    """Student features [B, D] of full, unmasked images for the eval job."""
    del aux  # The student is evaluated, as the official fine-tuning (checkpoint key 'model').
    return self.model.apply({"params": params}, images, method=MaskedRegressor.encode)
