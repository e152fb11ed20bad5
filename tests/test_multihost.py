"""Multi-process training through jax.distributed: 2 processes x 2 simulated CPU devices on
127.0.0.1 (launch/local_multiprocess.sh, gloo collectives) against 1 process x 4 devices, a
restart of the 2-process run's checkpoint by a single process, and the eval job's feature
extraction over 2 processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import train as train_lib
from jaxssl.data import datasets
from jaxssl.eval import features as features_lib
import conftest
import launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "train_worker.py")
CONFIG = os.path.join(ROOT, "configs/simclr.py:test")


# SGD, not the preset's AdamW, for the parameter comparison (as in test_step.py): Adam divides
# by sqrt(v), turning the float noise on parameters whose true gradient is exactly 0 (the
# encoder's last LayerNorm bias, whose shift the head's BatchNorm removes) into +-lr steps.
OVERRIDES = {"log_every_steps": 1, "optim.name": "sgd", "optim.base_lr": 0.5}


def _trainer_args(workdir, data_dir):
  # The default mesh (data=-1) resolves to all 4 devices in both runs.
  return [
    WORKER,
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
  ]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["train/loss"] for r in map(json.loads, f)}


def _params(workdir, step=6):
  return checkpoint.read_state_numpy(workdir, step)["params"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """{'multi': (workdir, record_dir), 'single': (...), 'logs': ...} of both jobs, run once per
  test run (the xdist workers share them)."""
  return conftest.once_per_suite(
    tmp_path_factory, "multihost", lambda base: _run_both_jobs(base, data_dir)
  )


def _run_both_jobs(base, data_dir):
  """Runs the 2-process and the 1-process job at once under `base`."""
  datasets.get_source("digits", "train", data_dir)  # prepare once, before 3 processes race
  out = {name: (str(base / name), str(base / f"{name}_batches")) for name in ("multi", "single")}
  # Process 1 starts training 35 s after process 0 and starts compiling 35 s later again: XLA's
  # gloo gives up on peers more than 30 s apart, so this passes only through the trainer's
  # store barriers (Orbax's on CPU, and after compiling the step; jaxssl/parallel.py).
  env = dict(
    os.environ,
    JAXSSL_TEST_RECORD_DIR=out["multi"][1],
    LOG_DIR=str(base / "logs"),
    JAXSSL_TEST_START_SKEW="35",
  )
  os.makedirs(env["LOG_DIR"])
  multi = launcher.start(2, 2, _trainer_args(out["multi"][0], data_dir), env=env)
  single_env = dict(
    os.environ,
    JAXSSL_TEST_RECORD_DIR=out["single"][1],
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=4",
  )
  try:
    single = subprocess.run(
      [sys.executable, *_trainer_args(out["single"][0], data_dir)],
      env=single_env,
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=540,
    )
  except BaseException:
    launcher.kill(multi)
    raise
  multi_rc, multi_out = launcher.finish(multi, timeout=540)
  assert single.returncode == 0, single.stderr[-3000:]
  logs = "".join(
    open(os.path.join(env["LOG_DIR"], f)).read()[-3000:] for f in sorted(os.listdir(env["LOG_DIR"]))
  )
  assert multi_rc == 0, multi_out + logs
  out["logs"] = logs
  return out


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_as_many_devices(runs):
  assert "process 1 of 2, 2 local / 4 global devices" in runs["logs"]
  multi, single = _losses(runs["multi"][0]), _losses(runs["single"][0])
  assert sorted(multi) == sorted(single) == list(range(1, 7))
  np.testing.assert_allclose(
    [multi[s] for s in range(1, 7)], [single[s] for s in range(1, 7)], rtol=2e-5
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    _params(runs["multi"][0]),
    _params(runs["single"][0]),
  )
  # Every process saved its own Grain iterator state.
  data = os.path.join(checkpoint.checkpoint_dir(runs["multi"][0]), "6", "data")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data))


@pytest.mark.slow
def test_each_process_reads_a_disjoint_slice_of_the_global_batch(runs):
  """Host p's local batch k is the global batch k's examples p, p + 2, p + 4, ...: the hosts'
  slices are disjoint and together are exactly the single-process batch (bit for bit, since
  each example's augmentation is seeded by its global position)."""
  single = np.load(os.path.join(runs["single"][1], "process_0.npz"))
  hosts = [np.load(os.path.join(runs["multi"][1], f"process_{p}.npz")) for p in (0, 1)]
  assert sorted(single.files) == sorted(hosts[0].files) == sorted(hosts[1].files)
  for key in single.files:  # view1_0, view2_0, view1_1, ... (first two steps)
    assert hosts[0][key].shape[0] == hosts[1][key].shape[0] == single[key].shape[0] // 2
    for p in (0, 1):
      np.testing.assert_array_equal(hosts[p][key], single[key][p::2])
    assert not np.array_equal(hosts[0][key], hosts[1][key])


@pytest.mark.slow
def test_single_process_resumes_a_two_process_checkpoint(runs, tmp_path, data_dir, caplog):
  """Saved by 2 processes on 4 devices, resumed by 1 process on 8: the state restores onto
  the new mesh and the input pipeline continues at the checkpoint's step."""
  workdir = str(tmp_path / "resumed")
  shutil.copytree(runs["multi"][0], workdir)
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(workdir), "6"))
  config = config_lib.load_config_file(CONFIG)
  config.data.data_dir = data_dir
  config.log_every_steps = 1
  config.optim.name, config.optim.base_lr = OVERRIDES["optim.name"], OVERRIDES["optim.base_lr"]
  caplog.set_level("WARNING")
  train_lib.train(config, workdir)
  assert "saved with another process count); moving the input pipeline to batch 3" in caplog.text
  resumed, original = _losses(workdir), _losses(runs["multi"][0])
  assert sorted(resumed) == [4, 5, 6]
  np.testing.assert_allclose(
    [resumed[s] for s in (4, 5, 6)], [original[s] for s in (4, 5, 6)], rtol=2e-5
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    _params(workdir),
    _params(runs["multi"][0]),
  )


