"""Shared scaffolding of the method tests (imported by tests/methods/test_*.py)."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import config_lib
from jaxssl import train as train_lib
from jaxssl.data import datasets
from jaxssl.eval import features as features_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(method_name, arg="test"):
  return config_lib.load_config_file(os.path.join(ROOT, f"configs/{method_name}.py:{arg}"))


def random_views(n=8, seed=0):
  """A batch of two random 8x8 grayscale views (the test presets' input shape)."""
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32) for k in ("view1", "view2")}


def init_method(method, batch):
  """(params, aux) of `method`, unboxed, from PRNGKey(0)."""
  return jax.jit(lambda rng: nn.unbox(method.init(rng, batch)))(jax.random.PRNGKey(0))


def train_test_preset(config, workdir, data_dir):
  """Runs the whole (6-step) test preset through the real trainer; checks every logged loss
  is finite and the run reached step 6. Returns (last logged metrics, metrics.jsonl rows)."""
  config.data.data_dir = data_dir
  logged = train_lib.train(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["step"] == 6
  assert all(np.isfinite(r["train/loss"]) for r in rows)
  return logged, rows


def eval_job_features(workdir, data_dir, num_examples=40):
  """The eval job's Encoder on `workdir`: random-init features and labels of the first
  `num_examples` digits test images."""
  encoder = features_lib.Encoder(workdir)
  info = datasets.get_info("digits", data_dir)
  return encoder.features(encoder.random_init(),
                          datasets.get_source("digits", f"test[:{num_examples}]", data_dir),
                          info, batch_size=16)
