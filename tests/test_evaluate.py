"""The separate eval job end to end: pretrain -> Orbax checkpoints -> eval job -> reports."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import errors
from jaxssl import evaluate
from jaxssl import methods
from jaxssl import train as train_lib
from jaxssl.data import augment
from jaxssl.data import datasets
from jaxssl.eval import features as features_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_METRICS = {"linear": "top1", "knn": "top1", "fewshot": "5shot_top1"}


def _train_config(data_dir, **overrides):
  c = config_lib.load_config_file(os.path.join(ROOT, "configs/simclr.py:test"))
  c.data.data_dir = data_dir
  for k, v in overrides.items():
    c[k] = v
  return c


def _eval_config():
  return config_lib.load_config_file(os.path.join(ROOT, "configs/eval.py:test"))


def _rows(workdir):
  with open(os.path.join(workdir, "eval", "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run"))
  train_lib.train(_train_config(data_dir), workdir)
  return workdir


def test_pretrain_checkpoint_eval_handoff(trained_workdir):
  table = evaluate.evaluate(trained_workdir, _eval_config())
  rows = _rows(trained_workdir)
  steps = checkpoint.Checkpointer(trained_workdir, read_only=True).all_steps()
  assert steps == [3, 6]
  for step in [0] + steps:  # 0 = the random-init baseline
    for protocol, metric in PROTOCOL_METRICS.items():
      values = [
        r["value"]
        for r in rows
        if (r["step"], r["protocol"], r["metric"]) == (step, protocol, metric)
      ]
      assert len(values) == 1, (step, protocol)
      assert 0.0 <= values[0] <= 1.0
  assert "0 (random init)" in table and "| 6 |" in table
  eval_dir = os.path.join(trained_workdir, "eval")
  assert open(os.path.join(eval_dir, "results.md")).read() == table
  for png in ("linear.png", "knn.png", "fewshot.png"):
    assert os.path.getsize(os.path.join(eval_dir, png)) > 1000
  assert os.listdir(os.path.join(eval_dir, "tensorboard"))

  # Re-running evaluates nothing twice.
  evaluate.evaluate(trained_workdir, _eval_config())
  assert len(_rows(trained_workdir)) == len(rows)


def test_features_come_from_the_checkpointed_encoder(trained_workdir, data_dir):
  """Encoder-only restore gives exactly the features of the full train state's params."""
  encoder = features_lib.Encoder(trained_workdir)
  ckpt = checkpoint.Checkpointer(trained_workdir, read_only=True)
  variables = encoder.restore(ckpt, 6)
  assert set(variables) == {"params", "aux"}  # no optimizer state was read
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  full_ckpt = checkpoint.Checkpointer(trained_workdir, read_only=True)
  full = full_ckpt.manager.restore(6, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
    "state"
  ]
  info = datasets.get_info("digits", data_dir)
  source = datasets.get_source("digits", "test", data_dir)
  feats, labels = encoder.features(variables, source, info, batch_size=64)
  assert feats.shape[0] == labels.shape[0] == len(source) == 400

  method = methods.build(encoder.config)
  transform = augment.Deterministic(mean=info.mean, std=info.std, output_size=8)
  images = np.stack([transform.map(source[i])["image"] for i in range(5)])
  direct = method.encode(full["params"], full["aux"], images)
  np.testing.assert_allclose(feats[:5], np.asarray(direct), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(labels[:5], [source[i]["label"] for i in range(5)])
  # Pretraining moved the encoder: step-0 features differ.
  init_feats, _ = encoder.features(encoder.random_init(), source, info, batch_size=64)
  assert not np.allclose(init_feats, feats)
  ckpt.close()


def test_unknown_protocol_and_missing_run(tmp_path):
  with pytest.raises(errors.WorkdirError, match="No config.json in"):
    evaluate.evaluate(str(tmp_path), _eval_config())
  c = _eval_config()
  c.unlock()
  c.protocols = ("linear", "svm")
  with pytest.raises(errors.ConfigError, match=r"Unknown eval protocols \['svm'\]"):
    evaluate.EvalJob(str(tmp_path), c)


@pytest.mark.slow
def test_watch_beside_a_trainer_that_deletes_checkpoints(tmp_path, data_dir):
  """--watch starts before the trainer, follows it while it saves every 2 steps keeping only
  the newest, never crashes, and exits after evaluating the final step."""
  workdir = str(tmp_path / "live")
  env = dict(os.environ, JAXSSL_DATA_DIR=data_dir)
  trainer = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "jaxssl.train",
      f"--config={ROOT}/configs/simclr.py:test",
      f"--workdir={workdir}",
      "--config.total_steps=12",
      "--config.checkpoint.every_steps=2",
      "--config.checkpoint.max_to_keep=1",
      f"--config.data.data_dir={data_dir}",
    ],
    env=env,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  watcher = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxssl.evaluate",
      f"--workdir={workdir}",
      "--watch",
      f"--config={ROOT}/configs/eval.py:test",
      "--config.protocols=('knn',)",
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  trainer_out, _ = trainer.communicate(timeout=600)
  assert trainer.returncode == 0, trainer_out[-3000:]
  assert watcher.returncode == 0, watcher.stderr[-3000:]
  steps = {r["step"] for r in _rows(workdir)}
  assert 12 in steps and 0 in steps
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [12]
