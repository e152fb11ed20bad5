"""Shared config pieces: the base ConfigDict every method config extends, durations, checks.

Method configs live in `configs/<method>.py` (outside the package, big_vision style) and build
on `base_config()`; everything is locked, so a misspelt key fails instead of being ignored.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Sequence

import ml_collections
from ml_collections import config_dict

from jaxssl import errors


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every method; `configs/<method>.py` fills in and overrides."""
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  c.batch_size = 256  # global, over all hosts and devices
  # Duration: exactly one of these (see `total_steps`).
  c.total_steps = config_dict.placeholder(int)
  c.total_epochs = config_dict.placeholder(float)
  c.total_examples = config_dict.placeholder(int)
  c.log_every_steps = 20
  # NaN/inf loss or gradient: 'stop' (error naming the step and last good checkpoint) or
  # 'skip' (the jitted step drops that update; see jaxssl/step.py).
  c.nan_policy = "stop"

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist5k"
  c.data.split = "train"
  c.data.data_dir = config_dict.placeholder(str)  # default: $JAXSSL_DATA_DIR or ~/.cache
  c.data.worker_count = 0  # Grain worker processes (0 = in the main process)
  c.data.image_size = 28

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.base_lr = 1e-3  # at batch 256; scaled by lr_scaling
  c.optim.lr_scaling = "linear"
  c.optim.warmup_steps = 100
  c.optim.end_lr_factor = 0.0
  c.optim.weight_decay = 0.05
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8  # AdamW epsilon (BERT, CLIP: 1e-6)
  c.optim.schedule = "cosine"  # or 'linear' (BERT): decay after warmup to end_lr_factor x peak
  c.optim.warmup_start_factor = 0.0  # warmup starts at this x peak (I-JEPA: 0.2)
  c.optim.decay_mask = "rank"  # or 'rank_no_bias' (timm / DINO groups), 'all' (MoCo v3, SimSiam)
  c.optim.no_decay = ()  # regexes of parameter paths never decayed, e.g. (r"pos_embedding",)
  c.optim.constant_lr = ()  # regexes of groups kept at the peak LR (SimSiam --fix-pred-lr)
  c.optim.momentum = 0.9
  c.optim.grad_clip_norm = 0.0
  c.optim.grad_clip_mode = "global"  # or 'per_tensor' (DINO, iBOT), 'per_module' (DINOv2)
  c.optim.grad_clip_depth = 2  # per_module: a module is the first N parts of a parameter path
  c.optim.weight_decay_end = config_dict.placeholder(float)  # cosine wd -> this over the run
  c.optim.layer_decay = 1.0  # LR x layer_decay^(L+1 - layer) inside layer_decay_scope
  c.optim.layer_decay_scope = "encoder"  # regex of the parameter paths layer decay applies to
  c.optim.lr_multipliers = ()  # (regex, factor) pairs, e.g. ((r"encoder/embedding/", 0.2),)
  c.optim.frozen_until = ()  # (regex, epochs) pairs: no update, state untouched until then
  c.optim.norm_bias_lr_factor = 1.0  # lr of biases / norm params relative to the weights'
  c.optim.frozen = ()  # regexes of parameter paths never updated, e.g. ('embedding',)

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.sharding_rules = "fsdp"  # a preset of jaxssl.parallel.RULES or explicit pairs

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.max_to_keep = 3
  c.checkpoint.keep_every = config_dict.placeholder(int)
  c.checkpoint.async_save = True
  return c


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """The run's length in steps from whichever of steps / epochs / examples is set."""
  given = {
    k: config[k] for k in ("total_steps", "total_epochs", "total_examples") if config[k] is not None
  }
  if len(given) != 1:
    raise ValueError(
      "Set exactly one of config.total_steps, config.total_epochs, config.total_examples; "
      f"got {given or 'none'}."
    )
  ((key, value),) = given.items()
  if not value > 0:
    raise ValueError(f"config.{key}={value}: a run needs a positive duration; set it above 0.")
  if key == "total_steps":
    return int(value)
  examples = value * num_train_examples if key == "total_epochs" else value
  return max(1, math.ceil(examples / config.batch_size))


