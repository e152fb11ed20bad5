"""What the CLIP and SigLIP tests share: batches, tower outputs, gradients, a real run.

Sharding invariance of both methods (loss, gradients on 8 simulated devices) is checked by
tests/test_sharding_invariance.py, which covers every method's `test` preset."""

import os

import jax
import numpy as np

from jaxssl import methods
import harness

CAPTIONS = (
  "A frog. animals amphibians frog",
  "A red apple. food fruit apple",
  "The letter x. symbols alphabets x",
  "A car. vehicles auto car",
  "A planet. space planets",
  "A hat. clothes hats",
  "A tree. plants trees",
  "A coin. symbols money coin",
)


def random_batch(method, n=8, seed=0):
  """n random 8x8 RGB images and n real-looking captions tokenised by the method."""
  rng = np.random.default_rng(seed)
  return {
    "image": rng.normal(size=(n, 8, 8, 3)).astype(np.float32),
    "tokens": np.stack([method.tokenize(CAPTIONS[i % len(CAPTIONS)]) for i in range(n)]),
  }


def setup(method_name):
  method = methods.build(harness.load_config(method_name))
  batch = random_batch(method)
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def tower_outputs(method, params, batch):
  """(img, txt, scalars) from the model's own __call__, float64 NumPy."""
  img, txt, scalars = method.model.apply({"params": params}, batch["image"], batch["tokens"])
  return (
    np.asarray(img, np.float64),
    np.asarray(txt, np.float64),
    {k: float(v) for k, v in scalars.items()},
  )


def unit_rows(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_every_parameter_gets_gradient(method, params, aux, batch):
  grads = jax.jit(jax.grad(lambda p: method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), 0)[0]))(
    params
  )
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
    assert float(np.abs(g).sum()) > 0, jax.tree_util.keystr(path)
  return grads


def encode_is_the_image_tower(method, batch, params, aux):
  feats = method.encode(params, aux, batch["image"])
  direct, _ = method.model.image_encoder.apply({"params": params["image_encoder"]}, batch["image"])
  np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)
  emb = method.embed_images(params, aux, batch["image"])
  img, _, _ = method.model.apply({"params": params}, batch["image"], batch["tokens"])
  np.testing.assert_allclose(emb, img, rtol=1e-5, atol=1e-6)
  assert feats.shape[1] == method.config.model.width
  assert emb.shape[1] == method.config.image_text.embed_dim


def train_and_evaluate(method_name, workdir, data_dir):
  """The test preset through the real trainer, then the eval job with every protocol."""
  from jaxssl import config_lib  # pylint: disable=g-import-not-at-top
  from jaxssl import evaluate  # pylint: disable=g-import-not-at-top

  config = harness.load_config(method_name)
  config.checkpoint.every_steps = 6  # one checkpoint: the eval job evaluates it + random init
  logged, rows = harness.train_test_preset(config, workdir, data_dir)
  eval_config = config_lib.load_config_file(os.path.join(harness.ROOT, "configs/eval.py:test"))
  # Few-shot runs: dejavu_glyphs, the test preset's set, has 141 or more training examples in
  # each of its 4 classes (eval test preset: 1 and 5 shots). The linear probe is left out: its
  # L-BFGS is slow and covered by tests/test_evaluate.py.
  eval_config.protocols = ("knn", "fewshot", "zeroshot", "retrieval")
  table = evaluate.evaluate(workdir, eval_config)
  results = {}
  for r in evaluate.report_lib.EvalReport(workdir, tensorboard=False).rows():
    results[(r["step"], r["protocol"], r["metric"])] = r["value"]
  return logged, rows, table, results
