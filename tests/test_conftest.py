"""tests/conftest.py's once_per_suite: one build per test run, shared by every xdist worker."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Every test asks for the same build, then records which worker it ran on and what it got; the
# sleep keeps both workers busy, so both ask.
SHARED_BUILD_TESTS = """
import os
import time

import pytest

import conftest

OUT = {out!r}


def build(directory):
  with open(os.path.join(OUT, "builds"), "a") as f:
    f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
  (directory / "made.txt").write_text("made")
  time.sleep(1.0)  # the other worker asks meanwhile
  return {{"directory": str(directory), "answer": 42}}


@pytest.mark.parametrize("i", range(8))
def test_asks_for_the_shared_build(tmp_path_factory, i):
  result = conftest.once_per_suite(tmp_path_factory, "shared", build)
  assert result["answer"] == 42
  assert open(os.path.join(result["directory"], "made.txt")).read() == "made"
  with open(os.path.join(OUT, f"user_{{i}}"), "w") as f:
    f.write(os.environ["PYTEST_XDIST_WORKER"])
  time.sleep(0.3)
"""


def test_two_workers_share_one_build(tmp_path):
  """Fails if each worker builds (a module-scoped fixture without once_per_suite)."""
  out = tmp_path / "out"
  out.mkdir()
  (tmp_path / "tests").mkdir()
  (tmp_path / "pytest.ini").write_text("[pytest]\n")
  for name in ("conftest.py", "packaged_data.py"):  # conftest imports packaged_data
    with open(os.path.join(HERE, name)) as f:
      (tmp_path / "tests" / name).write_text(f.read())
  (tmp_path / "tests" / "test_shared.py").write_text(SHARED_BUILD_TESTS.format(out=str(out)))
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
  run = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "tests"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  users = {(out / f"user_{i}").read_text() for i in range(8)}
  assert users == {"gw0", "gw1"}
  assert len((out / "builds").read_text().split()) == 1
