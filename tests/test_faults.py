"""Faults the trainer survives: preemption signals, kill -9, unreadable checkpoints, NaN losses,
config mistakes, and restores onto another mesh or process count.

Every run is the SimCLR `test` preset (6 steps, checkpoints at 3 and 6) on the 8 simulated CPU
devices; "bit for bit" comparisons are against one uninterrupted in-process run.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import faults
from jaxssl import methods
from jaxssl import optim
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import train as train_lib
from jaxssl.data import datasets
from jaxssl.methods import simclr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "train_worker.py")
CONFIG = "configs/simclr.py:test"
NAN_AT = 4  # the trainer's step number (1-based) whose loss the injection makes NaN


def _config(data_dir, **overrides):
  c = config_lib.load_config_file(os.path.join(ROOT, CONFIG))
  c.data.data_dir = data_dir
  c.log_every_steps = 1
  for k, v in overrides.items():
    c[k] = v
  return c


def _state_at(workdir, step):
  return checkpoint.read_state_numpy(workdir, step)


def _assert_bitwise_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def _losses(workdir):
  rows = [r for r in _read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows}


def _read_jsonl(path):
  import json  # pylint: disable=g-import-not-at-top

  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """An uninterrupted run: (workdir, final state)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  train_lib.train(_config(data_dir), workdir)
  return workdir, _state_at(workdir, 6)


def _start_worker(workdir, data_dir, delay):
  env = dict(os.environ, JAXSSL_TEST_STEP_DELAY=str(delay))
  cmd = [
    sys.executable,
    WORKER,
    f"--config={os.path.join(ROOT, CONFIG)}",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.log_every_steps=1",
  ]
  return subprocess.Popen(
    cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def _wait_for(predicate, proc, timeout=240.0):
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(
        f"worker exited early (rc={proc.returncode}):\n{proc.stdout.read()[-3000:]}"
      )
    assert time.time() < deadline, "timed out waiting for the worker"
    time.sleep(0.05)


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return len(_read_jsonl(path)) if os.path.exists(path) else 0


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_exits_0_and_the_restart_continues(
  tmp_path, data_dir, reference
):
  workdir = str(tmp_path / "run")
  proc = _start_worker(workdir, data_dir, delay=0.5)
  _wait_for(lambda: _logged_steps(workdir) >= 1, proc)  # mid-run: step 1 done, 5 to go
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  steps = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  assert len(steps) >= 1 and steps[-1] < 6, steps
  stopped_at = steps[-1]
  assert f"Stopped by SIGTERM after saving the checkpoint of step {stopped_at}" in out, out

  train_lib.train(_config(data_dir), workdir)  # the same command again
  _assert_bitwise_equal(_state_at(workdir, 6)["params"], reference[1]["params"])
  ref_losses, losses = _losses(reference[0]), _losses(workdir)
  for step in range(stopped_at + 1, 7):
    assert losses[step] == ref_losses[step], step


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_matches_the_uninterrupted_run_bit_for_bit(
  tmp_path, data_dir, reference
):
  workdir = str(tmp_path / "run")
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  proc = _start_worker(workdir, data_dir, delay=1.0)
  _wait_for(lambda: os.path.isdir(os.path.join(ckpt_dir, "3")), proc)
  time.sleep(0.5)  # now inside step 4 or 5
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [3]

  train_lib.train(_config(data_dir), workdir)
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [3, 6]
  final = _state_at(workdir, 6)
  _assert_bitwise_equal(final["params"], reference[1]["params"])
  _assert_bitwise_equal(final["opt_state"], reference[1]["opt_state"])


def test_truncated_newest_checkpoint_is_skipped_and_the_previous_one_restored(
  tmp_path, data_dir, reference, caplog
):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir)
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  newest = os.path.join(checkpoint.checkpoint_dir(workdir), "6")
  truncated = 0
  for dirpath, _, files in os.walk(os.path.join(newest, "state")):
    for name in files:
      path = os.path.join(dirpath, name)
      size = os.path.getsize(path)
      if size:
        with open(path, "r+b") as f:
          f.truncate(size // 2)
        truncated += 1
  assert truncated

  caplog.set_level("WARNING")
  train_lib.train(_config(data_dir), workdir)
  warnings = [r.getMessage() for r in caplog.records if r.name == "absl"]
  assert len(warnings) == 1, warnings  # the recovery's one line, nothing else
  assert warnings[0].startswith(
    f"Checkpoint step 6 in {os.path.dirname(newest)} could not be read ("
  )
  assert "resumed from step 3 instead and moved the unreadable one to" in warnings[0]
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "6"))  # kept, not lost
  assert sorted(_losses(workdir)) == [4, 5, 6]  # resumed after step 3
  _assert_bitwise_equal(_state_at(workdir, 6)["params"], reference[1]["params"])


def _nan_at_step(monkeypatch, trainer_step):
  """Makes the SimCLR loss (and so every gradient) NaN at one trainer step, in-process."""
  loss_fn = simclr.Method.loss_fn

  def poisoned(self, params, aux, batch, rng, step):
    loss, out = loss_fn(self, params, aux, batch, rng, step)
    # state.step is 0-based and counts completed steps: trainer step s sees s - 1.
    return loss * jnp.where(step == trainer_step - 1, jnp.nan, 1.0), out

  monkeypatch.setattr(simclr.Method, "loss_fn", poisoned)


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(
  tmp_path, data_dir, monkeypatch
):
  _nan_at_step(monkeypatch, NAN_AT)
  workdir = str(tmp_path / "run")
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  with pytest.raises(faults.NonFiniteLossError) as e:
    train_lib.train(_config(data_dir), workdir)
  assert (
    f"Non-finite loss or gradient at step {NAN_AT} (loss=nan); the last good checkpoint "
    f"is step 3 in {ckpt_dir}"
  ) in str(e.value)
  assert "config.nan_policy='skip'" in str(e.value)
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [3]


