"""Test setup: 8 simulated CPU devices before JAX starts, and shared fixtures."""
import os

# Must run before jax is imported anywhere: multi-device code is tested on CPU.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the whole test run: the trainer/eval subprocesses and the xdist
# workers compile the same tiny train steps again and again; each compiles once here. Set in
# the environment, so every subprocess (they inherit it) and worker shares it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxssl_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so embedded datasets are prepared once."""
  return str(tmp_path_factory.mktemp("tfds"))
