"""Tests for jaxssl.losses.predictive against float64 NumPy derivations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def _smooth_l1(d, beta):
  return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


def _log_softmax(x):
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def test_ijepa_matches_reference_and_stops_target_gradient(rng):
  pred = rng.normal(size=(2, 5, 4)).astype(np.float32)
  target = rng.normal(size=(2, 5, 4)).astype(np.float32)
  loss, metrics = losses.ijepa(pred, target)
  d = pred.astype(np.float64) - target
  want = np.mean([np.sum(d[b, m] ** 2) for b in range(2) for m in range(5)])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  smooth, _ = losses.ijepa(pred, target, loss="smooth_l1")
  np.testing.assert_allclose(smooth, np.mean(_smooth_l1(d, 1.0)), rtol=1e-5)
  flat = pred.reshape(-1, 4).astype(np.float64)
  np.testing.assert_allclose(metrics["pred_std"], np.mean(np.sqrt(flat.var(0) + 1e-6)), rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p, t: losses.ijepa(p, t)[0], argnums=(0, 1)))(pred, target)
  np.testing.assert_allclose(grads[0], 2 * d / 10, rtol=1e-5, atol=1e-7)
  assert np.all(grads[1] == 0)
  with pytest.raises(ValueError, match="'l2' or 'smooth_l1'"):
    losses.ijepa(pred, target, loss="l1")
  with pytest.raises(ValueError, match="same shape"):
    losses.ijepa(pred, target[:, :4])


def _data2vec_reference(pred, layers, mask, top_k, beta, eps=1e-5):
  """Instance norm, top-K average, masked regression, with explicit loops."""
  pred, layers = pred.astype(np.float64), layers.astype(np.float64)
  n_layers, batch, time, dim = layers.shape
  target = np.zeros((batch, time, dim))
  for l in range(n_layers - top_k, n_layers):
    for b in range(batch):
      for c in range(dim):
        x = layers[l, b, :, c]
        target[b, :, c] += (x - x.mean()) / np.sqrt(x.var() + eps) / top_k
  total, count = 0.0, 0
  for b in range(batch):
    for t in range(time):
      if mask[b, t]:
        d = pred[b, t] - target[b, t]
        per = np.sum(d * d) if beta == 0 else np.sum(_smooth_l1(d, beta))
        total += per / np.sqrt(dim)
        count += 1
  return total / count


@pytest.mark.parametrize("top_k,beta", [(2, 0.0), (3, 0.25)])
def test_data2vec_matches_reference(rng, top_k, beta):
  pred = rng.normal(size=(2, 6, 4)).astype(np.float32)
  layers = (rng.normal(size=(3, 2, 6, 4)) * 3 + 1).astype(np.float32)
  mask = rng.random(size=(2, 6)) < 0.5
  mask[:, 0] = True
  loss, metrics = losses.data2vec(pred, layers, mask, top_k=top_k, loss_beta=beta)
  np.testing.assert_allclose(loss, _data2vec_reference(pred, layers, mask, top_k, beta), rtol=1e-5)
  np.testing.assert_allclose(metrics["mask_ratio"], mask.mean(), rtol=1e-6)


def test_data2vec_masked_positions_top_layers_and_stop_gradient(rng):
  pred = rng.normal(size=(2, 6, 4)).astype(np.float32)
  layers = rng.normal(size=(4, 2, 6, 4)).astype(np.float32)
  mask = np.array([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], bool)
  loss, _ = losses.data2vec(pred, layers, mask, top_k=2)
  # Unmasked predictions and layers below the top K do not matter.
  changed_pred = np.where(mask[..., None], pred, -50.0).astype(np.float32)
  changed_layers = layers.copy()
  changed_layers[:2] = 9.0
  np.testing.assert_allclose(
    losses.data2vec(changed_pred, changed_layers, mask, top_k=2)[0], loss, rtol=1e-6
  )
  # Instance norm makes each layer's per-channel offset and scale irrelevant.
  affine = layers * rng.uniform(0.5, 2.0, size=(4, 2, 1, 4)) + 3.0
  np.testing.assert_allclose(
    losses.data2vec(pred, affine.astype(np.float32), mask, top_k=2)[0], loss, rtol=1e-4
  )
  grads = jax.jit(jax.grad(lambda p, l: losses.data2vec(p, l, mask, top_k=2)[0], argnums=(0, 1)))(
    pred, layers
  )
  assert np.all(grads[0][~mask] == 0) and np.any(grads[0][mask] != 0)
  assert np.all(grads[1] == 0)
  with pytest.raises(ValueError, match="top_k"):
    losses.data2vec(pred, layers, mask, top_k=5)
  with pytest.raises(ValueError, match="target_layers"):
    losses.data2vec(pred, layers[:, :, :5], mask)


def _data2vec_layer_reference(pred, layers, mask, top_k, beta, eps=1e-5):
  """The official vision targets with explicit loops: LN over D of each of the top-K layers,
  average, LN again; then F.smooth_l1_loss(beta)'s mean over every masked element."""
  pred, layers = pred.astype(np.float64), layers.astype(np.float64)
  n_layers, batch, time, dim = layers.shape

  def ln(v):
    return (v - v.mean()) / np.sqrt(v.var() + eps)

  total, count = 0.0, 0
  for b in range(batch):
    for t in range(time):
      y = ln(sum(ln(layers[l, b, t]) for l in range(n_layers - top_k, n_layers)) / top_k)
      if mask[b, t]:
        total += np.sum(_smooth_l1(pred[b, t] - y, beta))
        count += dim
  return total / count


