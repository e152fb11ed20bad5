"""Surviving faults in the trainer: preemption signals and non-finite losses.

* SIGTERM (what TPU/GCE preemption and SLURM send) or SIGINT (Ctrl-C) does not kill the run:
  `StopRequest` records it and the trainer checkpoints at the next step boundary, waits for
  the write, and returns. In a multi-process job every host must stop at the SAME step (they
  all take part in the save), so there JAX's preemption sync service decides instead
  (`multihost_utils.reached_preemption_sync_point`): it hears SIGTERM on any host and picks
  the first step all hosts have not yet passed.
* A NaN/inf loss stops the run with `NonFiniteLossError`, naming the step and the newest
  checkpoint (which the trainer only writes after checking that step), or, with
  config.nan_policy='skip', the jitted step itself drops the update (see `step.train_step`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


class NonFiniteLossError(FloatingPointError):
  """The loss or a gradient became NaN/inf with config.nan_policy='stop'."""


class StopRequest:
  """Context manager: turns SIGTERM/SIGINT into `should_stop(step) == True`.

  Single-process only installs Python handlers (restored on exit, so tests and notebooks that
  call `train()` keep their own). A second signal of the same kind restores the default
  action, so a second Ctrl-C still kills a run that hangs.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: str | None = None
    self._previous: dict[int, Any] = {}
    # JAX's sync service owns SIGTERM in multi-process jobs; a Python handler would replace
    # its notifier.
    self._multiprocess = jax.process_count() > 1

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signal.Signals(signum).name
    logging.warning(
      "%s received: checkpointing at the next step boundary, then exiting "
      "(send it again to exit at once).",
      self.received,
    )
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def __enter__(self) -> "StopRequest":
    if self._multiprocess or threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def should_stop(self, step: int) -> bool:
    """Called once per step by every process, with the same `step`."""
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = "preemption notice"
        return True
      return False
    return self.received is not None


class NonFiniteGuard:
  """Checks the step's `train/nonfinite` flag one step late, so reading it never stalls the
  device (the next step is already queued when the host blocks on the previous flag).

  `check_pending()` must run before anything persists the state (checkpoints).
  """

  def __init__(self, checkpointer, enabled: bool):
    self._checkpointer = checkpointer
    self._enabled = enabled
    self._pending: tuple[int, jax.Array, jax.Array] | None = None

  def push(self, step: int, metrics: dict[str, jax.Array]) -> None:
    if not self._enabled:
      return
    previous, self._pending = (
      self._pending,
      (step, metrics["train/nonfinite"], metrics["train/loss"]),
    )
    if previous is not None:
      self._check(*previous)

  def check_pending(self) -> None:
    if self._enabled and self._pending is not None:
      pending, self._pending = self._pending, None
      self._check(*pending)

  def _check(self, step: int, flag: jax.Array, loss: jax.Array) -> None:
    if not float(np.asarray(jax.device_get(flag))):
      return
    self._checkpointer.wait()
    last = self._checkpointer.latest_step()
    where = (
      f"the last good checkpoint is step {last} in {self._checkpointer.directory} "
      "(re-running the same command resumes there)"
      if last is not None
      else "there is no checkpoint yet"
    )
    raise NonFiniteLossError(
      f"Non-finite loss or gradient at step {step} (loss={float(jax.device_get(loss))}); "
      f"{where}. Lower the learning rate, or set config.nan_policy='skip' to drop such "
      "updates."
    )