def load_config_module(path: str, name: str = "_jaxssl_config"):
  """The config file at `path` as a module: configs are files, not a package, so a config that
  builds on another (siglip.py on clip.py, ibot.py on dino.py) loads it by path too."""
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None or not os.path.isfile(path):
    raise errors.ConfigError(
      f"Config file {path!r} not found; pass --config=configs/<method>.py"
      "[:preset] (the methods are the files in configs/)."
    )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path_and_arg: str) -> ml_collections.ConfigDict:
  """Loads `configs/x.py[:arg]` the way `config_flags` does (used for error messages/tests)."""
  path, _, arg = path_and_arg.partition(":")
  module = load_config_module(path)
  return module.get_config(arg) if arg else module.get_config()


def check_overrides(argv: Sequence[str], flag_name: str = "config") -> None:
  """Fails with one clear line for `--config.x.y=...` naming a key the config lacks.

  `config_flags` would raise a bare KeyError/AttributeError deep inside flag parsing; this
  runs first and lists the valid keys at that level.
  """
  # The last one, as absl's flag parsing takes the last of a repeated flag.
  file_arg = next(
    (a.split("=", 1)[1] for a in reversed(argv) if a.startswith(f"--{flag_name}=")), None
  )
  if file_arg is None:
    return
  try:
    config = load_config_file(file_arg)
  except ValueError as e:  # an unknown preset: the config file's own one-line message
    raise errors.ConfigError(f"{file_arg}: {e}") from e
  for a in argv:
    m = re.match(rf"--{flag_name}\.([\w.]+)(=|$)", a)
    if not m:
      continue
    node, walked = config, []
    for key in m.group(1).split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        where = "config" + "".join(f".{w}" for w in walked)
        raise errors.ConfigError(
          f"Unknown config key {where}.{key} (from {a!r}); valid keys "
          f"in {where}: {', '.join(valid)}."
        )
      node, walked = node[key], walked + [key]


# Backbones by short name; `image_size` lets small-image presets pick a sensible patch size.
BACKBONES = {
  # Tests: two blocks, width 32.
  "vit_test": dict(
    name="vit", width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=2, pool="gap"
  ),
  # CPU default for 28x28 digits/clothes: 16 tokens of 7x7, width 128, 4 blocks (~0.8M).
  "vit_mnist": dict(
    name="vit", width=128, depth=4, mlp_dim=256, num_heads=4, patch_size=7, pool="gap"
  ),
  "vit_mu4": dict(name="vit", variant="mu/4", pool="gap"),
  "vit_ti16": dict(name="vit", variant="Ti/16", pool="gap"),
  "vit_s16": dict(name="vit", variant="S/16", pool="gap"),
  "vit_b16": dict(name="vit", variant="B/16", pool="gap"),
  "resnet18_small": dict(name="resnet", depth=18, stem="cifar", width=16),
  "resnet18": dict(name="resnet", depth=18, stem="cifar", width=64),
  "resnet50": dict(name="resnet", depth=50, stem="imagenet", width=64),
}


def backbone(name: str, *, image_size: int) -> ml_collections.ConfigDict:
  """The `config.model` section for backbone `name` (see BACKBONES)."""
  if name not in BACKBONES:
    raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
  spec = dict(BACKBONES[name])
  # Mixed precision switch: 'bfloat16' runs convolutions, matmuls and activations of the
  # encoder, heads and decoders in bfloat16 while parameters, optimizer state and BatchNorm
  # statistics stay float32 (master weights, cast per layer); normalisation statistics,
  # attention softmax, pooled outputs and every loss compute in float32. E.g.
  # `--config.model.dtype=bfloat16`.
  spec.setdefault("dtype", "float32")
  if spec.get("patch_size") and image_size % spec["patch_size"]:
    raise ValueError(
      f"Backbone {name!r} has patch size {spec['patch_size']}, which does not "
      f"divide data.image_size={image_size}; pick another backbone or size."
    )
  return ml_collections.ConfigDict(spec)


def _simclr_jitter(strength):
  from jaxssl.data import device_augment  # pylint: disable=g-import-not-at-top

  return device_augment.simclr_jitter(strength)


