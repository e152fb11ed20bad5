"""Grain input pipelines: infinite shuffled training batches per host, padded eval batches.

Training: source -> seed -> global shuffle -> repeat (reshuffled each epoch) -> per-example
random transform -> per-host slice -> batch -> iterator (optionally worker processes). Every step
is a pure function of the element's global position, so

  * an iterator restored from `get_state()` yields exactly the batches the uninterrupted one
    would have yielded;
  * the random transform is applied BEFORE the per-host slice (slicing a MapDataset is lazy, so
    each host still only computes its own elements): the augmentation of global position i is
    seeded by i, not by its position on a host, so hosts never share random streams and the
    union of the hosts' batches does not depend on the number of hosts.

Evaluation: each host reads a contiguous block of every global batch, the last global batch is
padded with zeros and `valid=False`, so all hosts run the same number of equally shaped steps
(collectives do not hang) and every example is seen exactly once.
"""

import math
import multiprocessing
import os
import threading
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np

# Elements of the training dataset are whole batches, so the in-process read-ahead counts
# batches: grain's defaults (16 threads, 500 elements) would hold hundreds of batches.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def _resolve_processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index={process_index} must be in [0, process_count={process_count})."
    )
  return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
      f"Global batch size {global_batch_size} must be a positive multiple of the "
      f"process count {process_count}; each host loads an equal share."
    )
  return global_batch_size // process_count


def make_train_dataset(
  source: Sequence[Any],
  transform: grain.transforms.RandomMap | Callable,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> grain.IterDataset:
  """This host's batches of `transform`ed examples, shuffled anew each epoch.

  Args:
    source: random-access source (e.g. `datasets.get_source(...)`).
    transform: `grain.transforms.RandomMap` (or callable(element, rng)), e.g. `TwoViews`.
    global_batch_size: examples per step summed over hosts; each host batches
      global_batch_size // process_count of them.
    seed: seeds the shuffle and the per-example random transforms.
    process_index, process_count: this host's slice; default jax.process_index()/count().
    num_epochs: None repeats forever (the training default: duration is set in steps).
    drop_remainder: with finite `num_epochs`, drop the last partial global batch (so every
      host gets the same number of full batches).
    read_options: in-process threads and read-ahead, counted in batches.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  local_batch_size = _local_batch_size(global_batch_size, process_count)
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
  if num_epochs is not None:
    if drop_remainder:
      ds = ds[: len(ds) // global_batch_size * global_batch_size]
    elif process_count > 1:
      raise ValueError(
        "drop_remainder=False with finite num_epochs and several processes would "
        "give hosts different numbers of batches (the step would hang); use "
        "drop_remainder=True."
      )
  ds = ds.random_map(transform)
  ds = ds[process_index::process_count]
  ds = ds.batch(local_batch_size, drop_remainder=drop_remainder)
  return ds.to_iter_dataset(read_options)


def make_train_iterator(
  dataset: grain.IterDataset, *, worker_count: int = 0, prefetch_buffer_size: int = 2
) -> grain.DatasetIterator:
  """A checkpointable iterator over `dataset` (get_state()/set_state()).

  With `worker_count` > 0, batches are produced in that many worker processes (worker w makes
  batches w, w + n, ...; output order is unchanged), each keeping `prefetch_buffer_size`
  batches ready. Workers read absl flags: run under absl.app.run or call
  `flags.FLAGS.mark_as_parsed()` first. Close the iterator (`it.close()`) to stop workers.
  """
  if worker_count < 0:
    raise ValueError(f"worker_count={worker_count} must be >= 0 (0: no worker processes).")
  if worker_count > 0:
    dataset = dataset.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=prefetch_buffer_size
      ),
      worker_init_fn=exit_with_parent,
    )
  return iter(dataset)


def exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Grain `worker_init_fn`: the worker exits once the process that started it is gone.

  A trainer killed with SIGKILL (OOM killer, preemption) runs no cleanup, and its workers would
  keep producing batches as orphans, holding CPU and memory, until killed by hand. A daemon
  thread waits on multiprocessing's parent sentinel, which also catches a parent that died
  while this worker was still starting up (os.getppid() would already name the new parent);
  prctl(PR_SET_PDEATHSIG) is not used: it fires when the *thread* that forked the worker exits.
  """
  del worker_index, worker_count
  parent = multiprocessing.parent_process()
  if parent is None:
    return  # not a multiprocessing child (Grain's thread fallback): nothing outlives the trainer

  def watch():
    parent.join()  # returns when the parent process has exited
    os._exit(0)  # pylint: disable=protected-access  (no cleanup: the parent is gone)

  threading.Thread(target=watch, name="jaxssl-exit-with-parent", daemon=True).start()


class _PaddedHostExamples(Sequence):
  """This host's eval examples in order: position i -> transformed source[indices[i]] with
  valid=True, or zeros with valid=False where indices[i] < 0 (padding)."""

  def __init__(self, source, transform, indices: np.ndarray):
    self._source = source
    self._transform = transform.map if hasattr(transform, "map") else transform
    self._indices = indices
    example = self._transform(source[0])
    self._padding = {key: np.zeros_like(value) for key, value in example.items()}
    self._padding["valid"] = np.bool_(False)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, position: int):
    index = int(self._indices[position])
    if index < 0:
      return self._padding
    return {**self._transform(self._source[index]), "valid": np.bool_(True)}


def eval_num_batches(num_examples: int, batch_size: int) -> int:
  """Number of (global) eval batches: ceil(num_examples / batch_size)."""
  return math.ceil(num_examples / batch_size)


def make_eval_batches(
  source: Sequence[Any],
  transform: grain.transforms.Map | Callable,
  *,
  batch_size: int,
  process_index: int | None = None,
  process_count: int | None = None,
  read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of one ordered pass over `source`: dicts of `transform`'s outputs plus
  'valid' (bool [b]).

  `batch_size` is the GLOBAL batch (over all hosts); each host yields
  eval_num_batches(len(source), batch_size) batches of batch_size // process_count examples.
  Global batch k holds examples k*batch_size ... in order, host p holding the p-th contiguous
  block, so features assembled with `global_batch` come out in dataset order. Positions past
  the end are zeros with valid=False.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  local_batch_size = _local_batch_size(batch_size, process_count)
  if len(source) == 0:
    raise ValueError("The eval source is empty; check the split name.")
  num_batches = eval_num_batches(len(source), batch_size)
  indices = (
    np.arange(num_batches)[:, None] * batch_size
    + process_index * local_batch_size
    + np.arange(local_batch_size)[None, :]
  ).ravel()
  indices[indices >= len(source)] = -1
  ds = grain.MapDataset.source(_PaddedHostExamples(source, transform, indices))
  return iter(ds.batch(local_batch_size).to_iter_dataset(read_options))


def global_batch(local_batch: Any, sharding: jax.sharding.Sharding) -> Any:
  """Assembles every host's local batch into global jax.Arrays sharded by `sharding`.

  `sharding` (e.g. NamedSharding(mesh, P('data'))) splits the leading batch dimension; each
  leaf's global leading size is the sum of the hosts' local sizes.
  """
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )
