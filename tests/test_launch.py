"""launch/local_multiprocess.sh: exit statuses reach the caller and the launcher never hangs."""

import os
import textwrap
import time

import pytest

import launcher
import packaged_data
import processes
from jaxssl.kernels.cpu import host_malloc

ROOT = launcher.ROOT

# Both processes abort at the same instant with some output, as two JAX processes do when the
# coordination service declares the job dead.
ABORT_TOGETHER = textwrap.dedent("""
    import os, sys, time
    time.sleep(max(0.0, float(os.environ["ABORT_AT"]) - time.time()))
    sys.stderr.write("x" * 5000 + "\\n")
    sys.stderr.flush()
    os.abort()
""")


def _launch(tmp_path, script, env=None, timeout=20):
  path = tmp_path / "child.py"
  path.write_text(script)
  return launcher.run(
    2,
    1,
    [str(path)],
    timeout=timeout,
    env={**os.environ, "LOG_DIR": str(tmp_path / "logs"), **(env or {})},
  )


def test_exit_status_is_that_of_the_processes(tmp_path):
  rc, out = _launch(tmp_path, "import sys; sys.exit(0)")
  assert rc == 0, out
  rc, out = _launch(tmp_path, "import sys; sys.exit(3 if sys.argv[-1] == '--process_id=1' else 0)")
  assert rc == 1 and "process 1 failed (exit 3)" in out, out


def test_two_processes_dying_together_do_not_hang_the_launcher(tmp_path):
  # bash sometimes reaps both at once and drops the second from its job table, after which
  # `wait -n` returns 127 immediately: the launcher used to spin there forever (hit 4 times in
  # 30 runs of this scenario), so the scenario is repeated.
  for attempt in range(20):
    rc, out = _launch(tmp_path, ABORT_TOGETHER, env={"ABORT_AT": str(time.time() + 0.3)})
    assert rc == 1, (attempt, out)
    assert "failed (exit 134)" in out, (attempt, out)


def test_a_hung_launch_is_killed_with_its_processes(tmp_path):
  # Processes blocked for good (as in a collective with a dead peer): the test helper must fail
  # past its timeout and leave nothing running, or one hung test holds a CPU for the rest of CI.
  pid_dir = tmp_path / "pids"
  pid_dir.mkdir()
  script = (
    f"import os, time; open(os.path.join({str(pid_dir)!r}, str(os.getpid())), 'w'); time.sleep(600)"
  )
  with pytest.raises(AssertionError, match="did not exit within 3 s"):
    _launch(tmp_path, script, timeout=3)
  pids = [int(p.name) for p in pid_dir.iterdir()]
  assert len(pids) == 2
  deadline = time.time() + 10  # SIGKILL is delivered asynchronously
  while any(processes.alive(pid) for pid in pids) and time.time() < deadline:
    time.sleep(0.05)
  assert not any(processes.alive(pid) for pid in pids)


@pytest.mark.parametrize("choice", ["auto", "glibc"])
def test_processes_run_under_tcmalloc_unless_told_not_to(tmp_path, choice):
  if choice == "auto":
    packaged_data.require(
      host_malloc.find("tcmalloc") is not None,
      f"tcmalloc is not installed ({host_malloc.INSTALL_HINT})",
    )
  script = (
    "import os; from jaxssl.kernels.cpu import host_malloc; "
    "print('malloc', host_malloc.loaded(), os.environ.get('TCMALLOC_RELEASE_RATE'))"
  )
  env = host_malloc.environment_for("glibc", {"JAXSSL_MALLOC": choice, "PYTHONPATH": ROOT})
  rc, out = _launch(tmp_path, script, env=env)
  assert rc == 0, out
  for i in range(2):
    log = (tmp_path / "logs" / f"process_{i}.log").read_text()
    expected = "malloc tcmalloc 0" if choice == "auto" else "malloc glibc None"
    assert expected in log, log


def test_processes_keep_the_callers_xla_flags_and_get_their_device_count(tmp_path):
  script = (
    "import os, jax; print('flags', os.environ['XLA_FLAGS']); "
    "print('devices', jax.local_device_count())"
  )
  rc, out = _launch(
    tmp_path,
    script,
    env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8"},
    timeout=60,
  )
  assert rc == 0, out
  for i in range(2):
    log = (tmp_path / "logs" / f"process_{i}.log").read_text()
    assert "--xla_cpu_enable_fast_math=false" in log and "devices 1" in log, log


def test_accelerator_installs_are_the_jax_extras_the_launchers_use():
  """`.[cuda]` / `.[tpu]` name current jax extras (checked against the installed jax's own
  metadata) and are what launch/slurm.sbatch and launch/tpu_pod.sh install."""
  import configparser  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  setup = configparser.ConfigParser()
  setup.read(os.path.join(ROOT, "setup.cfg"))
  extras = setup["options.extras_require"]
  jax_extras = set(metadata.metadata("jax").get_all("Provides-Extra"))
  for name, wanted in (("cuda", "cuda12"), ("tpu", "tpu")):
    requirement = extras[name].split()
    assert requirement == [f"jax[{wanted}]"], requirement
    assert wanted in jax_extras
  with open(os.path.join(ROOT, "launch", "slurm.sbatch")) as f:
    assert "[cuda]" in f.read()
  with open(os.path.join(ROOT, "launch", "tpu_pod.sh")) as f:
    assert "-e '.[tpu]'" in f.read()
