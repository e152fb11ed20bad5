"""Held-out language-model metrics: perplexity and bits per byte (LM runs' eval protocol).

For a causal LM on packed windows x_1..x_T, every window contributes the next-token negative
log-likelihoods -ln p(x_{t+1} | x_<=t), t = 1..T-1 (the first token of a window has no context
and is not scored). With L = their mean (nats per token),
  perplexity = exp(L),   bits per token = L / ln 2,
  bits per byte = bits per token / (bytes per token),
bytes per token being the split's UTF-8 bytes over its token count (EOS included; text.TextInfo),
which makes byte-level and BPE models comparable (as in Gao et al. 2020, The Pile, sec. 4).

`unigram_bits_per_byte` is the baseline a model must beat: the add-one-smoothed unigram
distribution of the train split's tokens, scored on the same held-out targets.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import optax

PROTOCOL = "language"


def is_language_method(method) -> bool:
  return hasattr(method, "logits") and getattr(method, "batch_keys", ())[:1] == ("tokens",)


def _windows(source, max_windows):
  count = len(source) if max_windows is None else min(len(source), max_windows)
  return np.stack([np.asarray(source[i]["tokens"]) for i in range(count)]).astype(np.int32)


def next_token_nll(logits_fn, tokens: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
  """[N, T-1] float64 NLLs (nats) of tokens[:, 1:] under logits_fn(tokens) [B, T, V]."""

  @jax.jit
  def nll(batch):
    logits = logits_fn(batch).astype(np.float32)[:, :-1]
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:])

  out = []
  for start in range(0, len(tokens), batch_size):
    batch = tokens[start : start + batch_size]
    pad = batch_size - len(batch)  # one compiled shape: pad the last batch, drop its rows
    padded = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)]) if pad else batch
    out.append(np.asarray(nll(padded), np.float64)[: len(batch)])
  return np.concatenate(out)


def summarize(nll: np.ndarray, bytes_per_token: float) -> dict[str, float]:
  mean = float(np.mean(nll))
  return {
    "nll": mean,
    "perplexity": math.exp(mean),
    "bits_per_token": mean / math.log(2),
    "bits_per_byte": mean / math.log(2) / bytes_per_token,
    "num_tokens": float(nll.size),
  }


def unigram_bits_per_byte(
  train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int, bytes_per_token: float
) -> float:
  """Bits per byte of eval_tokens[:, 1:] under add-one-smoothed train unigram frequencies."""
  counts = np.bincount(np.asarray(train_tokens).ravel(), minlength=vocab_size) + 1.0
  log2p = np.log2(counts / counts.sum())
  return float(-np.mean(log2p[np.asarray(eval_tokens)[:, 1:]]) / bytes_per_token)


def evaluate_lm(
  method,
  variables,
  source,
  info,
  *,
  split: str = "test",
  train_source=None,
  max_windows=None,
  batch_size: int = 64,
) -> dict[str, float]:
  """Held-out NLL / perplexity / bits per token / bits per byte of a causal LM `method` on
  `source` (the packed `split`); with train_source, also 'unigram_bits_per_byte'."""
  tokens = _windows(source, max_windows)
  bpt = info.bytes_per_token[split]
  nll = next_token_nll(
    lambda t: method.logits(variables["params"], variables["aux"], t), tokens, batch_size=batch_size
  )
  result = summarize(nll, bpt)
  if train_source is not None:
    result["unigram_bits_per_byte"] = unigram_bits_per_byte(
      _windows(train_source, None), tokens, info.vocab_size, bpt
    )
  return result
