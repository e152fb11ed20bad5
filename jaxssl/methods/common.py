"""Pieces several methods share: applying a Flax model with its BatchNorm state, and the
encoder + projection-head module."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import models
from jaxssl.kernels import REFERENCE, Kernels


class EncoderWithHead(nn.Module):
  """Backbone followed by a projection MLP. Returns (projection, backbone features)."""

  encoder: nn.Module
  head: nn.Module

  def __call__(self, images, *, train: bool = False):
    features, _ = self.encoder(images, train=train)
    return self.head(features, train=train), features

  def encode(self, images):
    return self.encoder(images, train=False)[0]


def build_encoder_with_head(config, kernels: Kernels = REFERENCE) -> EncoderWithHead:
  """Encoder from `config.model`, head from `config.head`: every key of it is a
  models.ProjectionHead field (hidden_dim, out_dim, num_layers, use_bn and optionally final_bn,
  final_bias, final_bn_scale); an unknown key raises TypeError. A key a config lacks takes the
  field's default, which is the head runs recorded before that key existed had."""
  return EncoderWithHead(
    encoder=models.build_encoder(config.model, kernels),
    head=models.ProjectionHead(
      **config.head.to_dict(), dtype=models.compute_dtype(config.model), kernels=kernels
    ),
  )


def init_variables(module: nn.Module, rng: jax.Array, *args, **kwargs):
  """Initialises `module`; returns (params, model_state) with model_state the non-param
  collections (BatchNorm statistics), an empty dict when there are none."""
  variables = module.init(rng, *args, **kwargs)
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  return params, model_state


def apply_model(
  module: nn.Module, params: Any, model_state: dict, *args, train: bool, method=None, **kwargs
):
  """Applies `module`; in training returns the updated BatchNorm statistics too.

  Returns (output, new_model_state). BatchNorm statistics are computed over the global batch:
  under jit with a sharded batch, XLA inserts the cross-device reduction.
  """
  variables = {"params": params, **model_state}
  if train and model_state:
    out, updates = module.apply(
      variables, *args, train=train, mutable=list(model_state), method=method, **kwargs
    )
    return out, {**model_state, **updates}
  kw = dict(kwargs)
  if method is None:
    kw["train"] = train
  return module.apply(variables, *args, method=method, **kw), model_state


# How a symmetric two-view loss combines its directions (view 1 -> 2 and 2 -> 1): the losses
# average them ('mean'); SimCLR's and BYOL's official code sum them ('sum').
DIRECTION_FACTORS = {"mean": 1.0, "sum": 2.0}


def direction_factor(config: ml_collections.ConfigDict, section: str) -> float:
  """The factor on a direction-averaged loss that `config.<section>.directions` asks for
  ('mean' when the key is absent: runs recorded before it existed)."""
  directions = config[section].get("directions", "mean")
  if directions not in DIRECTION_FACTORS:
    raise ValueError(
      f"config.{section}.directions={directions!r}; choose one of {sorted(DIRECTION_FACTORS)}."
    )
  return DIRECTION_FACTORS[directions]


def collapse_metrics(z: jax.Array) -> dict[str, jax.Array]:
  """Collapse monitors logged by every method: std of normalised embeddings and RankMe."""
  from jaxssl.losses import monitoring  # pylint: disable=g-import-not-at-top

  z = jax.lax.stop_gradient(z.astype(jnp.float32))
  return {"embedding_std": monitoring.embedding_std(z), "rankme": monitoring.rankme(z)}


class EncoderHeadMethod:
  """Base of the methods that train one encoder + projection head on two views with no
  teacher (SimCLR, VICReg, Barlow Twins): init, the per-view forward, no post-update, and
  encoder features (before the head) for the eval job. Subclasses add `train_transform` and
  `loss_fn`."""

  batch_keys = ("view1", "view2")

  def __init__(self, config, kernels: Kernels = REFERENCE):
    self.config = config
    self.model = build_encoder_with_head(config, kernels)

  def init(self, rng, batch):
    params, model_state = init_variables(self.model, rng, batch["view1"], train=False)
    return params, {"model_state": model_state}

  def project_views(self, params, aux, batch, rng):
    """(z1, z2, new_aux): each view in its own forward, so BatchNorm statistics are per view
    (as the official VICReg and Barlow Twins code)."""
    rng1, rng2 = jax.random.split(rng)
    (z1, _), state = apply_model(
      self.model, params, aux["model_state"], batch["view1"], train=True, rngs={"dropout": rng1}
    )
    (z2, _), state = apply_model(
      self.model, params, state, batch["view2"], train=True, rngs={"dropout": rng2}
    )
    return z1, z2, {**aux, "model_state": state}

  def post_update(self, state):
    return state

  def encode(self, params, aux, images):
    """Frozen encoder features [B, D] for the eval job (before the head)."""
    out, _ = apply_model(
      self.model, params, aux["model_state"], images, train=False, method=EncoderWithHead.encode
    )
    return out
