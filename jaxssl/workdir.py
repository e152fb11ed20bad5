"""A workdir's record of its run, `<workdir>/config.json`, and the check that keeps it true.

A workdir holds one run. Re-running the trainer there resumes that run, so before anything in
the workdir is written the new config is compared with the recorded one (`check`):
- keys that may change on resume (RESUMABLE: duration, logging and checkpoint cadence, data
  workers and directory, mesh and sharding rules, NaN policy, augmentation placement) are
  allowed; once training starts
  they are logged, appended to `config_changes.jsonl` and written to `config.json` (`record`),
  so the record always describes what the checkpoints were trained with;
- any other difference (method, model, optimizer, data, augmentations, batch size, seed, ...)
  stops the run with one line naming the keys and both values, and nothing is written.
The mesh and sharding rules are layout, not maths (tests/test_sharding_invariance.py), and
checkpoints restore onto any mesh, so a run may resume on another slice; `augment.placement`
says where the same augmentation distributions are drawn (tests/data/test_device_augment.py),
and its 'auto' follows the mesh's platform, so it moves with the mesh. Duration changes move
the end of the learning-rate schedule; that is what a user extending a run asks for.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections

from jaxssl import errors
from jaxssl.data import device_augment

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
# Dotted config keys (a key and everything below it) that may differ from the recorded config
# when a run resumes; see the module docstring.
RESUMABLE = (
  "total_steps",
  "total_epochs",
  "total_examples",
  "log_every_steps",
  "checkpoint.every_steps",
  "checkpoint.max_to_keep",
  "checkpoint.keep_every",
  "checkpoint.async_save",
  "data.worker_count",
  "data.data_dir",
  "mesh",
  "sharding_rules",
  "nan_policy",
  "augment.placement",
)
# Keys added to the config after runs were recorded without them, with the value that gives
# the behaviour those runs had: a record that lacks one is read as holding that value, so
# upgrading jaxssl neither blocks resuming an old run nor changes what it computes.
ADDED_KEYS = {
  "optim.grad_clip_mode": "global",
  "optim.grad_clip_depth": 2,
  "optim.weight_decay_end": None,
  "optim.layer_decay": 1.0,
  "optim.layer_decay_scope": "encoder",
  "optim.lr_multipliers": [],
  "optim.frozen_until": [],
  "optim.eps": 1e-8,
  "optim.schedule": "cosine",
  "optim.warmup_start_factor": 0.0,
  "optim.decay_mask": "rank",
  "optim.no_decay": [],
  "optim.constant_lr": [],
}
# The same, for keys only some methods' configs have (a shared section such as `head` differs
# between methods): applied to a record whose `method` is the key here.
METHOD_ADDED_KEYS = {
  "simclr": {
    "simclr.directions": "mean",
    "head.final_bn": False,
    "head.final_bn_scale": False,
  },
  "byol": {
    "byol.directions": "mean",
    "head.final_bias": None,
    "byol.predictor.final_bias": None,
  },
  "moco_v3": {"moco_v3.predictor.final_bn": False},
  "barlow_twins": {"barlow_twins.loss_scale": 1.0},
  "ibot": {"ibot.koleo_group_size": 0},
  "vicreg": {"vicreg.variance_terms": "sum"},
  "gpt": {"model.init_scheme": "big_vision", "model.head_bias": True},
  "mlm": {"model.lm_transform": False},
  "data2vec": {
    "data2vec.masking": "random",
    "data2vec.num_masked": None,
    "data2vec.min_block": 16,
    "data2vec.target_norm": "instance",
    "data2vec.loss_reduction": "sqrt_dim",
  },
}
# Keys replaced by others: (section, old key) -> the new entries computed from the old value.
# A colour-distortion strength s became the four maxima SimCLR derives from it (and, where the
# view pair had a strength, the brightness form it always used).
RENAMED_KEYS = {
  ("augment", "jitter_strength"): lambda s: {
    "jitter": list(device_augment.simclr_jitter(s)),
    "brightness_mode": "scale",
  },
  ("crops", "jitter_strength"): lambda s: {"jitter": list(device_augment.simclr_jitter(s))},
}
_SHOWN_KEYS = 4  # differing keys named in the refusal before "and N more"


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def _as_plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as config.json holds it (JSON types: tuples read back as lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _read_plain(workdir: str) -> dict[str, Any] | None:
  """The recorded config as JSON data; None when the workdir has none."""
  path = config_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.WorkdirError(
      f"{path} is not valid JSON ({e}); it is this run's record: restore it from a copy, or "
      "use a new --workdir."
    ) from None
  if not isinstance(data, dict):
    raise errors.WorkdirError(
      f"{path} holds a {type(data).__name__}, not a config object; "
      "restore it from a copy, or use a new --workdir."
    )
  return data


def _with_added_keys(data: dict[str, Any]) -> dict[str, Any]:
  """The record with RENAMED_KEYS rewritten and every ADDED_KEYS (and its method's
  METHOD_ADDED_KEYS) key it lacks set to its old-behaviour value."""
  data = json.loads(json.dumps(data))
  for (section, old), new_entries in RENAMED_KEYS.items():
    node = data.get(section)
    if isinstance(node, dict) and old in node:
      node.update(new_entries(node.pop(old)))
  added = {**ADDED_KEYS, **METHOD_ADDED_KEYS.get(data.get("method"), {})}
  for key, value in added.items():
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf not in node:
      node[leaf] = value
  return data


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The recorded config of the run in `workdir`, as a ConfigDict (ADDED_KEYS filled in)."""
  data = _read_plain(workdir)
  if data is None:
    raise errors.WorkdirError(
      f"No {CONFIG_FILE} in {workdir!r}: is this a jaxssl training workdir? "
      "(`jaxssl-train --workdir=...` writes it when training starts.)"
    )
  return ml_collections.ConfigDict(_with_added_keys(data))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """Dotted key -> value for every non-dict value (lists stay whole, as config values)."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return flat


def differences(recorded: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """Dotted key -> (recorded value, new value) for each key whose value differs; a key that
  exists on one side only has the other side's value as the string '<absent>'."""
  old, now = _flatten(recorded), _flatten(new)
  return {
    k: (old.get(k, "<absent>"), now.get(k, "<absent>"))
    for k in sorted(set(old) | set(now))
    if old.get(k, "<absent>") != now.get(k, "<absent>")
  }


