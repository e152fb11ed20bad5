"""Test setup: 8 simulated CPU devices before JAX starts, and shared fixtures."""
import os

# Must run before jax is imported anywhere: multi-device code is tested on CPU.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so embedded datasets are prepared once."""
  return str(tmp_path_factory.mktemp("tfds"))
