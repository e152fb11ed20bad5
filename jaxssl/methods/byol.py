"""BYOL (Grill et al. 2020): an online network predicts an EMA target network's projection.

Batch: {'view1', 'view2': [B, H, W, C] float32}, BYOL's asymmetric views (`two_view_transform`,
table 6 of the paper: view 1 always blurred and never solarized, view 2 blurred with p=0.1 and
solarized with p=0.2). Online network: encoder f -> projector g -> predictor q (`params`).
Target network: an exponential moving average of f and g (`aux['teacher']`, initialised as a
copy), updated after every step with the cosine momentum of sec. 3.2 (`post_update`). Loss:
`losses.byol`, the symmetrised 2 - 2 cos(q(z), stop_gradient(z')) of eq. 2, times 2 when
`config.byol.directions='sum'`: the official `byol_experiment.py` sums the two directions
(`repr_loss = l(p1, t2) + l(p2, t1)`, then the batch mean), which is not neutral under LARS
(the trust ratio fixes the weights' step size, not the ratio of gradient to weight decay;
biases and BN parameters step by lr x gradient). 'mean' (runs recorded before the key existed)
keeps `losses.byol`'s average.

Config: `config.head` is the projector, `config.byol` holds base_momentum, directions and the
predictor (hidden_dim, num_layers and optionally final_bn, final_bias, final_bn_scale of
models.ProjectionHead; its output size is the projector's). BYOL's MLPs end in a Dense without
bias (`networks.py` MLP: `hk.Linear(output_size, with_bias=False)`): `final_bias=False` on
both. Evaluation uses the online encoder f, as the paper does (sec. 3.3: "the representation
y ... of the online network").

`OnlineNetwork`, the teacher machinery in `Method` and `two_view_transform` are reused by
MoCo v3 (same architecture, contrastive loss); VICReg and Barlow Twins reuse the views.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl import losses
from jaxssl import models
from jaxssl.data import augment
from jaxssl.methods import common
from jaxssl.methods import ema

# The parts of the online network that the target network copies (not the predictor).
TARGET_PARTS = ("encoder", "projector")


def two_view_transform(config: ml_collections.ConfigDict, info) -> augment.TwoViews:
  """BYOL's view pair (Grill et al. 2020, table 6) from `config.augment`.

  `config.augment.blur_prob` and `.solarize_prob` are (view 1, view 2) pairs, BYOL's being
  (1.0, 0.1) and (0.0, 0.2); a single number applies to both views. The other fields
  (crop_scale, flip_prob, jitter_strength, jitter_prob) are shared.
  """
  shared = config.augment.to_dict()
  per_view = {}
  for key in ("blur_prob", "solarize_prob"):
    value = shared.pop(key, 0.0)
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
      raise ValueError(
        f"config.augment.{key}={value!r} must be one probability or a "
        "(view 1, view 2) pair, e.g. (1.0, 0.1)."
      )
    per_view[key] = pair
  views = [
    augment.SimCLRAugment(
      mean=info.mean,
      std=info.std,
      output_size=config.data.image_size,
      blur_prob=per_view["blur_prob"][i],
      solarize_prob=per_view["solarize_prob"][i],
      **shared,
    )
    for i in range(2)
  ]
  return augment.TwoViews(*views)


class OnlineNetwork(nn.Module):
  """Encoder -> projector -> predictor. The target network is this module applied to the
  target's variables with predict=False (it has no predictor)."""

  encoder: nn.Module
  projector: nn.Module
  predictor: nn.Module

  def __call__(self, images, *, train: bool = False, predict: bool = True):
    """Returns (projection z [B, P], prediction q(z) [B, P], or None when predict=False)."""
    features, _ = self.encoder(images, train=train)
    projection = self.projector(features, train=train)
    prediction = self.predictor(projection, train=train) if predict else None
    return projection, prediction

  def encode(self, images):
    return self.encoder(images, train=False)[0]


def build_online_network(
  config: ml_collections.ConfigDict,
  predictor: ml_collections.ConfigDict,
  kernels: Kernels = REFERENCE,
) -> OnlineNetwork:
  """Projector from `config.head` (fields of models.ProjectionHead), predictor from
  `predictor` (hidden_dim, num_layers, optionally final_bn, final_bias, final_bn_scale; BN on
  its hidden layers) mapping back to the projector's output size. Head fields a config lacks
  take ProjectionHead's defaults, the heads of runs recorded before those keys existed."""
  return OnlineNetwork(
    encoder=models.build_encoder(config.model, kernels),
    projector=models.ProjectionHead(
      **config.head.to_dict(), dtype=models.compute_dtype(config.model), kernels=kernels
    ),
    predictor=models.PredictionHead(
      **predictor.to_dict(),
      out_dim=config.head.out_dim,
      use_bn=True,
      dtype=models.compute_dtype(config.model),
      kernels=kernels,
    ),
  )


