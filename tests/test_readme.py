"""The README's two commands: the first (train + eval) runs as written, on fewer steps; the
second is exactly what .ci/run executes."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
  text = open(os.path.join(ROOT, "README.md")).read()
  return re.findall(r"```bash\n(.+?)\n```", text, re.S)[:2]


def test_ci_runs_exactly_the_readme_test_command():
  _, test_cmd = _readme_commands()
  ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
  assert test_cmd in ci
  assert "pytest" in test_cmd


@pytest.mark.slow
def test_readme_main_command_trains_and_evaluates(tmp_path, data_dir):
  main_cmd, _ = _readme_commands()
  parts = [shlex.split(p) for p in main_cmd.split("&&")]
  train = next(p for p in parts if p[0].endswith("jaxssl-train"))
  evaluate = next(p for p in parts if p[0].endswith("jaxssl-eval"))
  workdir = str(tmp_path / "run")
  # As a user runs it: without conftest's test-only fast-compile flag (this test runs 60 steps).
  env = dict(
    os.environ,
    JAXSSL_DATA_DIR=data_dir,
    XLA_FLAGS=os.environ["XLA_FLAGS"].replace(conftest.FAST_COMPILE_FLAG, ""),
  )

  def swap_workdir(args):
    return [f"--workdir={workdir}" if a.startswith("--workdir=") else a for a in args]

  # The installed console scripts are these modules; fewer steps keep the test short.
  subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxssl.train",
      *swap_workdir(train[1:]),
      "--config.total_steps=60",
      "--config.checkpoint.every_steps=30",
      "--config.log_every_steps=10",
    ],
    env=env,
    cwd=ROOT,
    check=True,
    capture_output=True,
    timeout=900,
  )
  out = subprocess.run(
    [sys.executable, "-m", "jaxssl.evaluate", *swap_workdir(evaluate[1:])],
    env=env,
    cwd=ROOT,
    check=True,
    capture_output=True,
    text=True,
    timeout=900,
  )
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.5  # the loss falls
  assert "| 0 (random init) |" in out.stdout and "| 60 |" in out.stdout
  assert "knn top1" in out.stdout