@pytest.mark.slow
def test_eval_features_gathered_over_two_processes_match_one_process(runs, tmp_path, data_dir):
  """The eval job's sharded feature extraction with 2 processes (each holding a contiguous
  block of every global batch, the last one padded) returns the 1-process features in
  dataset order, labels included."""
  out = str(tmp_path / "features.npz")
  worker = os.path.join(ROOT, "tests", "eval_features_worker.py")
  rc, launcher_out = launcher.run(
    2,
    2,
    [worker, runs["multi"][0], "6", data_dir, out],
    env=dict(os.environ, LOG_DIR=str(tmp_path / "logs")),
    timeout=300,
  )
  logs = "".join(
    open(os.path.join(tmp_path, "logs", f)).read()[-2000:]
    for f in sorted(os.listdir(tmp_path / "logs"))
  )
  assert rc == 0, launcher_out[-2000:] + logs
  multi = np.load(out)
  assert int(multi["process_count"]) == 2

  encoder = features_lib.Encoder(runs["multi"][0])
  variables = encoder.restore(checkpoint.Checkpointer(runs["multi"][0], read_only=True), 6)
  source = datasets.get_source("digits", "test[:40]", data_dir)
  feats, labels = encoder.features(
    variables, source, datasets.get_info("digits", data_dir), batch_size=16
  )
  assert multi["features"].shape == feats.shape == (40, feats.shape[1])
  np.testing.assert_array_equal(multi["labels"], labels)
  np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(40)])
  np.testing.assert_allclose(multi["features"], feats, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_the_same_checkpointed_step(tmp_path, data_dir):
  """SIGTERM to the launcher reaches both processes; JAX's preemption sync service makes them
  agree on one step, both take part in its checkpoint and exit 0."""
  workdir = str(tmp_path / "run")
  env = dict(os.environ, JAXSSL_TEST_STEP_DELAY="1.0", LOG_DIR=str(tmp_path / "logs"))
  os.makedirs(env["LOG_DIR"])
  proc = launcher.start(2, 2, _trainer_args(workdir, data_dir), env=env)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and open(metrics).read().strip()):
    if proc.poll() is not None or time.time() > deadline:
      out = launcher.kill(proc)  # a launcher that outlived its processes must not hang
      raise AssertionError(f"no metrics.jsonl; launcher exit {proc.returncode}: {out[-5000:]}")
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  rc, out = launcher.finish(proc, timeout=240)
  logs = [open(os.path.join(env["LOG_DIR"], f"process_{p}.log")).read() for p in (0, 1)]
  assert rc == 0, out + "".join(l[-2000:] for l in logs)
  steps = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  assert steps and steps[-1] < 6, steps
  for log in logs:
    assert f"Stopped by preemption notice after saving the checkpoint of step {steps[-1]}" in log, (
      log[-2000:]
    )
  data = os.path.join(checkpoint.checkpoint_dir(workdir), str(steps[-1]), "data")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data))