def target_part(tree: dict[str, Any]) -> dict[str, Any]:
  """The encoder and projector entries of a params (or BatchNorm statistics) dict."""
  return {k: v for k, v in tree.items() if k in TARGET_PARTS}


class Method:
  """BYOL: init / loss_fn / post_update / encode over plain pytrees.

  aux = {'model_state': online BN statistics, 'teacher': target params (encoder, projector),
         'teacher_state': the target's own BN statistics}.
  """

  batch_keys = ("view1", "view2")
  name = "byol"  # the config section; MoCo v3 overrides it

  def __init__(self, config: ml_collections.ConfigDict, kernels: Kernels = REFERENCE):
    self.config = config
    self.section = config[self.name]
    self.model = build_online_network(config, self.section.predictor, kernels)
    self.base_momentum = self.section.base_momentum
    self.loss_factor = common.direction_factor(config, self.name)

  @functools.cached_property
  def schedule_steps(self) -> int:
    # Resolved on first use (tracing the step), so building the method for the eval job
    # reads no dataset metadata.
    return ema.schedule_length(self.config)

  def momentum(self, step):
    """Target momentum after optimizer step `step` (0-based): cosine from base to 1."""
    return ema.cosine_momentum(step, self.schedule_steps, self.base_momentum)

  def train_transform(self, info):
    return two_view_transform(self.config, info)

  def init(self, rng, batch):
    params, model_state = common.init_variables(self.model, rng, batch["view1"], train=False)
    # The target starts as a copy of the online encoder + projector (paper, sec. 3.2), with
    # BatchNorm statistics of its own.
    teacher_state = {col: target_part(v) for col, v in model_state.items()}
    return params, {
      "model_state": model_state,
      "teacher": target_part(params),
      "teacher_state": teacher_state,
    }

  def pair_loss(self, p1, p2, t1, t2):
    """The loss between online predictions p and target projections t of the two views."""
    loss, metrics = losses.byol(p1, p2, t1, t2)
    return self.loss_factor * loss, metrics

  def loss_fn(self, params, aux, batch, rng, step):
    rngs = [{"dropout": r} for r in jax.random.split(rng, 4)]
    # One forward per view, as the paper's code: BatchNorm statistics are per view.
    state = aux["model_state"]
    (z1, p1), state = common.apply_model(
      self.model, params, state, batch["view1"], train=True, rngs=rngs[0]
    )
    (z2, p2), state = common.apply_model(
      self.model, params, state, batch["view2"], train=True, rngs=rngs[1]
    )
    # The target runs in train mode too (BN on batch statistics, as in the paper's code).
    # Its params come from aux, so they get no gradient by construction; stop_gradient makes
    # the targets constants even when a caller passes a teacher computed from `params`
    # (without it, a teacher equal to the student would be pulled towards the prediction).
    teacher_state = aux["teacher_state"]
    (t1, _), teacher_state = common.apply_model(
      self.model,
      aux["teacher"],
      teacher_state,
      batch["view1"],
      train=True,
      predict=False,
      rngs=rngs[2],
    )
    (t2, _), teacher_state = common.apply_model(
      self.model,
      aux["teacher"],
      teacher_state,
      batch["view2"],
      train=True,
      predict=False,
      rngs=rngs[3],
    )
    t1, t2 = jax.lax.stop_gradient((t1, t2))
    loss, metrics = self.pair_loss(p1, p2, t1, t2)
    metrics["teacher_momentum"] = self.momentum(step)
    metrics.update(common.collapse_metrics(z1))
    return loss, (metrics, {**aux, "model_state": state, "teacher_state": teacher_state})

  def post_update(self, state):
    """EMA of the online encoder + projector into the target with the step's momentum."""
    # state.step was incremented by the step; the update just applied is step - 1, so the
    # first update uses base_momentum (as BYOL's code evaluates the schedule at global_step).
    momentum = self.momentum(state.step - 1)
    teacher = ema.ema_update(state.aux["teacher"], target_part(state.params), momentum)
    return state.replace(aux={**state.aux, "teacher": teacher})

  def encode(self, params, aux, images):
    """Frozen online-encoder features [B, D] for the eval job."""
    out, _ = common.apply_model(
      self.model, params, aux["model_state"], images, train=False, method=OnlineNetwork.encode
    )
    return out
