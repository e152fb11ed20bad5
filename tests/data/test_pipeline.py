"""Tests for jaxssl.data.pipeline: determinism, host slicing, exact resume, eval padding."""

import json
import os
import signal
import subprocess
import sys
import time

from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from jaxssl.data import augment
from jaxssl.data import datasets
from jaxssl.data import pipeline
import processes

NUM_EXAMPLES = 40


def _indexed_source(n=NUM_EXAMPLES):
  """Examples that carry their own index as label, with distinct images."""
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (6, 6, 1)).astype(np.uint8), "label": i} for i in range(n)]


def _views():
  return augment.TwoViews(augment.SimCLRAugment((0.5,), (0.25,)))


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _train_iterator(seed=0, process_index=0, process_count=1, batch=8, source=None, **kwargs):
  source = _indexed_source() if source is None else source
  ds = pipeline.make_train_dataset(
    source,
    _views(),
    global_batch_size=batch,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )
  return pipeline.make_train_iterator(ds, **kwargs)


def test_same_seed_same_batches_on_real_data(data_dir):
  source = datasets.get_source("mnist5k", "train", data_dir)
  info = datasets.get_info("mnist5k")
  transform = augment.TwoViews(augment.SimCLRAugment(info.mean, info.std))

  def batches(seed):
    ds = pipeline.make_train_dataset(
      source, transform, global_batch_size=16, seed=seed, process_index=0, process_count=1
    )
    return _take(pipeline.make_train_iterator(ds), 3)

  first = batches(seed=1)
  _assert_batches_equal(first, batches(seed=1))
  assert first[0]["view1"].shape == (16, 28, 28, 1) and first[0]["label"].dtype == np.int32
  assert not np.array_equal(first[0]["label"], batches(seed=2)[0]["label"])
  assert not np.allclose(first[0]["view1"], first[0]["view2"])


def test_epochs_are_permutations_reshuffled_each_epoch():
  labels = np.concatenate([b["label"] for b in _take(_train_iterator(), 10)])  # 2 epochs.
  first, second = labels[:NUM_EXAMPLES], labels[NUM_EXAMPLES:]
  np.testing.assert_array_equal(np.sort(first), np.arange(NUM_EXAMPLES))
  np.testing.assert_array_equal(np.sort(second), np.arange(NUM_EXAMPLES))
  assert not np.array_equal(first, second)


def test_host_slices_are_disjoint_cover_and_match_one_host():
  one_host = _take(_train_iterator(), 5)
  hosts = [_take(_train_iterator(process_index=p, process_count=2), 5) for p in range(2)]
  host_labels = [np.concatenate([b["label"] for b in h]) for h in hosts]
  assert all(len(h) == NUM_EXAMPLES // 2 for h in host_labels)
  assert not set(host_labels[0]) & set(host_labels[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(host_labels)), np.arange(NUM_EXAMPLES))
  # Augmentations are seeded by global position, so host p holds every second example of the
  # single-host batch, views included.
  for step in range(5):
    for p in range(2):
      for key in ("label", "view1", "view2"):
        np.testing.assert_array_equal(hosts[p][step][key], one_host[step][key][p::2])


def test_checkpoint_round_trip_in_process():
  iterator = _train_iterator()
  _take(iterator, 3)
  state = iterator.get_state()
  state = json.loads(json.dumps(state))  # What a checkpoint stores.
  expected = _take(iterator, 4)
  restored = _train_iterator()
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 4), expected)


def test_worker_processes_give_same_batches_and_resume_exactly(data_dir):
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags.
  # The real TFDS source, which worker processes receive by pickle.
  source = datasets.get_source("digits", "train", data_dir)
  in_process = _take(_train_iterator(source=source), 6)
  iterator = _train_iterator(source=source, worker_count=2, prefetch_buffer_size=1)
  try:
    _assert_batches_equal(_take(iterator, 2), in_process[:2])
    state = iterator.get_state()
    _assert_batches_equal(_take(iterator, 4), in_process[2:])
  finally:
    iterator.close()
  restored = _train_iterator(source=source, worker_count=2, prefetch_buffer_size=1)
  try:
    restored.set_state(state)
    _assert_batches_equal(_take(restored, 4), in_process[2:])
  finally:
    restored.close()


