"""Orbax checkpoints: train state + Grain iterator state per step.

Layout of a workdir:
  <workdir>/config.json                 the resolved config (jaxssl/workdir.py)
  <workdir>/input_spec.json             global shapes/dtypes of the model inputs
  <workdir>/checkpoints/<step>/state    TrainState (Orbax PyTree; restorable onto any mesh)
  <workdir>/checkpoints/<step>/data     Grain iterator state (one JSON file per process)
Saves are asynchronous (training continues while arrays are written); Orbax writes to a
temporary directory and renames on commit, so a reader never sees a half-written step (a run
killed mid-save leaves only a temporary directory, removed at the next start).

Restoring onto another mesh or process count: the state is restored straight onto the new
shardings. The Grain state is one file per process (`process_<i>-of-<n>.json`); when the
process count differs it cannot be used, and the iterator is instead moved to element
`step` (one local batch per step; the pipeline's global batch k is the same examples for any
process count), with a warning.

A step that fails to restore (truncated or corrupt files) is skipped, the previous one is
restored, and the unreadable ones are moved to `<workdir>/checkpoints_unreadable` (kept for
inspection; never deleted) so later saves of those steps do not collide; one warning says so.
A step whose arrays have other shapes than the config's model is not unreadable: it is another
model, and restoring stops with a CheckpointError instead (its metadata is compared first).
No pickle anywhere.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys
import types
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from jaxssl import errors

STATE, DATA = "state", "data"
# How many times a listing is retried when a step vanishes while being listed (see
# `_listing_retried`); each retry lists afresh, so only a trainer deleting faster than Orbax
# lists could exhaust it.
_LISTING_ATTEMPTS = 8


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def write_input_spec(workdir: str, batch_spec: dict[str, jax.ShapeDtypeStruct]) -> None:
  """Records the model inputs' global shapes, so the eval job can rebuild abstract params
  without running the training input pipeline."""
  if jax.process_index() != 0:
    return
  spec = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in batch_spec.items()}
  with open(os.path.join(workdir, "input_spec.json"), "w") as f:
    json.dump(spec, f, indent=2)


def read_input_spec(workdir: str) -> dict[str, jax.ShapeDtypeStruct]:
  path = os.path.join(workdir, "input_spec.json")
  try:
    with open(path) as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise errors.WorkdirError(
      f"No input_spec.json in {workdir!r}; the trainer writes it with "
      "config.json when training starts: re-run it there."
    ) from None
  except json.JSONDecodeError as e:
    raise errors.WorkdirError(
      f"{path} is not valid JSON ({e}); re-run the trainer in {workdir!r} to rewrite it."
    ) from None
  return {k: jax.ShapeDtypeStruct(tuple(v["shape"]), v["dtype"]) for k, v in spec.items()}


def tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/c' -> shape for every array-like leaf of `tree` (dicts, dataclasses, namedtuples
  and sequences alike, so a TrainState and Orbax's metadata of it give the same keys)."""

  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)

  return {
    "/".join(name(k) for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    if hasattr(leaf, "shape")
  }


def failure_summary(error: BaseException) -> str:
  """`Type: first line` of a restore failure, without TensorStore's multi-line spec dump."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text.split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {text[:300]}"


def is_read_leftover(unraisable) -> bool:
  """An error reported from an abandoned coroutine of a failed (async) Orbax read."""
  return isinstance(unraisable.object, types.CoroutineType) or "Event loop is closed" in str(
    unraisable.exc_value
  )


class _LeftoverFilter:
  """A `sys.unraisablehook` that drops `is_read_leftover` reports and passes on the rest."""

  def __init__(self, previous):
    self.previous = previous

  def __call__(self, unraisable):
    if not is_read_leftover(unraisable):
      self.previous(unraisable)


def silence_failed_read_leftovers() -> None:
  """Keeps what failed restores leave behind out of the output, from now on in this process.

  Orbax reads arrays in concurrent coroutines; when one read fails the others are abandoned,
  and Python reports each as it is collected, from Orbax's threads, seconds later ("Exception
  ignored in <coroutine ...>", "Event loop is closed"): a wall of tracebacks after the one
  failure the caller reports. They arrive after the restore has returned, so the filter stays
  installed; any other unraisable error still reaches the hook that was there before.
  """
  if not isinstance(sys.unraisablehook, _LeftoverFilter):
    sys.unraisablehook = _LeftoverFilter(sys.unraisablehook)
  # The same leftovers, when their task is collected instead of their coroutine, reach
  # asyncio's exception handler, which logs "Task (or Future) exception was never retrieved"
  # and a traceback.
  asyncio_logger = std_logging.getLogger("asyncio")
  if not any(isinstance(f, _AbandonedTaskFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_AbandonedTaskFilter())


class _AbandonedTaskFilter(std_logging.Filter):
  """Drops asyncio's report of a task or future whose exception nobody retrieved (a failed
  read's)."""

  def filter(self, record):
    return not str(record.msg).startswith(
      ("Task exception was never retrieved", "Future exception was never retrieved")
    )


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: Orbax restores straight onto them."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def read_state_numpy(workdir: str, step: int) -> Any:
  """The saved train state of `step` as a tree of host NumPy arrays, whatever mesh or process
  count saved it (for inspection and tests; the trainer restores onto its own shardings)."""
  path = epath.Path(checkpoint_dir(workdir)) / str(step) / STATE
  one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), metadata
    )
    return jax.tree.map(np.asarray, reader.restore(path, target))


