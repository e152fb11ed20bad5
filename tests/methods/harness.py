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
  return encoder.features(
    encoder.random_init(),
    datasets.get_source("digits", f"test[:{num_examples}]", data_dir),
    info,
    batch_size=16,
  )


def encoder_teacher_gradients(method, params, aux, batch, rng=None):
  """For methods whose aux['teacher'] is {'encoder': EMA copy}: checks the gradient into the
  teacher is exactly zero, even with the teacher tied to the student encoder (then the
  student's gradient is unchanged: nothing flows via the targets), and every student gradient
  is finite. Returns the student's gradients."""
  rng = jax.random.PRNGKey(1) if rng is None else rng

  def loss(p, teacher):
    return method.loss_fn(p, {**aux, "teacher": teacher}, batch, rng, 0)[0]

  grads, grad_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(
    params, {"encoder": params["encoder"]}
  )
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_teacher))
  tied = jax.jit(jax.grad(lambda p: loss(p, {"encoder": p["encoder"]})))(params)
  for t, f in zip(jax.tree.leaves(tied), jax.tree.leaves(grads)):
    np.testing.assert_allclose(t, f, rtol=1e-6, atol=1e-9)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  return grads
