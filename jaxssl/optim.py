"""Optimizers and learning-rate schedules, built from `config.optim` with optax.

Besides AdamW / LARS / SGD and warmup + cosine, the paper recipes need (docs/recipes.md):
- gradient clipping by global norm, per tensor (DINO / iBOT `utils.clip_gradients`) or per
  module (DINOv2 clips backbone and each head separately), `grad_clip_mode`;
- a cosine weight-decay schedule (DINO, iBOT, I-JEPA: 0.04 -> 0.4), `weight_decay_end`;
- layer-wise LR decay (BEiT / MAE fine-tuning, DINOv2) and per-group LR multipliers,
  `layer_decay` and `lr_multipliers`;
- parameters frozen for the first epochs the way PyTorch freezes them (`frozen_until`: DINO's
  last layer): no update, no weight decay, and optimizer state untouched until released;
- a linear decay schedule (BERT), warmup from a non-zero LR (I-JEPA's start LR), Adam's
  epsilon (`schedule`, `warmup_start_factor`, `eps`);
- which parameters are decayed (`decay_mask`: by rank, by rank and name as timm's
  `param_groups_weight_decay`, or all as MoCo v3 / SimSiam; `no_decay` regexes on top);
- groups whose LR stays at its peak while the rest decays (SimSiam's `--fix-pred-lr`,
  `constant_lr`).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw", "lars", "sgd")
SCALINGS = ("linear", "sqrt", "none")
SCHEDULES = ("cosine", "linear")
DECAY_MASKS = ("rank", "rank_no_bias", "all")


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay (and LARS trust-ratio adaptation).

  Biases and normalisation scales/offsets (every parameter of rank <= 1) are excluded, as in
  SimCLR (Chen et al. 2020, appendix B.1) and most ViT recipes.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def decay_mask_fn(optim_config: ml_collections.ConfigDict):
  """The `mask` callable for `optim.decay_mask` and `optim.no_decay`.

  'rank' (default): `decay_mask`. 'rank_no_bias': also exempts every leaf whose name ends in
  'bias' whatever its rank (timm `param_groups_weight_decay`, DINO `get_params_groups`: our
  fused attention biases are [heads, head_dim]). 'all': every parameter (MoCo v3's AdamW,
  SimSiam's SGD). Leaves matching a `no_decay` regex are exempt in every mode.
  """
  mode = optim_config.get("decay_mask", "rank")
  if mode not in DECAY_MASKS:
    raise ValueError(f"optim.decay_mask={mode!r}; choose one of {DECAY_MASKS}.")
  exempt = _compile_patterns(optim_config.get("no_decay", ()), "optim.no_decay")
  if mode == "rank" and not exempt:
    return decay_mask

  def decayed(name: str, p) -> bool:
    if any(c.search(name) for c in exempt):
      return False
    if mode == "all":
      return True
    return p.ndim > 1 and not (mode == "rank_no_bias" and name.rsplit("/", 1)[-1].endswith("bias"))

  return lambda params: jax.tree.map(decayed, _path_names(params), params)


def _path_names(params: Any) -> Any:
  """The '/'-joined key path of every leaf, e.g. 'encoder/embedding/kernel'."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"), params
  )


def _compile_patterns(patterns, key: str = "optim.frozen") -> list[re.Pattern]:
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f"{key}: {pattern!r} is not a regular expression ({e}).") from e
  return compiled


def frozen_mask(patterns, params: Any) -> Any:
  """True for parameters whose path matches one of the regexes in `patterns` (re.search)."""
  compiled = _compile_patterns(patterns)
  return jax.tree.map(lambda name: any(c.search(name) for c in compiled), _path_names(params))


CLIP_MODES = ("global", "per_tensor", "per_module")
_TORCH_CLIP_EPS = (
  1e-6  # torch.nn.utils.clip_grad_norm_ and DINO's clip_gradients divide by norm + 1e-6
)


def _clip_coefficient(norm, max_norm):
  return jnp.minimum(1.0, max_norm / (norm + _TORCH_CLIP_EPS))


