"""GPT: next-token loss vs a float64 NumPy recomputation, causality of the loss, pipeline, a run."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.data import datasets
from jaxssl.methods import gpt
from tests.methods import harness


def _batch(seed=0, shape=(4, 32)):
  return {"tokens": jax.random.randint(jax.random.key(seed), shape, 0, 259, jnp.int32)}


def _numpy_next_token_nll(logits, tokens):
  logits = np.asarray(logits, np.float64)[:, :-1]
  targets = np.asarray(tokens)[:, 1:]
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return np.mean(logz - picked)


def test_loss_matches_numpy_and_metrics():
  method = gpt.Method(harness.load_config("gpt"))
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.key(0), 0)
  logits = method.logits(params, aux, batch["tokens"])
  np.testing.assert_allclose(loss, _numpy_next_token_nll(logits, batch["tokens"]), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_token"], loss / np.log(2), rtol=1e-6)
  # At init the tied head is near uniform: loss ~ ln(vocab).
  assert abs(float(loss) - np.log(259)) < 0.5
  assert new_aux is aux
  assert method.encode(params, aux, batch["tokens"]).shape == (4, 16)


def test_presets_use_gpt2_init_and_no_head_bias():
  for preset in ("test", "shakespeare", "gpt2"):
    model = harness.load_config("gpt", preset).model
    assert (model.init_scheme, model.head_bias) == ("gpt2", False), preset
  method = gpt.Method(harness.load_config("gpt"))
  params, _ = harness.init_method(method, _batch())
  assert "head_bias" not in params  # GPT-2: logits = h @ wte^T
  depth = 2
  kernels = {"plain": [], "residual": []}
  for i in range(depth):
    attention, mlp = params[f"block_{i}"]["SelfAttention_0"], params[f"block_{i}"]["MlpBlock_0"]
    kernels["plain"] += [attention[f"{n}_kernel"] for n in ("query", "key", "value")]
    kernels["plain"].append(mlp["Dense_0"]["kernel"])
    kernels["residual"] += [attention["out_kernel"], mlp["Dense_1"]["kernel"]]
    assert not any(np.any(np.asarray(b)) for b in jax.tree.leaves(mlp) if b.ndim == 1)
  # Pooled over the tiny preset's kernels (2,560 and 1,536 draws): within 10 % of the target.
  for group, std in (("plain", 0.02), ("residual", 0.02 / np.sqrt(2 * depth))):
    drawn = np.concatenate([np.asarray(k, np.float64).ravel() for k in kernels[group]])
    assert abs(drawn.std() / std - 1) < 0.1, (group, drawn.std(), std)


def test_gradient_of_early_losses_ignores_future_tokens():
  method = gpt.Method(harness.load_config("gpt"))
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  logits_a = method.logits(params, aux, batch["tokens"])
  changed = batch["tokens"].at[:, 20:].set((batch["tokens"][:, 20:] + 7) % 259)
  logits_b = method.logits(params, aux, changed)
  np.testing.assert_allclose(logits_a[:, :20], logits_b[:, :20], atol=1e-6)


def test_pipeline_yields_packed_windows(data_dir):
  config = harness.load_config("gpt")
  method = gpt.Method(config)
  info = datasets.get_info(config.data.name, data_dir)
  transform = method.train_transform(info)
  source = datasets.get_source(config.data.name, "train", data_dir)
  example = transform.random_map(source[3], np.random.default_rng(0))
  assert set(example) == set(method.batch_keys)
  np.testing.assert_array_equal(example["tokens"], source[3]["tokens"])
  assert example["tokens"].dtype == np.int32 and example["tokens"].shape == (32,)


def test_train_test_preset_runs(tmp_path, data_dir):
  config = harness.load_config("gpt")
  _, rows = harness.train_test_preset(config, str(tmp_path / "gpt"), data_dir)
  assert rows[0]["train/loss"] > rows[-1]["train/loss"] - 0.5