def is_resumable(key: str) -> bool:
  return any(key == r or key.startswith(r + ".") for r in RESUMABLE)


def check(workdir: str, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """Compares `config` with the workdir's record; writes nothing.

  Returns the allowed changes (empty for a new workdir or the same config). Raises
  WorkdirError, one line, when a key outside RESUMABLE differs or the record is unreadable.
  """
  recorded = _read_plain(workdir)
  if recorded is None:
    return {}
  changes = differences(_with_added_keys(recorded), _as_plain(config))
  # The method first: when it differs, it explains every other difference.
  refused = dict(
    sorted(
      ((k, v) for k, v in changes.items() if not is_resumable(k)), key=lambda kv: kv[0] != "method"
    )
  )
  if refused:
    shown = "; ".join(
      f"{k}: {old!r} there, {new!r} now" for k, (old, new) in list(refused.items())[:_SHOWN_KEYS]
    )
    more = f" (and {len(refused) - _SHOWN_KEYS} more)" if len(refused) > _SHOWN_KEYS else ""
    raise errors.WorkdirError(
      f"{workdir} holds a run with another config ({config_path(workdir)}): {shown}{more}. "
      "Nothing was changed. Use a new --workdir, or repeat the recorded values; only "
      "duration, logging/checkpoint cadence, data workers/dir, mesh, sharding rules, "
      "nan_policy and augment.placement may change on resume (jaxssl/workdir.py RESUMABLE)."
    )
  return changes


def record(
  workdir: str, config: ml_collections.ConfigDict, changes: dict[str, tuple[Any, Any]]
) -> None:
  """Writes config.json (process 0), after logging `changes` (from `check`) and appending them
  to config_changes.jsonl; the old file is replaced atomically."""
  if changes:
    logging.warning(
      "Resuming %s with changed settings: %s",
      workdir,
      ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()),
    )
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  if changes:
    with open(os.path.join(workdir, CHANGES_FILE), "a") as f:
      f.write(
        json.dumps({"time": time.time(), "changes": {k: list(v) for k, v in changes.items()}})
        + "\n"
      )
  path = config_path(workdir)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)
