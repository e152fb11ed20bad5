"""Held-out LM metrics vs NumPy: next-token NLL, perplexity, bits per byte, unigram baseline,
and the eval job's 'language' protocol on a trained GPT test run."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import evaluate
from jaxssl.data import datasets
from jaxssl.eval import language
from jaxssl.methods import gpt
from tests.methods import harness

V = 7


def _bigram_logits(table):
  return lambda tokens: jnp.asarray(table)[tokens]  # logits of position t depend on x_t only


def test_next_token_nll_matches_numpy_and_pads_last_batch():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(V, V))
  tokens = rng.integers(0, V, size=(11, 6)).astype(np.int32)
  nll = language.next_token_nll(_bigram_logits(table), tokens, batch_size=4)
  logp = table - np.log(np.exp(table).sum(1, keepdims=True))
  expected = -logp[tokens[:, :-1], tokens[:, 1:]]
  assert nll.shape == (11, 5)
  np.testing.assert_allclose(nll, expected, rtol=1e-5)


def test_summary_formulas():
  nll = np.array([[1.0, 2.0], [0.5, 0.5]])
  out = language.summarize(nll, bytes_per_token=2.5)
  assert out["nll"] == pytest.approx(1.0)
  assert out["perplexity"] == pytest.approx(math.e)
  assert out["bits_per_token"] == pytest.approx(1 / math.log(2))
  assert out["bits_per_byte"] == pytest.approx(1 / math.log(2) / 2.5)


def test_unigram_baseline_matches_numpy():
  train = np.array([[0, 1, 1, 2], [2, 2, 2, 0]])
  held_out = np.array([[3, 2, 0]])
  counts = np.array([2, 2, 4, 0]) + 1.0
  p = counts / counts.sum()
  expected = -(np.log2(p[2]) + np.log2(p[0])) / 2 / 1.5
  assert language.unigram_bits_per_byte(train, held_out, 4, 1.5) == pytest.approx(expected)


def test_eval_job_language_protocol_on_a_gpt_run(tmp_path, data_dir):
  config = harness.load_config("gpt")
  workdir = str(tmp_path / "gpt")
  harness.train_test_preset(config, workdir, data_dir)
  eval_config = config_lib.load_config_file(os.path.join(harness.ROOT, "configs/eval.py"))
  with eval_config.unlocked():
    eval_config.data_dir = data_dir
    eval_config.batch_size = 64
  job = evaluate.EvalJob(workdir, eval_config)
  assert job.protocols == [language.PROTOCOL]
  job.run(watch=False)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "eval", "metrics.jsonl"))]
  final = {r["metric"]: r["value"] for r in rows if r["step"] == 6}
  # Recompute from the restored final params with a plain NumPy log-softmax.
  method = gpt.Method(config)
  checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
  variables = job.encoder.restore(checkpointer, 6)
  checkpointer.close()
  info = datasets.get_info(config.data.name, data_dir)
  test = datasets.get_source(config.data.name, "test", data_dir)
  tokens = np.stack([test[i]["tokens"] for i in range(len(test))])
  logits = np.asarray(method.logits(variables["params"], variables["aux"], tokens), np.float64)
  logz = np.log(np.exp(logits[:, :-1]).sum(-1))
  picked = np.take_along_axis(logits[:, :-1], tokens[:, 1:, None].astype(np.int64), -1)[..., 0]
  mean_nll = np.mean(logz - picked)
  assert final["nll"] == pytest.approx(mean_nll, rel=1e-4)
  assert final["bits_per_byte"] == pytest.approx(
    mean_nll / math.log(2) / info.bytes_per_token["test"], rel=1e-4
  )
  assert 0 < final["unigram_bits_per_byte"] < 8
