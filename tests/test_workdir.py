"""jaxssl.workdir: a record written before a config key existed still resumes and evaluates."""

import json

import pytest

from jaxssl import config_lib
from jaxssl import errors
from jaxssl import workdir as workdir_lib


def _old_record(tmp_path, config):
  """config.json as a jaxssl without the ADDED_KEYS wrote it."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  for key in workdir_lib.ADDED_KEYS:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
      node = node[part]
    del node[leaf]
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(data))


def test_added_keys_exist_in_the_base_config_with_their_old_behaviour_values():
  plain = json.loads(config_lib.base_config().to_json_best_effort())
  for key, value in workdir_lib.ADDED_KEYS.items():
    node = plain
    for part in key.split("."):
      node = node[part]
    assert node == value, key


def test_a_record_without_the_added_keys_resumes_and_reads_them_as_old_behaviour(tmp_path):
  config = config_lib.load_config_file("configs/simclr.py:test")
  _old_record(tmp_path, config)
  assert workdir_lib.check(str(tmp_path), config) == {}
  recorded = workdir_lib.read_config(str(tmp_path))
  assert recorded.optim.grad_clip_mode == "global" and recorded.optim.layer_decay == 1.0
  assert recorded.optim.weight_decay_end is None and list(recorded.optim.frozen_until) == []


def test_a_record_without_the_added_keys_still_refuses_a_new_value(tmp_path):
  config = config_lib.load_config_file("configs/simclr.py:test")
  _old_record(tmp_path, config)
  config.unlock()
  config.optim.grad_clip_mode = "per_tensor"
  with pytest.raises(
    errors.WorkdirError, match=r"optim.grad_clip_mode: 'global' there, 'per_tensor' now"
  ):
    workdir_lib.check(str(tmp_path), config)


@pytest.mark.parametrize(
  "spec,section,strength",
  [("configs/simsiam.py:test", "augment", 0.5), ("configs/dino.py:test", "crops", 0.5)],
)
def test_a_record_with_a_jitter_strength_reads_as_its_four_maxima(
  tmp_path, spec, section, strength
):
  """Records from before per-component jitter hold `jitter_strength`; SimCLR's (0.8 s, 0.8 s,
  0.8 s, 0.2 s) with multiplicative brightness is what they computed."""
  config = config_lib.load_config_file(spec)
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  node = data[section]
  assert node.pop("jitter") == [0.4, 0.4, 0.4, 0.1]
  node.pop("brightness_mode", None)
  node["jitter_strength"] = strength
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(data))
  assert workdir_lib.check(str(tmp_path), config) == {}
  recorded = workdir_lib.read_config(str(tmp_path))
  assert list(recorded[section].jitter) == [0.4, 0.4, 0.4, 0.1]
  assert "jitter_strength" not in recorded[section]
  config.unlock()
  config[section].jitter = (0.4, 0.4, 0.2, 0.1)
  with pytest.raises(errors.WorkdirError, match=rf"{section}.jitter"):
    workdir_lib.check(str(tmp_path), config)


@pytest.mark.parametrize("method", sorted(workdir_lib.METHOD_ADDED_KEYS))
def test_method_added_keys_read_an_old_record_as_its_old_behaviour(tmp_path, method):
  """A record of `method` without its METHOD_ADDED_KEYS resumes under a config holding their
  old-behaviour values; under the preset's new values the refusal names them. Other methods'
  records are not touched (a shared section such as `head` differs between methods)."""
  added = workdir_lib.METHOD_ADDED_KEYS[method]
  config = config_lib.load_config_file(f"configs/{method}.py:test")
  config.unlock()
  new_values = {}
  for key, old in added.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    assert leaf in node, f"{key} is not in configs/{method}.py:test"
    new_values[key] = node[leaf]
    node[leaf] = old
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  for key in added:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
      node = node[part]
    del node[leaf]
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(data))
  assert workdir_lib.check(str(tmp_path), config) == {}
  changed = [k for k, v in new_values.items() if v != added[k]]
  if changed:
    fresh = config_lib.load_config_file(f"configs/{method}.py:test")
    with pytest.raises(errors.WorkdirError, match=changed[0].replace(".", r"\.")):
      workdir_lib.check(str(tmp_path), fresh)
  other = config_lib.load_config_file("configs/vicreg.py:test")
  assert workdir_lib._with_added_keys(  # pylint: disable=protected-access
    json.loads(other.to_json_best_effort())
  ) == json.loads(other.to_json_best_effort())