def simclr_augment(
  *, crop_scale=(0.2, 1.0), flip_prob=0.5, blur_prob=0.5, jitter_strength=0.5, jitter_prob=0.8
) -> ml_collections.ConfigDict:
  """SimCLR augmentation settings (Chen et al. 2020, appendix A), grayscale-appropriate; colour
  distortion strength s gives `jitter` = (0.8 s, 0.8 s, 0.8 s, 0.2 s) (brightness, contrast,
  saturation, hue maxima; `augment.color_jitter`).

  `placement` ('auto' | 'host' | 'device'): where flip, colour, grayscale, blur and solarize
  run (jaxssl/data/device_augment.py); 'auto' is 'device' on GPU/TPU, 'host' on CPU.
  """
  return ml_collections.ConfigDict(
    dict(
      crop_scale=tuple(crop_scale),
      flip_prob=flip_prob,
      blur_prob=blur_prob,
      jitter=_simclr_jitter(jitter_strength),
      brightness_mode="scale",
      jitter_prob=jitter_prob,
      placement="auto",
    )
  )


def run_app(main, define_flags) -> None:
  """Runs an absl entry point: clear errors for unknown `--config.*` keys first, then the
  flags (defined only now, so several entry-point modules can be imported together).

  A `jaxssl.errors.UserError` from anywhere in `main` prints its one line (`kind: message`) on
  stderr and exits 1; any other exception keeps its traceback.
  """
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top

  try:
    check_overrides(sys.argv)
    define_flags()
    app.run(main)
  except errors.UserError as e:
    sys.exit(f"{e.kind}: {e}")


def byol_augment(
  *, crop_scale=(0.2, 1.0), flip_prob=0.5, brightness_mode="scale"
) -> ml_collections.ConfigDict:
  """BYOL's asymmetric view pair (Grill et al. 2020, table 6), also used by MoCo v3, VICReg and
  Barlow Twins: blur and solarize probabilities are (view 1, view 2) = (1.0, 0.1), (0.0, 0.2);
  colour jitter (0.4, 0.4, 0.2, 0.1) in all four official codes (BYOL `augmentations.py`,
  MoCo v3 `main_moco.py`, VICReg `augmentations.py`, Barlow Twins `main.py`). BYOL's brightness
  is additive (`brightness_mode='add'`), the torchvision ones multiplicative ('scale')."""
  return ml_collections.ConfigDict(
    dict(
      crop_scale=tuple(crop_scale),
      flip_prob=flip_prob,
      jitter=(0.4, 0.4, 0.2, 0.1),
      brightness_mode=brightness_mode,
      jitter_prob=0.8,
      blur_prob=(1.0, 0.1),
      solarize_prob=(0.0, 0.2),
      placement="auto",  # as simclr_augment
    )
  )


def fashion_mnist_preset(c: ml_collections.ConfigDict, backbone: str = "") -> str:
  """Applies the run settings the methods' `fashion_mnist` presets share (the CPU benchmark:
  batch 256, 10 epochs, one Grain worker); returns `backbone` or the default ViT."""
  c.data.name = "fashion_mnist"
  c.data.worker_count = 1
  c.batch_size = 256
  c.total_epochs = 10.0
  c.optim.warmup_steps = 200
  c.log_every_steps = 100
  c.checkpoint.every_steps = 500
  return backbone or "vit_mnist"


def text_transformer(
  *,
  vocab_size: int,
  max_len: int,
  width: int,
  depth: int,
  num_heads: int,
  mlp_dim: int,
  dropout: float = 0.0,
) -> ml_collections.ConfigDict:
  """The `config.model` section of a text Transformer (configs/gpt.py, configs/mlm.py)."""
  return ml_collections.ConfigDict(
    dict(
      name="transformer",
      vocab_size=vocab_size,
      max_len=max_len,
      width=width,
      depth=depth,
      num_heads=num_heads,
      mlp_dim=mlp_dim,
      posemb="learn",
      tie_embeddings=True,
      dropout=dropout,
      dtype="float32",
    )
  )


def tiny_test_preset(c: ml_collections.ConfigDict, backbone: str = "") -> str:
  """Applies the run settings every method's `test` preset shares (8x8 digits, batch 16,
  6 steps, synchronous checkpoints every 3 steps); returns `backbone` or the test default."""
  c.data.name = "digits"
  c.data.image_size = 8
  c.batch_size = 16
  c.total_steps = 6
  c.optim.warmup_steps = 2
  c.log_every_steps = 2
  c.checkpoint.every_steps = 3
  c.checkpoint.async_save = False
  return backbone or "vit_test"