def clip_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Each gradient tensor scaled to L2 norm <= max_norm on its own (DINO `utils.clip_gradients`:
  clip_coef = max_norm / (||g|| + 1e-6), applied when < 1)."""

  def update(updates, state, params=None):
    del params
    return (
      jax.tree.map(lambda g: g * _clip_coefficient(optax.tree.norm(g), max_norm), updates),
      state,
    )

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def module_of(path: str, depth: int) -> str:
  """The module a parameter belongs to for per-module clipping: its first `depth` path parts."""
  return "/".join(path.split("/")[:depth])


def clip_per_module(max_norm: float, depth: int) -> optax.GradientTransformation:
  """`torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)` once per module (DINOv2
  `SSLMetaArch`: backbone, dino_head and ibot_head each): the modules are the distinct first
  `depth` components of the parameter paths (e.g. 'student/encoder')."""

  def update(updates, state, params=None):
    del params
    modules = [module_of(n, depth) for n in jax.tree.leaves(_path_names(updates))]
    leaves = jax.tree.leaves(updates)
    coef = {}
    for group in sorted(set(modules)):
      squares = [
        jnp.sum(jnp.square(g.astype(jnp.float32))) for g, m in zip(leaves, modules) if m == group
      ]
      coef[group] = _clip_coefficient(jnp.sqrt(sum(squares)), max_norm)
    treedef = jax.tree.structure(updates)
    clipped = [(g * coef[m]).astype(g.dtype) for g, m in zip(leaves, modules)]
    return jax.tree.unflatten(treedef, clipped), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


_BLOCK = re.compile(r"(?:^|/)block_(\d+)(?:/|$)")
_STAGE = re.compile(r"(?:^|/)stage(\d+)_block\d+(?:/|$)")
# Parameters that sit below the first block: the layer-0 group of BEiT's get_layer_id_for_vit
# (patch embedding, [cls], [mask], position embedding) and the ResNet stem.
_EMBEDDING = re.compile(
  r"(?:^|/)(embedding|pos_embedding|cls|mask_token|mask_embedding|stem_conv|stem_bn)(?:/|$)"
)


def layer_ids(names: list[str]) -> tuple[list[int | None], int]:
  """(layer id of each path, number of layers L+1) for layer-wise LR decay.

  ViT: embeddings 0, `block_i` i+1, everything else of the scope (final norm, heads) L+1 (BEiT
  `get_layer_id_for_vit`, MAE `util/lr_decay.py`). ResNet: stem 0, stage s s+1, rest L+1 with
  L the number of stages. Paths are those already inside `layer_decay_scope`.
  """
  blocks = [_BLOCK.search(n) for n in names]
  stages = [_STAGE.search(n) for n in names]
  found = [m for m in blocks + stages if m]
  depth = 1 + max((int(m.group(1)) for m in found), default=-1)
  ids = []
  for name, block, stage in zip(names, blocks, stages):
    if block or stage:
      ids.append(int((block or stage).group(1)) + 1)
    elif _EMBEDDING.search(name):
      ids.append(0)
    else:
      ids.append(depth + 1)
  return ids, depth + 1


def lr_multipliers(optim_config: ml_collections.ConfigDict, params: Any) -> Any:
  """Per-parameter LR factor: layer decay^(L+1 - layer id) inside `layer_decay_scope`, times
  every `lr_multipliers` (regex, factor) whose regex matches the path (e.g. DINOv2's
  patch_embed_lr_mult 0.2)."""
  names = _path_names(params)
  flat, treedef = jax.tree.flatten(names)
  factors = [1.0] * len(flat)
  decay = float(optim_config.get("layer_decay", 1.0))
  if decay != 1.0:
    scope = re.compile(optim_config.get("layer_decay_scope", "encoder"))
    inside = [i for i, n in enumerate(flat) if scope.search(n)]
    ids, num_layers = layer_ids([flat[i] for i in inside])
    for i, layer in zip(inside, ids):
      factors[i] *= decay ** (num_layers - layer)
  for pattern, factor in optim_config.get("lr_multipliers", ()):
    compiled = _compile_patterns([pattern], "optim.lr_multipliers")[0]
    for i, n in enumerate(flat):
      if compiled.search(n):
        factors[i] *= float(factor)
  return jax.tree.unflatten(treedef, factors)


def scale_by_multipliers(optim_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Updates times `lr_multipliers(...)`: the same as a per-group learning rate, since every
  optimizer here is linear in its learning rate (a constant factor commutes with momentum)."""

  def update(updates, state, params=None):
    del params
    factors = lr_multipliers(optim_config, updates)
    return jax.tree.map(lambda u, f: u if f == 1.0 else u * f, updates, factors), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


class HoldState(NamedTuple):
  count: jax.Array  # steps seen, frozen ones included
  inner: Any


