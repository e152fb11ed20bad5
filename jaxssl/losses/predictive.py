"""Predictive losses: latent prediction (I-JEPA, data2vec) and token prediction.

I-JEPA and data2vec regress a student's predictions onto an EMA teacher's
representations; `masked_lm` (BERT) and `causal_lm` (GPT) are the token-level
cross-entropies used by the language methods. All compute in at least float32
and see the global batch.
"""

import math

import jax
import jax.numpy as jnp
import optax


def _upcast(x):
  """Casts to float32, or keeps float64 (used by the float64 gradient tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _smooth_l1(diff, beta):
  """torch.nn.functional.smooth_l1_loss (beta > 0), elementwise: Huber with delta = beta,
  divided by beta (0.5 d^2 / beta below beta, |d| - beta / 2 above)."""
  return optax.losses.huber_loss(diff, delta=beta) / beta


def _mean_std(x, weights):
  """Per-dimension std over (weighted) rows of x [..., D], averaged over D.

  A collapse monitor: 0 when all predictions / targets are the same vector.
  """
  x = x.reshape(-1, x.shape[-1])
  w = weights.reshape(-1, 1)
  total = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(w * x, axis=0) / total
  var = jnp.sum(w * jnp.square(x - mean), axis=0) / total
  return jnp.mean(jnp.sqrt(var + 1e-6))


def ijepa(pred, target, *, loss="l2"):
  """I-JEPA latent prediction loss (Assran et al. 2023, eq. 1).

  'l2' (the paper): the squared L2 distance between predicted and target patch
  representations, mean over patches and batch,
    L = mean_{b, m} || pred[b, m] - target[b, m] ||_2^2.
  Eq. 1 sums over the patches of each target block and averages over blocks;
  with equal-size blocks that is this value times the block size, so averaging
  per patch keeps the scale independent of the block size.
  'smooth_l1': the official code's `F.smooth_l1_loss(z, h)` (beta 1, mean
  over all elements).

  The targets are the EMA target encoder's outputs, layer-normalised over D
  (parameter-free) by the method before selecting the target-block patches.
  They are fixed regression targets, so stop_gradient is applied here.

  Args:
    pred: [B, M, D] predictor outputs at the M target-patch positions (any
      leading axes work, e.g. [B * blocks, patches, D]).
    target: same shape, target-encoder representations of those patches.
    loss: 'l2' or 'smooth_l1'.

  Returns:
    (loss, metrics): 'pred_std' and 'target_std' (mean per-dimension std
    over patches; 0 means collapse).
  """
  pred = _upcast(pred)
  target = jax.lax.stop_gradient(_upcast(target))
  if pred.shape != target.shape or pred.ndim < 2:
    raise ValueError(
      f"pred and target must have the same shape [..., D]; got {pred.shape} "
      f"and {target.shape}. Select the same target-block patches for both."
    )
  diff = pred - target
  if loss == "l2":
    value = jnp.mean(jnp.sum(jnp.square(diff), axis=-1))
  elif loss == "smooth_l1":
    value = jnp.mean(_smooth_l1(diff, 1.0))
  else:
    raise ValueError(f"loss must be 'l2' or 'smooth_l1'; got {loss!r}.")
  ones = jnp.ones(pred.shape[:-1], pred.dtype)
  return value, {"pred_std": _mean_std(pred, ones), "target_std": _mean_std(target, ones)}


def _instance_norm(x, eps):
  """Normalises x [B, T, D] over T per (example, channel), no affine.

  torch.nn.functional.instance_norm on [B, D, T] as data2vec uses it.
  """
  mean = jnp.mean(x, axis=1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps)


def _layer_norm(x, eps):
  """Normalises x [..., D] over D per token, no affine (torch.nn.functional.layer_norm)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps)


TARGET_NORMS = ("instance", "layer")


