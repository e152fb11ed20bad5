"""Optimizers and learning-rate schedules, built from `config.optim` with optax."""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import ml_collections
import optax

OPTIMIZERS = ("adamw", "lars", "sgd")
SCALINGS = ("linear", "sqrt", "none")


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay (and LARS trust-ratio adaptation).

  Biases and normalisation scales/offsets (every parameter of rank <= 1) are excluded, as in
  SimCLR (Chen et al. 2020, appendix B.1) and most ViT recipes.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _path_names(params: Any) -> Any:
  """The '/'-joined key path of every leaf, e.g. 'encoder/embedding/kernel'."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"), params
  )


def _compile_frozen(patterns) -> list[re.Pattern]:
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f"optim.frozen: {pattern!r} is not a regular expression ({e}).") from e
  return compiled


def frozen_mask(patterns, params: Any) -> Any:
  """True for parameters whose path matches one of the regexes in `patterns` (re.search)."""
  compiled = _compile_frozen(patterns)
  return jax.tree.map(lambda name: any(c.search(name) for c in compiled), _path_names(params))


def peak_learning_rate(optim_config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """base_lr scaled by batch size: linear (lr x B/256, Goyal et al. 2017) or sqrt (SimCLR LARS)."""
  if optim_config.lr_scaling not in SCALINGS:
    raise ValueError(f"optim.lr_scaling={optim_config.lr_scaling!r}; choose one of {SCALINGS}.")
  ratio = global_batch_size / 256.0
  factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[optim_config.lr_scaling]
  return optim_config.base_lr * factor


def make_schedule(
  optim_config: ml_collections.ConfigDict, global_batch_size: int, total_steps: int
) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine decay to `end_lr_factor` x peak."""
  peak = peak_learning_rate(optim_config, global_batch_size)
  warmup = min(int(optim_config.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=peak,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=peak * optim_config.end_lr_factor,
  )


def make_optimizer(
  optim_config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """AdamW, LARS or SGD with momentum; optional global-norm clipping first.

  `optim.norm_bias_lr_factor` scales the learning rate of biases and normalisation parameters
  (rank <= 1); `optim.frozen` lists regexes of parameter paths ('encoder/embedding/kernel') that
  are never updated.
  """
  name = optim_config.name
  if name == "adamw":
    tx = optax.adamw(
      schedule,
      b1=optim_config.b1,
      b2=optim_config.b2,
      weight_decay=optim_config.weight_decay,
      mask=decay_mask,
    )
  elif name == "lars":
    # You et al. 2017; optax applies decay then the trust ratio ||w|| / ||g + wd w||.
    tx = optax.lars(
      schedule,
      weight_decay=optim_config.weight_decay,
      weight_decay_mask=decay_mask,
      trust_ratio_mask=decay_mask,
      momentum=optim_config.momentum,
    )
  elif name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(optim_config.weight_decay, mask=decay_mask),
      optax.sgd(schedule, momentum=optim_config.momentum),
    )
  else:
    raise ValueError(f"Unknown optimizer optim.name={name!r}; choose one of {OPTIMIZERS}.")
  if optim_config.norm_bias_lr_factor != 1.0:
    # Barlow Twins trains biases and BN parameters at 0.0048 / 0.2 of the weights' LARS rate;
    # every optimizer here is linear in its learning rate, so scaling those updates is exactly
    # a separate learning rate for them.
    tx = optax.chain(
      tx,
      optax.masked(
        optax.scale(optim_config.norm_bias_lr_factor),
        lambda p: jax.tree.map(lambda m: not m, decay_mask(p)),
      ),
    )
  if optim_config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
  if optim_config.frozen:
    # Frozen parameters (e.g. MoCo v3's random patch projection) get exactly zero updates and no
    # optimizer state; clipping sees only the trained ones.
    patterns = tuple(optim_config.frozen)
    _compile_frozen(patterns)  # a bad pattern fails here, before any init or compile
    tx = optax.multi_transform(
      {"trained": tx, "frozen": optax.set_to_zero()},
      lambda p: jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(patterns, p)),
    )
  return tx