def hold_until(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
  """`inner` that starts at step `steps`: before it, zero updates and `inner`'s state untouched
  (PyTorch's `p.grad = None`: no update, no weight decay, no moment or step-count change).
  `inner` sees its own count from 0 at release, so give it schedules shifted by `steps`."""

  def init(params):
    return HoldState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    held = state.count < steps
    kept = jax.tree.map(lambda new, old: jnp.where(held, old, new), new_inner, state.inner)
    out = jax.tree.map(lambda u: jnp.where(held, jnp.zeros_like(u), u), new_updates)
    return out, HoldState(optax.safe_increment(state.count), kept)

  return optax.GradientTransformation(init, update)


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
  """Linear warmup from `warmup_start_factor` x peak to the peak, then decay to
  `end_lr_factor` x peak at `total_steps`: cosine over the steps after warmup, or linear as
  BERT's `optimization.create_optimizer` (a power-1 polynomial decay counted from step 0, which
  the warmup replaces for its first steps: peak x (1 - t / T) afterwards, not 1 at the end of
  warmup)."""
  peak = peak_learning_rate(optim_config, global_batch_size)
  warmup = min(int(optim_config.warmup_steps), max(total_steps - 1, 0))
  start = peak * optim_config.get("warmup_start_factor", 0.0)
  end = peak * optim_config.end_lr_factor
  kind = optim_config.get("schedule", "cosine")
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=start,
      peak_value=peak,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=end,
    )
  if kind == "linear":
    steps = max(total_steps, 1)
    return optax.join_schedules(
      [
        optax.linear_schedule(start, peak, warmup),
        lambda t: end + (peak - end) * (1.0 - jnp.minimum(t + warmup, steps) / steps),
      ],
      [warmup],
    )
  raise ValueError(f"optim.schedule={kind!r}; choose one of {SCHEDULES}.")


def weight_decay_schedule(optim_config: ml_collections.ConfigDict, total_steps: int | None):
  """`weight_decay`, constant; or, with `weight_decay_end` set, DINO's `cosine_scheduler` from it
  to `weight_decay_end` over the run: end + (wd - end) (1 + cos(pi t / T)) / 2."""
  start, end = optim_config.weight_decay, optim_config.get("weight_decay_end")
  if end is None:
    return start
  if not total_steps:
    raise ValueError("optim.weight_decay_end needs the run's length: pass total_steps.")

  def schedule(count):
    t = jnp.minimum(count, total_steps).astype(jnp.float32)
    return end + 0.5 * (start - end) * (1.0 + jnp.cos(jnp.pi * t / total_steps))

  return schedule


def _shifted(schedule, steps: int):
  """`schedule` read `steps` later: what a transform whose count starts at `steps` must see."""
  return (lambda count: schedule(count + steps)) if callable(schedule) else schedule


def _optimizer(optim_config, learning_rate, weight_decay) -> optax.GradientTransformation:
  """AdamW, LARS or SGD with momentum at `learning_rate` / `weight_decay` (floats or schedules)."""
  name = optim_config.name
  decayed = decay_mask_fn(optim_config)
  if name == "adamw":
    tx = optax.adamw(
      learning_rate,
      b1=optim_config.b1,
      b2=optim_config.b2,
      eps=optim_config.get("eps", 1e-8),
      weight_decay=weight_decay,
      mask=decayed,
    )
  elif name == "lars":
    # You et al. 2017; optax applies decay then the trust ratio ||w|| / ||g + wd w||, both on
    # the decayed parameters (SimCLR / BYOL `exclude_from_weight_decay` and from adaptation).
    tx = optax.lars(
      learning_rate,
      weight_decay=weight_decay,
      weight_decay_mask=decayed,
      trust_ratio_mask=decayed,
      momentum=optim_config.momentum,
    )
  elif name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decayed),
      optax.sgd(learning_rate, momentum=optim_config.momentum),
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
  return tx


def frozen_until_steps(optim_config, steps_per_epoch: float | None) -> list[tuple[str, int]]:
  """`optim.frozen_until` as (regex, steps): epochs rounded up to whole steps, as the trainer
  rounds a run's length."""
  entries = [tuple(e) for e in optim_config.get("frozen_until", ())]
  if not entries:
    return []
  if steps_per_epoch is None:
    raise ValueError("optim.frozen_until is in epochs: pass steps_per_epoch.")
  for entry in entries:
    if len(entry) != 2 or not isinstance(entry[0], str) or not float(entry[1]) >= 0:
      raise ValueError(
        f"optim.frozen_until entry {entry!r}: give (regex of parameter paths, epochs >= 0)."
      )
  _compile_patterns([p for p, _ in entries], "optim.frozen_until")
  return [(p, math.ceil(float(e) * steps_per_epoch - 1e-9)) for p, e in entries]