@pytest.mark.parametrize("top_k,beta", [(2, 2.0), (3, 0.25)])
def test_data2vec_layer_norm_targets_match_the_vision_code(rng, top_k, beta):
  pred = rng.normal(size=(2, 6, 4)).astype(np.float32)
  layers = (rng.normal(size=(3, 2, 6, 4)) * 3 + 1).astype(np.float32)
  mask = rng.random(size=(2, 6)) < 0.5
  mask[:, 0] = True
  loss, metrics = losses.data2vec(
    pred, layers, mask, top_k=top_k, loss_beta=beta, loss_scale=1 / 4, target_norm="layer"
  )
  want = _data2vec_layer_reference(pred, layers, mask, top_k, beta)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["mask_ratio"], mask.mean(), rtol=1e-6)
  # The final LN: against zero predictions the L2 element mean is each target token's mean
  # square over D, i.e. 1 (up to eps) for a token of mean 0 and variance 1.
  zeros = np.zeros_like(pred)
  second_moment, _ = losses.data2vec(
    zeros, layers, mask, top_k=top_k, loss_scale=1 / 4, target_norm="layer"
  )
  np.testing.assert_allclose(second_moment, 1.0, rtol=1e-4)
  # A per-token affine change of any layer (LN's invariance, not instance norm's) is irrelevant.
  affine = layers * rng.uniform(0.5, 2.0, size=(3, 2, 6, 1)) + rng.normal(size=(3, 2, 6, 1))
  np.testing.assert_allclose(
    losses.data2vec(
      pred,
      affine.astype(np.float32),
      mask,
      top_k=top_k,
      loss_beta=beta,
      loss_scale=1 / 4,
      target_norm="layer",
    )[0],
    loss,
    rtol=1e-4,
  )
  with pytest.raises(ValueError, match="target_norm"):
    losses.data2vec(pred, layers, mask, top_k=top_k, target_norm="batch")


def test_masked_lm_counts_only_masked_positions(rng):
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[1, 0, 0, 1, 0], [0, 1, 1, 1, 0]], bool)
  loss, metrics = losses.masked_lm(logits, labels, mask)
  log_probs = _log_softmax(logits.astype(np.float64))
  terms = [-log_probs[b, t, labels[b, t]] for b in range(2) for t in range(5) if mask[b, t]]
  hits = [np.argmax(logits[b, t]) == labels[b, t] for b in range(2) for t in range(5) if mask[b, t]]
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(hits))
  np.testing.assert_allclose(metrics["perplexity"], np.exp(np.mean(terms)), rtol=1e-5)
  changed = np.where(mask[..., None], logits, 30.0).astype(np.float32)
  other_labels = np.where(mask, labels, 0)
  np.testing.assert_allclose(losses.masked_lm(changed, other_labels, mask)[0], loss, rtol=1e-6)
  with pytest.raises(ValueError, match="integer"):
    losses.masked_lm(logits, labels.astype(np.float32), mask)


def test_causal_lm_compares_position_t_with_token_t_plus_1(rng):
  logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
  tokens = rng.integers(0, 6, size=(2, 4))
  loss, metrics = losses.causal_lm(logits, tokens)
  log_probs = _log_softmax(logits.astype(np.float64))
  terms = [-log_probs[b, t, tokens[b, t + 1]] for b in range(2) for t in range(3)]
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_token"], np.mean(terms) / np.log(2), rtol=1e-5)
  # d loss / d logits[b, t] = (softmax - onehot(tokens[b, t+1])) / count for
  # t < T-1, and zero at the last position.
  grad = jax.jit(jax.grad(lambda x: losses.causal_lm(x, tokens)[0]))(logits)
  want = np.zeros_like(log_probs)
  for b in range(2):
    for t in range(3):
      want[b, t] = np.exp(log_probs[b, t])
      want[b, t, tokens[b, t + 1]] -= 1
  np.testing.assert_allclose(grad, want / 6, rtol=1e-5, atol=1e-7)
  # The first token is never a target.
  first_changed = tokens.copy()
  first_changed[:, 0] = (tokens[:, 0] + 1) % 6
  np.testing.assert_allclose(losses.causal_lm(logits, first_changed)[0], loss, rtol=1e-6)


def test_causal_lm_padding_mask(rng):
  logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
  tokens = rng.integers(0, 6, size=(2, 5))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  loss, _ = losses.causal_lm(logits, tokens, mask=mask)
  log_probs = _log_softmax(logits.astype(np.float64))
  terms = [-log_probs[b, t, tokens[b, t + 1]] for b in range(2) for t in range(4) if mask[b, t + 1]]
  assert len(terms) == 6
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
  with pytest.raises(ValueError, match="length >= 2"):
    losses.causal_lm(logits[:, :1], tokens[:, :1])
  with pytest.raises(ValueError, match="mask must be"):
    losses.causal_lm(logits, tokens, mask=mask[:, :4])


def test_bf16_logits_give_float32_losses(rng):
  logits = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.bfloat16)
  tokens = rng.integers(0, 6, size=(2, 4))
  loss, metrics = losses.causal_lm(logits, tokens)
  assert loss.dtype == jnp.float32
  assert all(m.dtype == jnp.float32 for m in metrics.values())
  loss, _ = losses.ijepa(logits, logits)
  assert loss.dtype == jnp.float32 and float(loss) == 0.0