def test_nan_skip_policy_leaves_the_state_unchanged_for_that_step(tmp_path, data_dir, monkeypatch):
  _nan_at_step(monkeypatch, NAN_AT)
  workdir = str(tmp_path / "run")
  config = _config(data_dir, nan_policy="skip")
  config.checkpoint.every_steps = 1
  config.checkpoint.max_to_keep = 10
  train_lib.train(config, workdir)
  before, skipped, after = (_state_at(workdir, s) for s in (NAN_AT - 1, NAN_AT, NAN_AT + 1))
  assert int(skipped["step"]) == NAN_AT  # the step counter still advances
  for part in ("params", "opt_state", "aux"):
    _assert_bitwise_equal(skipped[part], before[part])
  assert not all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(after["params"]), jax.tree.leaves(skipped["params"]))
  )
  rows = {r["step"]: r for r in _read_jsonl(os.path.join(workdir, "metrics.jsonl"))}
  assert [rows[s]["train/nonfinite"] for s in range(1, 7)] == [0, 0, 0, 1, 0, 0]
  assert all(np.isfinite(rows[s]["train/loss"]) for s in (1, 2, 3, 5, 6))


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"method": "simclrr"}, "Unknown method 'simclrr'; available methods: "),
    ({"mesh.data": 3}, "has 3 devices but 8 are available; set config.mesh"),
    ({"batch_size": 12}, "batch_size=12 must be divisible by the batch's mesh shards (8)"),
    ({"nan_policy": "ignore"}, "config.nan_policy='ignore'; use one of ('stop', 'skip')"),
    ({"sharding_rules": "zero3"}, "Unknown sharding rules preset 'zero3'"),
    ({"total_epochs": 2.0}, "Set exactly one of config.total_steps, config.total_epochs"),
  ],
)
def test_config_errors_fail_before_reading_data_or_compiling(
  tmp_path, data_dir, monkeypatch, overrides, message
):
  config = _config(data_dir)
  for path, value in overrides.items():
    *parents, key = path.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[key] = value

  def must_not_run(*args, **kwargs):
    raise AssertionError("reached data loading / compilation before the config check")

  monkeypatch.setattr(datasets, "get_info", must_not_run)
  monkeypatch.setattr(state_lib, "create_train_state", must_not_run)
  with pytest.raises(train_lib.ConfigError) as e:
    train_lib.train(config, str(tmp_path / "run"))
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_unknown_config_key_names_the_valid_keys():
  with pytest.raises(
    ValueError,
    match=r"Unknown config key config.optim.lr \(from "
    r"'--config.optim.lr=0.1'\); valid keys in config.optim: "
    r"b1, b2, base_lr",
  ):
    config_lib.check_overrides([f"--config={os.path.join(ROOT, CONFIG)}", "--config.optim.lr=0.1"])


def test_cli_config_error_is_one_line_and_nonzero(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "jaxssl.train",
    f"--config={os.path.join(ROOT, CONFIG)}",
    f"--workdir={tmp_path}",
    "--config.mesh.data=3",
  ]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(
    "config error: Mesh {'data': 3, 'fsdp': 1, 'tensor': 1} has 3 devices but 8 are available"
  ), result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_restore_onto_a_2_device_mesh_from_an_8_device_checkpoint(reference, data_dir):
  workdir, saved = reference
  config = _config(data_dir)
  method = methods.build(config)
  tx = optim.make_optimizer(config.optim, optim.make_schedule(config.optim, config.batch_size, 6))
  mesh = parallel.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, devices=jax.devices()[:2])
  rules = parallel.get_rules("fsdp")
  _, abstract, shardings = state_lib.abstract_and_shardings(
    method, tx, checkpoint.read_input_spec(workdir), mesh, rules, config.seed
  )
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  state = ckpt.restore(6, abstract, shardings, data_iterator=None)
  ckpt.close()
  leaves = jax.tree.leaves(state.params)
  assert all(set(x.sharding.device_set) <= set(jax.devices()[:2]) for x in leaves)
  assert any("fsdp" in str(x.sharding.spec) for x in leaves)  # really split over 2 devices
  _assert_bitwise_equal(jax.tree.map(np.asarray, state.params), saved["params"])
  _assert_bitwise_equal(jax.tree.map(np.asarray, state.opt_state), saved["opt_state"])


def test_data_position_survives_a_process_count_change(tmp_path, data_dir, reference, caplog):
  """A checkpoint saved by 2 processes has no Grain state for "process 0 of 1": the restart
  moves the pipeline to the checkpoint's step instead and continues the same example order."""
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir)
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  shutil.move(os.path.join(ckpt_dir, "6"), str(tmp_path / "later"))  # resume from 3
  data = os.path.join(ckpt_dir, "3", "data")
  single = os.path.join(data, "process_0-of-1.json")
  for name in ("process_0-of-2.json", "process_1-of-2.json"):
    shutil.copy(single, os.path.join(data, name))
  os.remove(single)

  caplog.set_level("WARNING")
  train_lib.train(_config(data_dir), workdir)
  assert (
    "has no data-iterator state for process 0 of 1 (it was saved with another process "
    "count); moving the input pipeline to batch 3"
  ) in caplog.text
  ref_losses, losses = _losses(reference[0]), _losses(workdir)
  assert [losses[s] for s in (4, 5, 6)] == [ref_losses[s] for s in (4, 5, 6)]
  _assert_bitwise_equal(_state_at(workdir, 6)["params"], reference[1]["params"])
