"""Every config builds; durations; unknown keys fail loudly with the valid ones listed."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from jaxssl import config_lib
from jaxssl import methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _presets(path):
  """The preset arguments a config file declares in its module-level `PRESETS`."""
  spec = importlib.util.spec_from_file_location("_config_presets", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return getattr(module, "PRESETS", ())


def _cases():
  for path in CONFIGS:
    for preset in _presets(path):
      yield path, preset


def test_every_config_file_declares_its_presets():
  missing = [os.path.basename(p) for p in CONFIGS if not _presets(p)]
  assert not missing, f"config files without a PRESETS tuple: {missing}"


@pytest.mark.parametrize("path,preset", list(_cases()))
def test_config_builds_and_is_locked(path, preset):
  config = config_lib.load_config_file(f"{path}:{preset}")
  with pytest.raises(AttributeError):
    config.no_such_key = 1
  if "method" in config:
    assert config.method in methods.available()
    methods.get(config.method)


def test_unknown_preset_and_backbone():
  with pytest.raises(ValueError, match="Unknown simclr preset"):
    config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:cifar"))
  with pytest.raises(ValueError, match="Unknown backbone 'vit_xxl'"):
    config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:test,vit_xxl"))


def test_total_steps_from_steps_epochs_or_examples():
  c = config_lib.base_config()
  c.batch_size = 100
  c.total_epochs = 2.5
  assert config_lib.total_steps(c, 1000) == 25
  c.total_epochs = None
  c.total_examples = 1050
  assert config_lib.total_steps(c, 1000) == 11
  c.total_steps = 7
  with pytest.raises(ValueError, match="exactly one"):
    config_lib.total_steps(c, 1000)


def test_unknown_override_names_valid_keys():
  cfg = os.path.join(ROOT, "configs/simclr.py:test")
  with pytest.raises(
    ValueError, match=r"config\.optim\.lr .*valid keys in config\.optim: .*base_lr"
  ):
    config_lib.check_overrides([f"--config={cfg}", "--config.optim.lr=0.1"])
  config_lib.check_overrides([f"--config={cfg}", "--config.optim.base_lr=0.1"])


def test_unknown_method_fails_with_list():
  with pytest.raises(ValueError, match="Unknown method 'simclear'.*simclr"):
    methods.get("simclear")


def test_cli_rejects_unknown_key_in_one_line(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxssl.train",
      f"--config={ROOT}/configs/simclr.py:test",
      f"--workdir={tmp_path}",
      "--config.batchsize=8",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert out.returncode != 0
  assert "Unknown config key config.batchsize" in out.stderr
  assert "batch_size" in out.stderr
