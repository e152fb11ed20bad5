"""The trainer end to end: checkpoints, exact resume (data order included), metrics files."""

import json
import os

import jax
import numpy as np
import pytest

import compiles
from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import train as train_lib
from jaxssl import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
  c = config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:test"))
  c.data.data_dir = data_dir
  c.log_every_steps = 1
  c.mesh.fsdp = 2
  for k, v in overrides.items():
    c[k] = v
  return c


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows}


def _final_params(workdir):
  step = checkpoint.Checkpointer(workdir, read_only=True).latest_step()
  return step, checkpoint.read_state_numpy(workdir, step)["params"]


def test_resume_gives_the_uninterrupted_run(tmp_path, data_dir):
  config = _config(data_dir)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_lib.train(config, straight)
  train_lib.train(config, resumed, stop_at_step=3)
  assert checkpoint.Checkpointer(resumed, read_only=True).all_steps() == [3]
  train_lib.train(config, resumed)

  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for step in range(4, 7):  # after the restart: same data, same RNG, same params
    assert a[step] == pytest.approx(b[step], rel=1e-6), step
  step_a, params_a = _final_params(straight)
  step_b, params_b = _final_params(resumed)
  assert step_a == step_b == 6
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), params_a, params_b
  )


def test_workdir_files_and_progress(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  with compiles.step_compiles() as step_compiles:
    logged = train_lib.train(_config(data_dir), workdir)
  # Compiled once, ahead of the loop (before the processes' barrier), and reused by step 1:
  # lowering against other shapes/shardings than the loop's would compile a second time.
  assert len(step_compiles) == 1
  assert {"config.json", "input_spec.json", "metrics.jsonl", "tensorboard", "checkpoints"} <= set(
    os.listdir(workdir)
  )
  assert workdir_lib.read_config(workdir).method == "simclr"
  for key in (
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "perf/step_time_s",
    "perf/examples_per_s",
    "perf/eta_s",
    "train/rankme",
    "train/embedding_std",
  ):
    assert key in logged
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_batch_not_divisible_by_mesh_fails_before_compile(tmp_path, data_dir):
  config = _config(data_dir, batch_size=12)
  config.mesh.fsdp = 1  # 8-way batch split; 12 is not a multiple
  with pytest.raises(ValueError, match="batch_size=12 must be divisible"):
    train_lib.train(config, str(tmp_path / "bad"))
