"""The two commands as a user runs them: a re-run never damages its workdir, and every user
mistake or recovered fault prints one line, with the right exit code and no traceback.

Every run is a subprocess of `python -m jaxssl.train` / `jaxssl.evaluate` on the SimCLR `test`
preset (8x8 digits), like tests/test_faults.py, but through the command line.
"""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from jaxssl import checkpoint
from jaxssl import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = f"--config={ROOT}/configs/simclr.py:test"
# The base run: 4 steps, checkpoints at 2 and 4.
BASE = ["--config.total_steps=4", "--config.checkpoint.every_steps=2"]


def _run(workdir, *args, module="jaxssl.train", config=CONFIG, data_dir=None):
  own = [a for a in args if a.startswith("--config=")]  # the test's own config file
  config = own[0] if own else config
  args = [a for a in args if a not in own]
  cmd = [sys.executable, "-m", module, f"--workdir={workdir}", *([config] if config else []), *args]
  if data_dir and module == "jaxssl.train":
    cmd.append(f"--config.data.data_dir={data_dir}")
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  return result.returncode, result.stdout + result.stderr


def _assert_one_line(rc, out, prefix):
  """Exit 1, no traceback, and the last line is the error, starting with `prefix`."""
  assert rc == 1, out[-3000:]
  assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
  assert out.strip().splitlines()[-1].startswith(prefix), out[-3000:]
  return out.strip().splitlines()[-1]


def _snapshot(directory):
  """path -> SHA-256 of every file under `directory` (what 'nothing changed' means)."""
  root = pathlib.Path(directory)
  return {
    str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*"))
    if p.is_file()
  }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  """A finished 4-step run."""
  workdir = tmp_path_factory.mktemp("user_errors") / "run"
  rc, out = _run(workdir, *BASE, data_dir=data_dir)
  assert rc == 0, out[-3000:]
  assert checkpoint.Checkpointer(str(workdir), read_only=True).all_steps() == [2, 4]
  return workdir


@pytest.fixture
def copy_of(trained, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(trained, target)
  return target


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--config.model.width=48"], "model.width: 32 there, 48 now"),
    (["--config.batch_size=8"], "batch_size: 16 there, 8 now"),
    ([f"--config={ROOT}/configs/byol.py:test"], "method: 'simclr' there, 'byol' now;"),
    (["--config.augment.blur_prob=0.9"], "augment.blur_prob: 0.0 there, 0.9 now"),
  ],
)
def test_a_changed_config_is_refused_and_nothing_in_the_workdir_changes(
  copy_of, data_dir, args, expected
):
  before = _snapshot(copy_of)
  rc, out = _run(copy_of, *BASE, *args, data_dir=data_dir)
  line = _assert_one_line(rc, out, f"workdir error: {copy_of} holds a run with another config")
  assert expected in line and "Use a new --workdir" in line
  assert _snapshot(copy_of) == before  # byte for byte


# Allowed on resume (workdir.RESUMABLE): duration, checkpoint and log cadence, the mesh.
RESUME_CHANGES = (
  "--config.total_steps=6",
  "--config.checkpoint.every_steps=3",
  "--config.log_every_steps=1",
  "--config.mesh.data=4",
  "--config.mesh.fsdp=2",
)


def test_allowed_changes_resume_and_are_recorded(copy_of, data_dir):
  rc, out = _run(copy_of, *RESUME_CHANGES, data_dir=data_dir)
  assert rc == 0, out[-3000:]
  assert "Traceback" not in out
  assert "Resumed from step 4 of 6" in out
  assert "with changed settings: checkpoint.every_steps 2 -> 3" in out
  assert checkpoint.Checkpointer(str(copy_of), read_only=True).all_steps()[-1] == 6
  config = workdir_lib.read_config(str(copy_of))
  assert (config.total_steps, config.mesh.fsdp) == (6, 2)  # the record says what ran
  changes = [
    json.loads(line) for line in (copy_of / workdir_lib.CHANGES_FILE).read_text().splitlines()
  ]
  assert len(changes) == 1 and changes[0]["changes"]["total_steps"] == [4, 6]
  # The same command again: nothing to change, nothing appended.
  rc, out = _run(copy_of, *RESUME_CHANGES, data_dir=data_dir)
  assert rc == 0 and "changed settings" not in out, out[-3000:]
  assert len((copy_of / workdir_lib.CHANGES_FILE).read_text().splitlines()) == 1