def _listing_retried(list_steps):
  """Calls `list_steps` (an Orbax listing), again when a step directory vanished mid-listing.

  Orbax lists the step directories, then stats each one for its commit time; a trainer's
  retention policy deleting a step between the two (an eval job watching a live run) makes
  the stat raise FileNotFoundError. Listing afresh sees the directory as it now is.
  """
  for attempt in range(_LISTING_ATTEMPTS):
    try:
      return list_steps()
    except FileNotFoundError as e:
      if attempt == _LISTING_ATTEMPTS - 1:
        raise
      logging.info(
        "A checkpoint was deleted while its directory was listed (%s); listing again.", e
      )


class Checkpointer:
  """A thin owner of one `ocp.CheckpointManager` for a training run."""

  def __init__(
    self,
    workdir: str,
    *,
    max_to_keep: int | None = 3,
    keep_every: int | None = None,
    async_save: bool = True,
    read_only: bool = False,
  ):
    """Keeps the newest `max_to_keep` steps (None: all) plus every step that is a multiple of
    `keep_every`. `read_only` (the eval job, tests) never writes, deletes or cleans up."""
    policies = ocp.checkpoint_managers
    keep = [policies.LatestN(n=max_to_keep)]
    if keep_every:
      keep.append(policies.EveryNSteps(interval_steps=keep_every))
    # A read-only manager gets no save/keep options (Orbax would drop them with a warning).
    options = ocp.CheckpointManagerOptions(
      preservation_policy=None if read_only else policies.AnyPreservationPolicy(keep),
      save_interval_steps=0 if read_only else 1,
      create=not read_only,
      enable_async_checkpointing=async_save,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,
    )
    self.directory = checkpoint_dir(workdir)
    self.unreadable_directory = os.path.join(os.path.abspath(workdir), "checkpoints_unreadable")
    self.manager = _listing_retried(lambda: ocp.CheckpointManager(self.directory, options=options))

  def all_steps(self) -> list[int]:
    """The committed steps on disk now (listed afresh: another job may be saving/deleting)."""
    _listing_retried(self.manager.reload)
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None) -> None:
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def _data_state_file(self, step: int) -> epath.Path:
    return (
      epath.Path(self.directory)
      / str(step)
      / DATA
      / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    )

  def restore(
    self,
    step: int,
    abstract_state: Any,
    shardings: Any,
    data_iterator: grain.DatasetIterator | None,
  ) -> Any:
    """Restores the state (onto `shardings`) and, in place, the data iterator."""
    items = {STATE: ocp.args.StandardRestore(with_shardings(abstract_state, shardings))}
    fast_forward = False
    if data_iterator is not None:
      if self._data_state_file(step).exists():
        items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:
        fast_forward = True
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if fast_forward:
      logging.warning(
        "Checkpoint step %d has no data-iterator state for process %d of %d (it was saved "
        "with another process count); moving the input pipeline to batch %d instead, which "
        "continues the same global example order.",
        step,
        jax.process_index(),
        jax.process_count(),
        step,
      )
      grain.experimental.set_next_index(data_iterator, step)
    return restored[STATE]

  def saved_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """'path/to/array' -> shape of every array of step's train state, from its metadata."""
    # The item's handler, not a Checkpointer: that one looks for (and warns about) step-level
    # metadata in the item directory.
    handler = ocp.PyTreeCheckpointHandler()
    try:
      metadata = handler.metadata(epath.Path(self.directory) / str(step) / STATE)
    finally:
      handler.close()
    return tree_shapes(getattr(metadata, "item_metadata", None) or metadata)

  def check_same_model(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointError (one line) when step's arrays are not those of `abstract_state`.

    Runs before a restore, so another model's checkpoint is refused as such rather than
    mistaken for a corrupt one. Unreadable metadata raises its own error (a corrupt step).
    """
    saved, wanted = self.saved_shapes(step), tree_shapes(abstract_state)
    # Parameters first: they say what changed; optimizer moments only repeat them.
    differ = sorted(
      (k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)),
      key=lambda k: (not k.startswith("params/"), k),
    )
    if not differ:
      return
    shown = "; ".join(
      f"{k} is {saved.get(k, 'absent')} there, {wanted.get(k, 'absent')} here" for k in differ[:3]
    )
    more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
    raise errors.CheckpointError(
      f"Checkpoint step {step} in {self.directory} holds another model than this config "
      f"builds: {shown}{more}. Train with the config that wrote it (its workdir's "
      "config.json), or use a new --workdir."
    )

  def restore_latest_good(
    self, abstract_state: Any, shardings: Any, data_iterator: grain.DatasetIterator | None
  ):
    """Restores the newest readable step, skipping any that fails to load.

    Steps newer than the restored one are moved to `checkpoints_unreadable/` (see the module
    docstring) and one warning names them. Returns (step, state), or (None, None) when there is
    no checkpoint at all. Raises CheckpointError when a step holds another model's arrays, or
    when checkpoints exist but none can be read.
    """
    steps = self.all_steps()
    unreadable: dict[int, str] = {}
    silence_failed_read_leftovers()
    for step in reversed(steps):
      try:
        self.check_same_model(step, abstract_state)
        state = self.restore(step, abstract_state, shardings, data_iterator)
      except errors.CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        unreadable[step] = failure_summary(e)
        continue
      if unreadable:
        moved = self._set_aside(sorted(unreadable))
        newest = max(unreadable)
        several = len(unreadable) > 1
        logging.warning(
          "Checkpoint step%s %s in %s could not be read (%s%s); resumed from step %d instead "
          "and moved the unreadable one%s to %s.",
          "s" if several else "",
          ", ".join(str(s) for s in sorted(unreadable, reverse=True)),
          self.directory,
          f"step {newest}: " if several else "",
          unreadable[newest],
          step,
          "s" if several else "",
          moved,
        )
      return step, state
    if steps:
      reasons = "; ".join(f"step {s}: {r}" for s, r in sorted(unreadable.items(), reverse=True))
      raise errors.CheckpointError(
        f"None of the checkpoints {steps} in {self.directory} could be read ({reasons}). "
        "Move that directory away to start afresh."
      )
    return None, None

  def _set_aside(self, steps: list[int]) -> str:
    """Moves unreadable steps out of the manager's directory (process 0; all wait); returns
    where they went."""
    if jax.process_index() == 0:
      aside = epath.Path(self.unreadable_directory)  # epath: local disks and GCS alike
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target, suffix = aside / str(step), 0
        while target.exists():
          suffix += 1
          target = aside / f"{step}.{suffix}"
        (epath.Path(self.directory) / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("jaxssl_checkpoint_set_aside")
    self.manager.reload()
    return self.unreadable_directory

  def restore_params(self, step: int, abstract_params_aux: Any, shardings: Any) -> Any:
    """Partial restore of {'params', 'aux'} only (the eval job): the optimizer state, often
    twice the size of the params, is never read."""
    target = with_shardings(abstract_params_aux, shardings)
    args = ocp.args.PyTreeRestore(
      item=target,
      partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target),
    )
    return self.manager.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