def test_finite_epochs_give_every_host_equal_full_batches():
  source = _indexed_source(45)
  counts = []
  for p in range(2):
    ds = pipeline.make_train_dataset(
      source, _views(), global_batch_size=8, seed=0, process_index=p, process_count=2, num_epochs=1
    )
    counts.append(len(list(ds)))
  assert counts == [45 // 8] * 2
  with pytest.raises(ValueError, match="drop_remainder"):
    pipeline.make_train_dataset(
      source,
      _views(),
      global_batch_size=8,
      seed=0,
      process_index=0,
      process_count=2,
      num_epochs=1,
      drop_remainder=False,
    )


def test_bad_batch_or_process_raises():
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    pipeline.make_train_dataset(
      _indexed_source(), _views(), global_batch_size=8, seed=0, process_index=0, process_count=3
    )
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_train_dataset(
      _indexed_source(), _views(), global_batch_size=8, seed=0, process_index=2, process_count=2
    )
  with pytest.raises(ValueError, match="worker_count"):
    pipeline.make_train_iterator(
      pipeline.make_train_dataset(
        _indexed_source(), _views(), global_batch_size=8, seed=0, process_index=0, process_count=1
      ),
      worker_count=-1,
    )


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_each_example_once_and_pad(process_count):
  num_examples, batch_size = 23, 8
  source = _indexed_source(num_examples)
  transform = augment.Deterministic((0.5,), (0.25,))
  per_host = [
    list(
      pipeline.make_eval_batches(
        source, transform, batch_size=batch_size, process_index=p, process_count=process_count
      )
    )
    for p in range(process_count)
  ]
  num_batches = pipeline.eval_num_batches(num_examples, batch_size)
  assert num_batches == 3 and all(len(h) == num_batches for h in per_host)
  local = batch_size // process_count
  for host in per_host:
    for batch in host:
      assert batch["image"].shape == (local, 6, 6, 1) and batch["valid"].shape == (local,)
  # Concatenating the hosts' blocks of each global batch gives the split in order, then padding.
  labels = np.concatenate(
    [np.concatenate([h[k]["label"] for h in per_host]) for k in range(num_batches)]
  )
  valid = np.concatenate(
    [np.concatenate([h[k]["valid"] for h in per_host]) for k in range(num_batches)]
  )
  images = np.concatenate(
    [np.concatenate([h[k]["image"] for h in per_host]) for k in range(num_batches)]
  )
  np.testing.assert_array_equal(valid, np.arange(num_batches * batch_size) < num_examples)
  np.testing.assert_array_equal(labels[valid], np.arange(num_examples))
  assert not labels[~valid].any() and not images[~valid].any()
  expected = np.stack([transform.map(e)["image"] for e in source])
  np.testing.assert_allclose(images[valid], expected)


def test_eval_batches_reject_uneven_hosts():
  with pytest.raises(ValueError, match="multiple of the process count"):
    pipeline.make_eval_batches(
      _indexed_source(),
      augment.Deterministic((0.5,), (0.25,)),
      batch_size=5,
      process_index=0,
      process_count=2,
    )


def test_global_batch_on_eight_devices():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  local = {
    "image": np.arange(16 * 3 * 3, dtype=np.float32).reshape(16, 3, 3, 1),
    "label": np.arange(16, dtype=np.int32),
  }
  batch = pipeline.global_batch(local, sharding)
  for key in local:
    assert isinstance(batch[key], jax.Array)
    assert batch[key].shape == local[key].shape  # One process: global = local.
    assert batch[key].sharding == sharding
    assert {s.data.shape[0] for s in batch[key].addressable_shards} == {2}
    np.testing.assert_array_equal(np.asarray(batch[key]), local[key])


_ORPHAN_SCRIPT = """
import sys, time
from absl import flags
import numpy as np
from jaxssl.data import augment, pipeline

if __name__ == '__main__':
  flags.FLAGS.mark_as_parsed()
  rng = np.random.default_rng(0)
  source = [{'image': rng.integers(0, 256, (6, 6, 1)).astype(np.uint8), 'label': i}
            for i in range(40)]
  ds = pipeline.make_train_dataset(source, augment.TwoViews(augment.SimCLRAugment((0.5,), (0.25,))),
                                   global_batch_size=8, seed=0)
  it = pipeline.make_train_iterator(ds, worker_count=2, prefetch_buffer_size=1)
  next(it)
  print('ready', flush=True)
  time.sleep(600)
"""


def _spawned_children(pid):
  """pids of the multiprocessing-spawned processes whose parent is `pid` (Linux /proc)."""
  children = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read()
    except (OSError, ValueError, IndexError):
      continue  # exited meanwhile
    if ppid == pid and b"spawn_main" in cmdline:
      children.append(int(entry))
  return children


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads worker pids from Linux /proc")
def test_workers_exit_when_the_trainer_is_killed(tmp_path):
  script = tmp_path / "trainer.py"
  script.write_text(_ORPHAN_SCRIPT)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
  try:
    assert proc.stdout.readline().strip() == "ready"
    workers = _spawned_children(proc.pid)
    assert len(workers) == 2, workers
  finally:
    proc.kill()  # SIGKILL: the trainer runs no cleanup at all
    proc.wait()
  # Generous: a worker still importing under load exits only once its init runs.
  deadline = time.monotonic() + 65
  while any(processes.alive(w) for w in workers) and time.monotonic() < deadline:
    time.sleep(0.2)
  survivors = [w for w in workers if processes.alive(w)]
  for w in survivors:
    os.kill(w, signal.SIGKILL)
  assert not survivors, f"worker processes {survivors} outlived their killed trainer"
