"""DINO (Caron et al. 2021): self-distillation with no labels, multi-crop, centering.

Batch (`train_transform`, jaxssl.data.multicrop): {'global_crops': [B, G, S, S, C],
'local_crops': [B, L, s, s, C]} with G = 2. The student (`params`: backbone + `DINOHead`)
sees all G + L crops, the teacher (`aux['teacher']`, an EMA copy of the whole student) only
the G global crops. Same-resolution crops go through the network in one call, as DINO's
`MultiCropWrapper`. Loss (`losses.dino`, eq. 2-3 and alg. 1): cross-entropy between the
centered, sharpened teacher softmax((t - c) / tau_t) and the student softmax(s / 0.1) over all
pairs of different crops. After the step the teacher moves to the student with the cosine
momentum 0.996 -> 1 (sec. 3.1, `post_update`); the center c is an EMA (0.9) of the mean
teacher logit (eq. 4, updated in `loss_fn`, kept in aux). tau_t warms up linearly from 0.04 to
0.07 (DINO's `warmup_teacher_temp` schedule, here per step rather than per epoch).

DINO's `freeze_last_layer`: for the first epoch the prototype layer (`last_layer_v`, and
`last_layer_g` when trained) is held by the optimizer, `optim.frozen_until=(("last_layer_",
epochs),)` set by the presets: no update, no weight decay and Adam state untouched, as DINO's
`cancel_gradients_last_layer` (`p.grad = None`). The older form, `freeze_last_layer_epochs`,
gave the prototypes a zero gradient (`stop_gradient`) instead, so AdamW still decayed them and
advanced their moments; it is kept (0 in the presets) so that recorded runs resume unchanged.

The teacher never drops paths or units: it is built with `drop_path = dropout = 0` (DINO builds
its teacher without `drop_path_rate`, main_dino.py), still in training mode so a ResNet's
BatchNorm normalises by batch statistics as DINO's teacher does.

Monitors: teacher entropy, KL(teacher || student), the entropy of the batch-mean teacher
distribution, KL(teacher || softmax(center / tau_t)) (how far the sharpened teacher is from the
distribution the center alone would give: 0 when centering has flattened every output onto the
center, i.e. uniform collapse), the schedules, and `common.collapse_metrics` on the student's
global-crop backbone features. `encode` uses the teacher backbone, as the paper evaluates
(sec. 4: "we evaluate ... the teacher network").

The iBOT / DINOv2 method (jaxssl/methods/ibot.py) subclasses `Method`.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import multicrop
from jaxssl.methods import common
from jaxssl.methods import ema

LAST_LAYER = "last_layer_v"  # the prototype weights DINO freezes at the start
LAST_LAYER_PATHS = ("head/last_layer_v", "head/last_layer_g")  # what `frozen_until` should match


class DINONetwork(nn.Module):
  """Backbone + DINO head, and an optional separate patch head (iBOT).

  `__call__` returns {'features': [B, D] backbone output, 'logits': [B, K] head output} and,
  with patches=True, 'patch_logits' [B, N, K'] (the patch head on every patch token; the [cls]
  head when `patch_head` is None, iBOT's shared head).
  """

  encoder: nn.Module
  head: nn.Module
  patch_head: nn.Module | None = None

  def __call__(self, images, *, train: bool = False, token_mask=None, patches: bool = False):
    kwargs = {} if token_mask is None else {"token_mask": token_mask}
    features, enc_aux = self.encoder(images, train=train, **kwargs)
    out = {"features": features, "logits": self.head(features, train=train)}
    if patches:
      patch_head = self.head if self.patch_head is None else self.patch_head
      out["patch_logits"] = patch_head(enc_aux["tokens"], train=train)
    return out

  def encode(self, images):
    return self.encoder(images, train=False)[0]


def build_head(
  head: ml_collections.ConfigDict, dtype, kernels: Kernels = REFERENCE
) -> models.DINOHead:
  return models.DINOHead(
    out_dim=head.out_dim,
    hidden_dim=head.hidden_dim,
    bottleneck_dim=head.bottleneck_dim,
    num_layers=head.num_layers,
    norm_last_layer=head.norm_last_layer,
    dtype=dtype,
    kernels=kernels,
  )


def epochs_to_steps(config: ml_collections.ConfigDict, epochs: float) -> int:
  """Optimizer steps in `epochs` passes over the train split (0 for 0 epochs), rounded up as
  the trainer rounds the run length."""
  if not epochs:
    return 0
  c = ml_collections.ConfigDict(config.to_dict())
  c.total_steps, c.total_examples, c.total_epochs = None, None, float(epochs)
  return ema.schedule_length(c)


def views_first(crops):
  """[B, V, H, W, C] -> [V * B, H, W, C], view-major (the order `losses.dino` unstacks)."""
  return jnp.swapaxes(crops, 0, 1).reshape(-1, *crops.shape[2:])


def unstack_views(x, num_views):
  """[V * B, ...] -> [V, B, ...]."""
  return x.reshape(num_views, -1, *x.shape[1:])


def freeze_last_layer(params, frozen):
  """Params whose prototype weights (every `last_layer_v`) get no gradient while `frozen`;
  the values are unchanged (the legacy `freeze_last_layer_epochs`)."""

  def freeze(path, leaf):
    if getattr(path[-1], "key", None) == LAST_LAYER:
      return jnp.where(frozen, jax.lax.stop_gradient(leaf), leaf)
    return leaf

  return jax.tree_util.tree_map_with_path(freeze, params)


def center_kl(teacher_logits, center, teacher_temp):
  """mean over crops and batch of KL(softmax((t - c) / T) || softmax(c / T))."""
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  log_p = jax.nn.log_softmax((t - center) / teacher_temp, -1)
  log_q = jax.nn.log_softmax(center / teacher_temp, -1)
  return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1))


class Method:
  """DINO: init / loss_fn / post_update / encode over plain pytrees.

  aux = {'model_state': student BN statistics (empty for a ViT), 'teacher': EMA params of the
  whole student, 'teacher_state': the teacher's BN statistics, 'center': [K]}.
  """

  batch_keys = ("global_crops", "local_crops")
  name = "dino"  # the config section

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.section = config[self.name]
    self.kernels = kernels
    if self.section.freeze_last_layer_epochs and self.hold_epochs:
      raise ValueError(
        f"config.{self.name}.freeze_last_layer_epochs={self.section.freeze_last_layer_epochs} "
        "and optim.frozen_until both freeze the last layer; set the former to 0 (the "
        "optimizer hold is DINO's freeze)."
      )
    self.model = self.build_model()

  def build_model(self) -> DINONetwork:
    dtype = models.compute_dtype(self.config.model)
    return DINONetwork(
      encoder=models.build_encoder(self.config.model, self.kernels),
      head=build_head(self.config.head, dtype, self.kernels),
    )

  @functools.cached_property
  def teacher_model(self) -> DINONetwork:
    """The student's network without stochastic depth or dropout (same parameters)."""
    encoder = self.model.encoder
    off = {f: 0.0 for f in ("drop_path", "dropout") if getattr(encoder, f, 0.0)}
    return self.model.clone(encoder=encoder.clone(**off)) if off else self.model

  @functools.cached_property
  def schedule_steps(self) -> int:
    # Resolved on first use (tracing the step): building the method for the eval job reads
    # no dataset metadata.
    return ema.schedule_length(self.config)

  @functools.cached_property
  def temp_warmup_steps(self) -> int:
    return epochs_to_steps(self.config, self.section.teacher_temp_warmup_epochs)

  @functools.cached_property
  def freeze_steps(self) -> int:
    """Steps of the legacy stop-gradient freeze (`freeze_last_layer_epochs`)."""
    return epochs_to_steps(self.config, self.section.freeze_last_layer_epochs)

  @property
  def hold_epochs(self) -> list[float]:
    """Epochs of the `optim.frozen_until` entries that hold the last layer."""
    return [
      float(epochs)
      for pattern, epochs in self.config.optim.get("frozen_until", ())
      if float(epochs) > 0 and any(re.search(pattern, p) for p in LAST_LAYER_PATHS)
    ]

  @functools.cached_property
  def hold_steps(self) -> int:
    """Steps the optimizer holds the last layer (the `optim.frozen_until` rounding)."""
    return max((epochs_to_steps(self.config, e) for e in self.hold_epochs), default=0)

  def momentum(self, step):
    """Teacher momentum after optimizer step `step` (0-based): cosine from base to 1."""
    return ema.cosine_momentum(step, self.schedule_steps, self.section.base_momentum)

  def teacher_temp(self, step):
    """tau_t at step `step`: linear from warmup_teacher_temp to teacher_temp over the warmup
    steps, then constant."""
    start, end = self.section.warmup_teacher_temp, self.section.teacher_temp
    if self.temp_warmup_steps == 0:
      return jnp.asarray(end, jnp.float32)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / self.temp_warmup_steps, 0.0, 1.0)
    return start + (end - start) * progress

  def mask_policy(self, global_grid):  # pylint: disable=unused-argument
    """The per-image patch mask policy of the global crops (none for DINO; iBOT's blocks)."""
    return None

  def train_transform(self, info):
    crops = self.config.crops
    encoder = self.model.encoder
    patch = encoder.arch()["patch_size"][0] if isinstance(encoder, models.ViT) else 1
    grid = (crops.global_size // patch, crops.global_size // patch)
    return multicrop.dino_multicrop(
      mean=info.mean,
      std=info.std,
      global_size=crops.global_size,
      local_size=crops.local_size,
      num_local=crops.num_local,
      global_scale=crops.global_scale,
      local_scale=crops.local_scale,
      flip_prob=crops.flip_prob,
      jitter=tuple(crops.jitter),
      masking=self.mask_policy(grid),
      placement=self.config.augment.placement,
    )

  init_patches = False  # iBOT: also create the patch head at init

  def init(self, rng, batch):
    params, model_state = common.init_variables(
      self.model, rng, batch["global_crops"][:, 0], train=False, patches=self.init_patches
    )
    # The teacher starts as a copy of the student (DINO: teacher.load_state_dict(student)).
    return params, {
      "model_state": model_state,
      "teacher": params,
      "teacher_state": model_state,
      "center": jnp.zeros((self.config.head.out_dim,), jnp.float32),
    }

  def student_forward(self, params, state, batch, rng, token_mask=None, patches=False):
    """Student logits of all crops [G + L, B, K], its global-crop outputs and new BN state."""
    num_global, num_local = batch["global_crops"].shape[1], batch["local_crops"].shape[1]
    rng_global, rng_local = jax.random.split(rng)
    out, state = common.apply_model(
      self.model,
      params,
      state,
      views_first(batch["global_crops"]),
      train=True,
      token_mask=token_mask,
      patches=patches,
      rngs={"dropout": rng_global},
    )
    logits = [unstack_views(out["logits"], num_global)]
    if num_local:
      local, state = common.apply_model(
        self.model,
        params,
        state,
        views_first(batch["local_crops"]),
        train=True,
        rngs={"dropout": rng_local},
      )
      logits.append(unstack_views(local["logits"], num_local))
    return jnp.concatenate(logits, 0), out, state

  def teacher_forward(self, aux, batch, rng, patches=False):
    """Teacher outputs on the global crops (stop-gradient) and its new BN state."""
    out, state = common.apply_model(
      self.teacher_model,
      aux["teacher"],
      aux["teacher_state"],
      views_first(batch["global_crops"]),
      train=True,
      patches=patches,
      rngs={"dropout": rng},
    )
    return jax.lax.stop_gradient(out), state

  def cls_targets(self, teacher_logits, center, temp):
    """Teacher target distributions [G, B, K] (DINO: centering + sharpening)."""
    return jax.nn.softmax((teacher_logits - center) / temp, -1)

  def distillation(self, params, aux, batch, rng, step):
    """The [cls] distillation shared with iBOT: (loss, metrics, pieces for subclasses)."""
    rng_student, rng_teacher = jax.random.split(rng)
    if self.freeze_steps:
      params = freeze_last_layer(params, jnp.asarray(step) < self.freeze_steps)
    frozen = jnp.asarray(step) < max(self.freeze_steps, self.hold_steps)
    masks = batch.get("masks")
    token_mask = None if masks is None else views_first(masks)
    student_logits, student_out, model_state = self.student_forward(
      params,
      aux["model_state"],
      batch,
      rng_student,
      token_mask=token_mask,
      patches=masks is not None,
    )
    teacher_out, teacher_state = self.teacher_forward(
      aux, batch, rng_teacher, patches=masks is not None
    )
    num_global = batch["global_crops"].shape[1]
    teacher_logits = unstack_views(teacher_out["logits"], num_global)
    temp = self.teacher_temp(step)
    targets = self.cls_targets(teacher_logits, aux["center"], temp)
    loss, metrics = losses.dino_cross_entropy(
      student_logits, targets, student_temp=self.section.student_temp
    )
    marginal = jnp.mean(targets, axis=(0, 1))
    metrics["teacher_marginal_entropy"] = -jnp.sum(jax.scipy.special.xlogy(marginal, marginal))
    metrics["kl_teacher_center"] = center_kl(teacher_logits, aux["center"], temp)
    # Eq. 4: c <- m c + (1 - m) mean of the teacher logits over crops and batch.
    center = losses.dino_center_update(
      aux["center"], jnp.mean(teacher_logits, axis=(0, 1)), momentum=self.section.center_momentum
    )
    metrics.update(
      teacher_temp=temp,
      teacher_momentum=self.momentum(step),
      last_layer_frozen=frozen.astype(jnp.float32),
    )
    metrics.update(common.collapse_metrics(student_out["features"]))
    new_aux = {**aux, "model_state": model_state, "teacher_state": teacher_state, "center": center}
    pieces = dict(params=params, student_out=student_out, teacher_out=teacher_out, temp=temp)
    return loss, metrics, new_aux, pieces

  def loss_fn(self, params, aux, batch, rng, step):
    loss, metrics, new_aux, _ = self.distillation(params, aux, batch, rng, step)
    return loss, (metrics, new_aux)

  def post_update(self, state):
    """EMA of the whole student into the teacher with the step's momentum."""
    # state.step was incremented by the step; the update just applied is step - 1.
    momentum = self.momentum(state.step - 1)
    teacher = ema.ema_update(state.aux["teacher"], state.params, momentum)
    return state.replace(aux={**state.aux, "teacher": teacher})

  def encode(self, params, aux, images):
    """Frozen teacher-backbone features [B, D] for the eval job (DINO evaluates the teacher)."""
    del params
    out, _ = common.apply_model(
      self.model,
      aux["teacher"],
      aux["teacher_state"],
      images,
      train=False,
      method=DINONetwork.encode,
    )
    return out