def data2vec(
  pred,
  target_layers,
  mask,
  *,
  top_k=8,
  loss_beta=0.0,
  loss_scale=None,
  target_norm="instance",
  eps=1e-5,
):
  """data2vec masked latent regression (Baevski et al. 2022, eq. 1-2).

  Target: the average of the teacher's top K layer outputs a^l, normalised
  with stop_gradient, as selected by `target_norm`:
    'instance' (fairseq's audio form, the paper's eq. 2): instance-normalise each
      layer over the time axis (per example and channel, no affine), then average,
        y_t = 1/K sum_{l = L-K+1}^{L} IN(a^l)_t;
    'layer' (the official vision code, data2vec_vision `beit/engine_for_cyclical.py`
      with `--post_target_layer_norm`): layer-normalise each layer over the features
      of every token (no affine), average, and layer-normalise the average again,
        y_t = LN(1/K sum_l LN(a^l_t)).
  Regression on masked positions only:
    per position: s * sum_D (pred_t - y_t)^2          if loss_beta == 0,
                  s * sum_D smooth_l1_beta(pred_t - y_t) otherwise,
    s = loss_scale or 1 / sqrt(D) (fairseq), averaged over the masked positions;
  s = 1 / D is the element mean of the vision code's `F.smooth_l1_loss`.
  The paper tunes K and beta per modality (the defaults are the K = 8, L2
  setting); the method passes its own.

  Args:
    pred: [B, T, D] student regression-head outputs at every position.
    target_layers: [L, B, T, D] teacher block outputs (the FFN output before
      the last residual in the paper); L >= top_k.
    mask: [B, T], 1 / True where the student's input was masked.
    top_k: K, number of final layers averaged.
    loss_beta: 0 for squared error, > 0 for smooth L1 with this beta (a
      Python number: it selects the form of the loss at trace time).
    loss_scale: per-position scale; None means 1 / sqrt(D).
    target_norm: 'instance' or 'layer' (see above).
    eps: normalisation epsilon (1e-5, torch's default).

  Returns:
    (loss, metrics): 'pred_std', 'target_std' over masked positions (fairseq
    logs these to detect collapse), 'mask_ratio'.
  """
  pred = _upcast(pred)
  target_layers = jax.lax.stop_gradient(_upcast(target_layers))
  mask = jnp.asarray(mask)
  if target_layers.ndim != 4 or target_layers.shape[1:] != pred.shape:
    raise ValueError(
      f"target_layers must be [layers, *pred.shape] = [L, {pred.shape}]; got "
      f"{target_layers.shape}. Stack the teacher's block outputs on axis 0."
    )
  if not 1 <= top_k <= target_layers.shape[0]:
    raise ValueError(
      f"top_k={top_k} must be in [1, {target_layers.shape[0]}] (the number "
      "of teacher layers passed)."
    )
  if mask.shape != pred.shape[:2]:
    raise ValueError(f"mask must be [batch, time] = {pred.shape[:2]}; got {mask.shape}.")
  top = target_layers[-top_k:]
  if target_norm == "instance":
    target = jnp.mean(jax.vmap(lambda a: _instance_norm(a, eps))(top), axis=0)
  elif target_norm == "layer":
    target = _layer_norm(jnp.mean(_layer_norm(top, eps), axis=0), eps)
  else:
    raise ValueError(f"target_norm must be one of {TARGET_NORMS}; got {target_norm!r}.")
  diff = pred - target
  if loss_beta == 0:
    per_position = jnp.sum(jnp.square(diff), axis=-1)
  else:
    per_position = jnp.sum(_smooth_l1(diff, loss_beta), axis=-1)
  scale = 1.0 / math.sqrt(pred.shape[-1]) if loss_scale is None else loss_scale
  weights = mask.astype(pred.dtype)
  loss = scale * jnp.sum(per_position * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  return loss, {
    "pred_std": _mean_std(pred, weights),
    "target_std": _mean_std(target, weights),
    "mask_ratio": jnp.mean(weights),
  }


def _token_cross_entropy(logits, labels, weights):
  """Weighted mean CE and accuracy over positions. logits [..., V]."""
  nll = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  total = jnp.maximum(jnp.sum(weights), 1.0)
  loss = jnp.sum(nll * weights) / total
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
  return loss, jnp.sum(correct * weights) / total


def _check_tokens(logits, labels, name):
  if logits.ndim != 3 or labels.shape != logits.shape[:2]:
    raise ValueError(
      f"logits must be [batch, length, vocab] and {name} [batch, length]; "
      f"got {logits.shape} and {labels.shape}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{name} must be integer token ids; got {labels.dtype}.")


def masked_lm(logits, labels, mask):
  """Masked language modelling cross-entropy (Devlin et al. 2019, BERT).

    L = sum_t m_t * (-log softmax(logits_t)[labels_t]) / sum_t m_t

  Only the positions selected for prediction (m_t = 1; BERT's 15%) count.

  Args:
    logits: [B, T, V] predictions at every position.
    labels: [B, T] original token ids (values at unmasked positions ignored).
    mask: [B, T], 1 / True at positions to predict.

  Returns:
    (loss, metrics): 'accuracy' (top-1 on masked positions), 'perplexity',
    'mask_ratio'.
  """
  logits = _upcast(logits)
  labels = jnp.asarray(labels)
  mask = jnp.asarray(mask)
  _check_tokens(logits, labels, "labels")
  if mask.shape != labels.shape:
    raise ValueError(f"mask must be [batch, length] = {labels.shape}; got {mask.shape}.")
  weights = mask.astype(logits.dtype)
  loss, accuracy = _token_cross_entropy(logits, labels, weights)
  return loss, {"accuracy": accuracy, "perplexity": jnp.exp(loss), "mask_ratio": jnp.mean(weights)}


def causal_lm(logits, tokens, *, mask=None):
  """Next-token cross-entropy (Radford et al. 2018/2019, GPT).

  The logits at position t predict token t + 1:
    L = sum_{t < T-1} w_{t+1} * (-log softmax(logits_t)[tokens_{t+1}])
        / sum_{t < T-1} w_{t+1},
  so logits[:, -1] (no next token) and tokens[:, 0] (no context) are unused.

  Args:
    logits: [B, T, V] causal model outputs for the input `tokens`.
    tokens: [B, T] the input token ids.
    mask: optional [B, T] validity of each token (0 for padding); a target
      token counts if its mask is 1. None means all tokens are valid.

  Returns:
    (loss, metrics): 'accuracy', 'perplexity', 'bits_per_token' (loss / ln 2).
  """
  logits = _upcast(logits)
  tokens = jnp.asarray(tokens)
  _check_tokens(logits, tokens, "tokens")
  if tokens.shape[1] < 2:
    raise ValueError(
      f"need sequences of length >= 2 to predict a next token; got length {tokens.shape[1]}."
    )
  if mask is None:
    weights = jnp.ones(tokens[:, 1:].shape, logits.dtype)
  else:
    mask = jnp.asarray(mask)
    if mask.shape != tokens.shape:
      raise ValueError(f"mask must be [batch, length] = {tokens.shape}; got {mask.shape}.")
    weights = mask[:, 1:].astype(logits.dtype)
  loss, accuracy = _token_cross_entropy(logits[:, :-1], tokens[:, 1:], weights)
  return loss, {
    "accuracy": accuracy,
    "perplexity": jnp.exp(loss),
    "bits_per_token": loss / math.log(2.0),
  }