def _corrupt_arrays(workdir, step):
  """Halves every array data file of a step (its metadata stays readable)."""
  files = list(
    (pathlib.Path(checkpoint.checkpoint_dir(str(workdir))) / str(step) / "state").glob("**/d/*")
  )
  assert files
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(path.stat().st_size // 2)


def test_a_corrupt_newest_checkpoint_is_one_warning(copy_of, data_dir):
  _corrupt_arrays(copy_of, 4)
  rc, out = _run(copy_of, *BASE, data_dir=data_dir)
  assert rc == 0, out[-3000:]
  assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
  warnings = [l for l in out.splitlines() if l.startswith(("W", "E")) and "]" in l]
  assert len(warnings) == 1, warnings
  assert "Checkpoint step 4 in" in warnings[0] and "resumed from step 2 instead" in warnings[0]
  assert (copy_of / "checkpoints_unreadable" / "4").is_dir()


def test_no_readable_checkpoint_is_one_line(copy_of, data_dir):
  _corrupt_arrays(copy_of, 4)
  _corrupt_arrays(copy_of, 2)
  rc, out = _run(copy_of, *BASE, data_dir=data_dir)
  _assert_one_line(rc, out, "checkpoint error: None of the checkpoints [2, 4] in")


def test_another_models_checkpoint_is_not_called_corrupt(copy_of, data_dir):
  """Without config.json to compare with, the restore still tells another model from a corrupt
  checkpoint: it refuses, naming an array and both shapes, and sets nothing aside."""
  (copy_of / "config.json").unlink()
  before = _snapshot(copy_of)
  rc, out = _run(copy_of, *BASE, "--config.model.width=48", data_dir=data_dir)
  line = _assert_one_line(rc, out, "checkpoint error: Checkpoint step 4 in")
  assert "holds another model than this config builds: params/" in line
  assert "(32,) there, (48,) here" in line
  assert not (copy_of / "checkpoints_unreadable").exists()
  assert _snapshot(copy_of) == before


def test_a_config_json_that_is_not_json_names_the_file(copy_of, data_dir):
  (copy_of / "config.json").write_text("{not json")
  for module in ("jaxssl.train", "jaxssl.evaluate"):
    rc, out = _run(
      copy_of,
      *(BASE if module == "jaxssl.train" else []),
      module=module,
      config=CONFIG if module == "jaxssl.train" else None,
      data_dir=data_dir,
    )
    line = _assert_one_line(rc, out, f"workdir error: {copy_of}/config.json is not valid JSON")
    assert "use a new --workdir" in line
  assert (copy_of / "config.json").read_text() == "{not json"


@pytest.mark.parametrize(
  "args,prefix",
  [
    (["--config.data.name=cifar10"], "data error: Dataset 'cifar10' is not prepared in"),
    (["--config.data.name=no_such_set"], "data error: Unknown dataset 'no_such_set'"),
    (["--config.total_steps=0"], "config error: config.total_steps=0: a run needs a positive"),
    (["--config.optim.lr=1"], "config error: Unknown config key config.optim.lr"),
    ([f"--config={ROOT}/configs/simclr.py:nope"], "config error: "),
    ([f"--config={ROOT}/configs/simclrr.py:test"], "config error: "),
  ],
)
def test_trainer_mistakes_are_one_line_and_leave_no_workdir(tmp_path, data_dir, args, prefix):
  rc, out = _run(tmp_path / "new", *args, data_dir=data_dir)
  _assert_one_line(rc, out, prefix)
  assert not (tmp_path / "new").exists()


def test_eval_mistakes_are_one_line(trained, tmp_path):
  rc, out = _run(tmp_path / "missing", module="jaxssl.evaluate", config=None)
  _assert_one_line(rc, out, "workdir error: No config.json in")
  rc, out = _run(trained, "--config.protocols=('svm',)", module="jaxssl.evaluate", config=None)
  _assert_one_line(rc, out, "config error: Unknown eval protocols ['svm']")


def test_an_unexpected_error_keeps_its_traceback():
  code = (
    "from jaxssl import config_lib\n"
    "def main(argv):\n  raise RuntimeError('a bug')\n"
    "config_lib.run_app(main, lambda: None)\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 1
  assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr
