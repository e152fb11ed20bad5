"""iBOT (Zhou et al. 2022) and the DINOv2 losses (Oquab et al. 2023) on top of DINO.

Batch: DINO's crops plus 'masks' [B, G, N] (1 = masked patch of a global crop), block-wise
masks drawn in the data pipeline (`block_masking.BlockMasking`: with probability 0.5 an image
gets a ratio r ~ U[0.1, 0.5], iBOT sec. 4.1 / DINOv2's mask_sample_probability and
mask_ratio_min_max; blocks of at least `mask_min_block` patches, iBOT's (min(H, W) // 3)^2).
The student's global crops have their masked patches replaced by the ViT's
learned [mask] token (`token_mask`); the teacher sees them unmasked.

Loss = L_[cls] + patch_loss_weight * L_MIM + koleo_weight * L_KoLeo:
  L_[cls]  DINO's cross-view loss on the [cls] outputs (`dino.Method.distillation`), the
           student's global crops being the masked ones (iBOT eq. 3);
  L_MIM    iBOT's masked-patch self-distillation (eq. 2, `losses.ibot_patch_cross_entropy`):
           on each global crop the student's patch output at a masked patch matches the
           teacher's output for the same, unmasked patch; averaged per image over its masked
           patches, then over images and the two crops;
  L_KoLeo  DINOv2's KoLeo regulariser (sec. 4) on the student's backbone [cls] features, one
           term per global crop, summed (DINOv2's `koleo_loss`). 0 by default (iBOT).
           Nearest neighbours are searched within groups of `koleo_group_size` consecutive
           images (DINOv2: each GPU's 64; 0 = the whole batch), the group terms averaged.

Teacher targets, `centering`: 'center' (iBOT: DINO's centering, the patch outputs with their
own center, both EMA 0.9) or 'sinkhorn_knopp' (DINOv2: `losses.sinkhorn_knopp`, 3 iterations,
balancing the [cls] outputs of both global crops together, and the teacher outputs of the
masked patches of both global crops together, as DINOv2's `ibot_patch_loss`). The centers are
still updated under Sinkhorn-Knopp (unused there; they feed the KL(teacher || center) monitor).

Heads: `shared_head` True applies the [cls] DINO head to the patch tokens (iBOT's ViT-S
default); False gives the patches a separate `DINOHead` with `patch_out_dim` prototypes, MLP
included: DINOv2's `ibot_head` (`separate_head`, its ViT-L/g recipes). iBOT's own
`shared_head=False` ablation differs: it shares the MLP and only adds a second last layer.
Both temperatures follow DINO's teacher
schedule (iBOT's teacher_patch_temp = teacher_temp = 0.07 with the same warmup from 0.04).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import block_masking
from jaxssl.methods import dino

CENTERINGS = ("center", "sinkhorn_knopp")


class Method(dino.Method):
  """iBOT / DINOv2: DINO plus masked-patch distillation, optional Sinkhorn-Knopp and KoLeo.

  aux = DINO's aux plus 'patch_center' [K'].
  """

  batch_keys = ("global_crops", "local_crops", "masks")
  name = "ibot"
  init_patches = True

  def __init__(self, config, kernels: Kernels = REFERENCE):
    section = config[self.name]
    if section.centering not in CENTERINGS:
      raise ValueError(
        f"config.ibot.centering={section.centering!r}; choose one of "
        f"{CENTERINGS} ('center': iBOT, 'sinkhorn_knopp': DINOv2)."
      )
    group = section.get("koleo_group_size", 0)
    if section.koleo_weight and group and (group < 2 or config.batch_size % group):
      raise ValueError(
        f"config.ibot.koleo_group_size={group} must be >= 2 and divide batch_size="
        f"{config.batch_size} (DINOv2: 64, its images per GPU; 0 = the whole batch)."
      )
    super().__init__(config, kernels)

  def build_model(self) -> dino.DINONetwork:
    encoder = models.build_encoder(self.config.model, self.kernels)
    if not isinstance(encoder, models.ViT):
      raise ValueError(
        f"iBOT masks patch tokens and needs a ViT encoder, got "
        f"{type(encoder).__name__} from model.name={self.config.model.name!r}."
      )
    dtype = models.compute_dtype(self.config.model)
    patch_head = None
    if not self.section.shared_head:
      patch_config = self.config.head.copy_and_resolve_references()
      patch_config.out_dim = self.section.patch_out_dim
      patch_head = dino.build_head(patch_config, dtype, self.kernels)
    return dino.DINONetwork(
      encoder=encoder.clone(mask_token=True),
      head=dino.build_head(self.config.head, dtype, self.kernels),
      patch_head=patch_head,
    )

  @property
  def patch_out_dim(self) -> int:
    return self.config.head.out_dim if self.section.shared_head else self.section.patch_out_dim

  def mask_policy(self, global_grid):
    return block_masking.BlockMasking(
      grid=global_grid,
      ratio=tuple(self.section.mask_ratio),
      prob=self.section.mask_prob,
      min_block=self.section.mask_min_block,
    )

  def init(self, rng, batch):
    params, aux = super().init(rng, batch)
    return params, {**aux, "patch_center": jnp.zeros((self.patch_out_dim,), jnp.float32)}

  def targets(self, teacher_logits, center, temp, mask=None):
    """Teacher target distributions over the last axis: centered or Sinkhorn-Knopp (over the
    samples where `mask` is 1, when given)."""
    if self.section.centering == "sinkhorn_knopp":
      return losses.sinkhorn_knopp(teacher_logits, teacher_temp=temp, mask=mask)
    return jax.nn.softmax((teacher_logits - center) / temp, -1)

  def cls_targets(self, teacher_logits, center, temp):
    return self.targets(teacher_logits, center, temp)

  def loss_fn(self, params, aux, batch, rng, step):
    cls_loss, metrics, new_aux, pieces = self.distillation(params, aux, batch, rng, step)
    num_global = batch["global_crops"].shape[1]
    student = dino.unstack_views(pieces["student_out"]["patch_logits"], num_global)
    teacher = dino.unstack_views(pieces["teacher_out"]["patch_logits"], num_global)
    masks = jnp.swapaxes(batch["masks"], 0, 1)  # [G, B, N]
    probs = self.targets(teacher, aux["patch_center"], pieces["temp"], mask=masks)
    patch_loss, patch_metrics = losses.ibot_patch_cross_entropy(
      student, probs, masks, student_temp=self.section.student_temp
    )
    patch_center = losses.dino_center_update(
      aux["patch_center"], jnp.mean(teacher, axis=(0, 1, 2)), momentum=self.section.center_momentum
    )
    loss = cls_loss + self.section.patch_loss_weight * patch_loss
    metrics.update(cls_loss=cls_loss, patch_loss=patch_loss, mask_ratio=patch_metrics["mask_ratio"])
    if self.section.koleo_weight:
      features = dino.unstack_views(pieces["student_out"]["features"], num_global)
      group = self.section.get("koleo_group_size", 0) or None
      koleo = sum(losses.koleo(f, group_size=group)[0] for f in features)
      loss = loss + self.section.koleo_weight * koleo
      metrics["koleo"] = koleo
    return loss, (metrics, {**new_aux, "patch_center": patch_center})
