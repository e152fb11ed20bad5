"""BERT MLM: 15 % / 80-10-10 corruption statistics, loss vs NumPy, bidirectionality, a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.data import datasets
from jaxssl.data.text_masking import BertMasking
from jaxssl.methods import mlm
from tests.methods import harness

SPECIALS = (256, 257, 258)


def _masking(**kwargs):
  return BertMasking(mask_id=258, vocab_size=259, special_ids=SPECIALS, **kwargs)


def test_bert_masking_statistics():
  transform = _masking()
  rng = np.random.default_rng(0)
  counts = np.zeros(3)
  for _ in range(400):
    original = rng.integers(0, 256, size=128).astype(np.int32)
    out = transform.random_map({"tokens": original}, rng)
    np.testing.assert_array_equal(out["labels"], original)
    chosen = out["mask"].astype(bool)
    assert chosen.sum() == round(0.15 * 128)
    # Unchosen positions are untouched.
    np.testing.assert_array_equal(out["tokens"][~chosen], original[~chosen])
    new = out["tokens"][chosen]
    is_mask = new == 258
    unchanged = (new == original[chosen]) & ~is_mask
    counts += [is_mask.sum(), (~is_mask & ~unchanged).sum(), unchanged.sum()]
    assert not np.isin(new[~is_mask], SPECIALS).any()
  fractions = counts / counts.sum()
  # A random replacement equals the original with prob 1/256, so 'unchanged' gains ~0.04 %.
  np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.015)


def test_bert_masking_is_seeded_and_validates():
  tokens = {"tokens": np.arange(64, dtype=np.int32)}
  a = _masking().random_map(tokens, np.random.default_rng(5))
  b = _masking().random_map(tokens, np.random.default_rng(5))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(ValueError, match="mask_prob"):
    _masking(mask_prob=0.0)
  with pytest.raises(ValueError, match="replace_mask"):
    _masking(replace_mask=0.95, replace_random=0.1)


def _batch():
  rng = np.random.default_rng(0)
  transform = _masking()
  examples = [
    transform.random_map({"tokens": rng.integers(0, 256, 32).astype(np.int32)}, rng)
    for _ in range(4)
  ]
  return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def test_loss_matches_numpy():
  method = mlm.Method(harness.load_config("mlm"))
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  loss, (metrics, _) = method.loss_fn(params, aux, batch, jax.random.key(0), 0)
  logits = np.asarray(method.logits(params, aux, batch["tokens"]), np.float64)
  logz = np.log(np.exp(logits).sum(-1))
  picked = np.take_along_axis(logits, np.asarray(batch["labels"])[..., None], -1)[..., 0]
  weights = np.asarray(batch["mask"], np.float64)
  np.testing.assert_allclose(loss, ((logz - picked) * weights).sum() / weights.sum(), rtol=1e-5)
  assert metrics["mask_ratio"] == pytest.approx(5 / 32)
  assert method.encode(params, aux, batch["tokens"]).shape == (4, 16)


def test_presets_have_berts_head_transform_and_bert_base_clips():
  for preset in ("test", "shakespeare", "bert_base"):
    assert harness.load_config("mlm", preset).model.lm_transform, preset
  # bert optimization.py l.74: tf.clip_by_global_norm(grads, clip_norm=1.0).
  optim = harness.load_config("mlm", "bert_base").optim
  assert (optim.grad_clip_norm, optim.grad_clip_mode) == (1.0, "global")
  method = mlm.Method(harness.load_config("mlm"))
  params, _ = harness.init_method(method, _batch())
  # Dense(width) -> GELU -> LayerNorm, then the tied decoder with its output bias.
  assert params["lm_transform"]["kernel"].shape == (16, 16)
  assert set(params["lm_transform_norm"]) == {"scale", "bias"}
  assert params["head_bias"].shape == (259,) and "head_kernel" not in params


def test_model_is_bidirectional():
  method = mlm.Method(harness.load_config("mlm"))
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  changed = batch["tokens"].at[:, -1].set((batch["tokens"][:, -1] + 1) % 256)
  a = method.logits(params, aux, batch["tokens"])[:, 0]
  b = method.logits(params, aux, changed)[:, 0]
  assert np.abs(np.asarray(a - b)).max() > 1e-5


def test_vocab_mismatch_raises(data_dir):
  config = harness.load_config("mlm")
  info = datasets.get_info("pydoc_topics:bpe300:32", data_dir)
  with pytest.raises(ValueError, match="vocab_size=300"):
    mlm.Method(config).train_transform(info)


def test_train_test_preset_runs(tmp_path, data_dir):
  harness.train_test_preset(harness.load_config("mlm"), str(tmp_path / "mlm"), data_dir)
