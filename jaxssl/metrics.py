"""Scalar metrics to stdout, `<dir>/metrics.jsonl` and TensorBoard, plus a progress/ETA line.

Only process 0 writes; every other process gets a writer that does nothing, so call sites
need no `if jax.process_index() == 0`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
import jax
import numpy as np


def _to_float(v: Any) -> float:
  return float(np.asarray(v))


class MetricWriter:
  """Appends one JSON row per call and mirrors scalars to TensorBoard event files."""

  def __init__(self, logdir: str, *, jsonl_name: str = "metrics.jsonl", tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.logdir = logdir
    self._tb = None
    if not self.active:
      return
    os.makedirs(logdir, exist_ok=True)
    self._jsonl = open(os.path.join(logdir, jsonl_name), "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(logdir=os.path.join(logdir, "tensorboard"), flush_secs=10)

  def write(self, step: int, scalars: Mapping[str, Any], **extra: Any) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _to_float(v) for k, v in scalars.items()}, **extra}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, _to_float(v), int(step))

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Steps/s, examples/s and ETA from wall time between reports (compile time excluded
  after the first report)."""

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int = 0):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    dt = max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    step_time = dt / steps
    return {
      "perf/step_time_s": step_time,
      "perf/examples_per_s": self.global_batch_size / step_time,
      "perf/eta_s": step_time * max(self.total_steps - step, 0),
    }

  def line(self, step: int, scalars: Mapping[str, Any]) -> str:
    eta = scalars.get("perf/eta_s", math.nan)
    eta_txt = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    shown = " ".join(
      f"{k.split('/', 1)[-1]}={_to_float(v):.4g}"
      for k, v in scalars.items()
      if k.startswith("train/") and k.count("/") == 1
    )
    pct = 100.0 * step / max(self.total_steps, 1)
    return (
      f"[{step}/{self.total_steps} {pct:5.1f}%] {shown} "
      f"| {_to_float(scalars.get('perf/examples_per_s', 0)):.0f} ex/s | ETA {eta_txt}"
    )


def log_progress(progress: Progress, step: int, scalars: Mapping[str, Any]) -> None:
  if jax.process_index() == 0:
    logging.info("%s", progress.line(step, scalars))


class _LibraryInfoFilter:
  """Drops INFO/DEBUG records logged from inside Orbax/Grain/TFDS (they log every file
  write); their warnings and errors still show."""

  _NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/etils/")

  def filter(self, record) -> bool:
    import logging as std_logging  # pylint: disable=g-import-not-at-top

    if "OpenCV is not installed" in str(record.msg):
      return False  # TFDS falls back to PIL, which is all we need for PNG decoding.
    return record.levelno >= std_logging.WARNING or not any(
      part in record.pathname for part in self._NOISY
    )


def quiet_library_logs() -> None:
  """Keeps stdout readable: progress lines, not checkpoint-library chatter."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tfds.disable_progress_bar()
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