def make_optimizer(
  optim_config: ml_collections.ConfigDict,
  schedule: optax.Schedule,
  *,
  total_steps: int | None = None,
  steps_per_epoch: float | None = None,
  peak_lr: float | None = None,
) -> optax.GradientTransformation:
  """AdamW, LARS or SGD with momentum, and the recipe features of the module docstring.

  `optim.norm_bias_lr_factor` scales the learning rate of biases and normalisation parameters
  (rank <= 1); `optim.frozen` lists regexes of parameter paths ('encoder/embedding/kernel') that
  are never updated, `optim.frozen_until` (regex, epochs) pairs frozen for their first epochs.
  `total_steps` (the run's length) is needed by `weight_decay_end`, `steps_per_epoch` by
  `frozen_until`, `peak_lr` by `constant_lr`.
  """
  if optim_config.get("constant_lr", ()) and peak_lr is None:
    raise ValueError("optim.constant_lr holds groups at the peak LR: pass peak_lr.")
  weight_decay = weight_decay_schedule(optim_config, total_steps)
  held = frozen_until_steps(optim_config, steps_per_epoch)
  constant = _compile_patterns(optim_config.get("constant_lr", ()), "optim.constant_lr")
  if held or constant:
    # A group per entry with its own optimizer state, held until its step: PyTorch keeps Adam's
    # step count per parameter, so a released group starts its bias correction from 1, while
    # the learning-rate and weight-decay schedules stay those of the global step.
    patterns = [re.compile(p) for p, _ in held]

    def label(name):
      held_at = next((f"until_{i}" for i, c in enumerate(patterns) if c.search(name)), None)
      if held_at:
        return held_at
      return "constant" if any(c.search(name) for c in constant) else "trained"

    transforms = {"trained": _optimizer(optim_config, schedule, weight_decay)}
    for i, (_, steps) in enumerate(held):
      inner = _optimizer(optim_config, _shifted(schedule, steps), _shifted(weight_decay, steps))
      transforms[f"until_{i}"] = hold_until(inner, steps)
    if constant:
      # SimSiam `--fix-pred-lr`: the predictor keeps the initial (peak) LR the whole run.
      transforms["constant"] = _optimizer(optim_config, peak_lr, weight_decay)
    tx = optax.multi_transform(transforms, lambda p: jax.tree.map(label, _path_names(p)))
  else:
    tx = _optimizer(optim_config, schedule, weight_decay)
  if optim_config.get("layer_decay", 1.0) != 1.0 or optim_config.get("lr_multipliers", ()):
    tx = optax.chain(tx, scale_by_multipliers(optim_config))
  if optim_config.grad_clip_norm:
    mode = optim_config.get("grad_clip_mode", "global")
    if mode == "global":
      clip = optax.clip_by_global_norm(optim_config.grad_clip_norm)
    elif mode == "per_tensor":
      clip = clip_per_tensor(optim_config.grad_clip_norm)
    elif mode == "per_module":
      clip = clip_per_module(optim_config.grad_clip_norm, optim_config.get("grad_clip_depth", 2))
    else:
      raise ValueError(f"optim.grad_clip_mode={mode!r}; choose one of {CLIP_MODES}.")
    tx = optax.chain(clip, tx)
  if optim_config.frozen:
    # Frozen parameters (e.g. MoCo v3's random patch projection) get exactly zero updates and no
    # optimizer state; clipping sees only the trained ones.
    patterns = tuple(optim_config.frozen)
    _compile_patterns(patterns)  # a bad pattern fails here, before any init or compile
    tx = optax.multi_transform(
      {"trained": tx, "frozen": optax.set_to_zero()},
      lambda p: jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(patterns, p)),
    )
  return tx


def build(
  config: ml_collections.ConfigDict, total_steps: int, num_train_examples: int | None = None
) -> tuple[optax.Schedule, optax.GradientTransformation]:
  """(learning-rate schedule, optimizer) of a run of `total_steps` steps over a train split of
  `num_train_examples` (needed only for epoch-counted settings such as `frozen_until`)."""
  schedule = make_schedule(config.optim, config.batch_size, total_steps)
  per_epoch = num_train_examples / config.batch_size if num_train_examples else None
  tx = make_optimizer(
    config.optim,
    schedule,
    total_steps=total_steps,
    steps_per_epoch=per_epoch,
    peak_lr=peak_learning_rate(config.optim, config.batch_size),
  )
  return schedule, tx
