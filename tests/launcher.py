"""Runs launch/local_multiprocess.sh from a test without ever hanging the suite.

The launcher traps SIGTERM (to forward it), and its JAX processes can block forever in a
collective with a dead peer, so a test that only waits on it can hang the whole run. `start`
puts the launcher and its processes in a process group of their own; `finish` waits with a
timeout and, past it, kills that whole group and fails with what the launcher printed.
"""

import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launch", "local_multiprocess.sh")


def start(num_processes: int, devices_per_process: int, argv, *, env):
  """Starts `argv` (after the Python interpreter) as num_processes JAX processes."""
  return subprocess.Popen(
    ["bash", LAUNCHER, str(num_processes), str(devices_per_process), sys.executable, *argv],
    env=env,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )


def kill(proc) -> str:
  """SIGKILLs the launcher's process group (SIGTERM is trapped); returns its output."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  return proc.communicate()[0]


def finish(proc, timeout: float) -> tuple[int, str]:
  """(exit status, output) of a started launcher; kills it and fails past `timeout` s."""
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    out = kill(proc)
    raise AssertionError(f"the launcher did not exit within {timeout} s: {out[-5000:]}") from None
  return proc.returncode, out


def run(
  num_processes: int, devices_per_process: int, argv, *, env, timeout: float
) -> tuple[int, str]:
  """start + finish."""
  return finish(start(num_processes, devices_per_process, argv, env=env), timeout)
