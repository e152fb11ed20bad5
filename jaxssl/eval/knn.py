"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of DINO (Caron et al. 2021, sec. 4.2 / `eval_knn.py`), itself from
Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination", eq. 8): features are L2-normalised, each test point takes its
k most cosine-similar train points, and neighbour i votes for its class with
weight exp(s_i / T). The predicted class is the one with the largest summed
vote; top-5 counts a hit when the label is among the five largest.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.eval.linear import validate_eval_inputs


def l2_normalize(x, eps=1e-12):
  """Rows of x scaled to unit L2 norm (all-zero rows stay zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "num_ranked"))
def _knn_ranked_classes(
  test_chunk, train_unit, train_y, temperature, *, k, num_classes, num_ranked
):
  """Classes ranked by weighted kNN vote for one chunk of test points.

  Args:
    test_chunk: [B, D] test features (any norm).
    train_unit: [N, D] L2-normalised train features.
    train_y: [N] int32 train labels.
    temperature: scalar T of the exp(s / T) vote weight.
    k, num_classes, num_ranked: static ints; num_ranked classes are returned.

  Returns:
    [B, num_ranked] class ids, highest summed vote first.
  """
  # Only a [B, N] slice of the M x N similarity matrix exists at a time.
  similarity = jnp.einsum("bd,nd->bn", l2_normalize(test_chunk), train_unit)
  top_similarity, top_index = jax.lax.top_k(similarity, k)  # [B, k], sorted.
  # exp((s - s_max) / T) instead of exp(s / T): the same votes up to one
  # positive factor per test point (so the same ranking), but no float32
  # overflow for small T (exp(1 / 0.01) = e^100 would be inf). s_max is taken
  # with max, not as top_similarity[:, :1]: slicing top_k's output makes
  # XLA:CPU rewrite the top_k into a much slower form (docs/performance_cpu.md).
  max_similarity = jnp.max(top_similarity, axis=1, keepdims=True)
  weight = jnp.exp((top_similarity - max_similarity) / temperature)
  neighbour_class = train_y[top_index]  # [B, k]
  votes = jnp.einsum(
    "bk,bkc->bc", weight, jax.nn.one_hot(neighbour_class, num_classes, dtype=weight.dtype)
  )
  # top_k breaks ties by the lower index, as np.argmax / a stable sort do.
  return jax.lax.top_k(votes, num_ranked)[1]


def knn_predict(
  train_x, train_y, test_x, *, num_classes, k=20, temperature=0.07, chunk_size=1024, num_ranked=1
):
  """Classes ranked by weighted kNN vote (cosine, exp(s/T)), best first.

  Args:
    train_x, train_y, test_x, num_classes: see
      jaxssl.eval.linear.validate_eval_inputs.
    k: neighbours per test point (DINO: 20 and 200).
    temperature: T in the vote weight exp(cos / T) (DINO: 0.07).
    chunk_size: test points per similarity block; memory is
      chunk_size x N floats. The last chunk is zero-padded so one compiled
      shape serves all chunks.
    num_ranked: how many classes to return per test point (<= num_classes).

  Returns:
    [M, num_ranked] int32 NumPy array of class ids. Ties (equal similarity
    or equal vote) go to the lower train index / class id.
  """
  train_x, train_y, test_x, _ = validate_eval_inputs(
    train_x, train_y, test_x, None, num_classes=num_classes
  )
  num_train, num_test = train_x.shape[0], test_x.shape[0]
  if not 1 <= k <= num_train:
    raise ValueError(f"k={k} must be in [1, num train examples={num_train}].")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  if not 1 <= num_ranked <= num_classes:
    raise ValueError(f"num_ranked={num_ranked} must be in [1, num_classes={num_classes}].")
  chunk_size = min(chunk_size, num_test)

  train_unit = l2_normalize(jnp.asarray(train_x))
  train_labels = jnp.asarray(train_y)
  temperature = jnp.asarray(temperature, jnp.float32)
  ranked = []
  for start in range(0, num_test, chunk_size):
    chunk = test_x[start : start + chunk_size]
    num_valid = chunk.shape[0]
    if num_valid < chunk_size:
      chunk = np.pad(chunk, ((0, chunk_size - num_valid), (0, 0)))
    ranked_chunk = _knn_ranked_classes(
      jnp.asarray(chunk),
      train_unit,
      train_labels,
      temperature,
      k=k,
      num_classes=num_classes,
      num_ranked=num_ranked,
    )
    ranked.append((ranked_chunk, num_valid))  # Dispatch stays asynchronous.
  return np.concatenate([np.asarray(r)[:n] for r, n in ranked])


def knn_classify(
  train_x, train_y, test_x, test_y, *, num_classes, k=20, temperature=0.07, chunk_size=1024
) -> dict:
  """Weighted kNN accuracy (cosine similarity, exp(s/T) votes), as in DINO.

  Args: as knn_predict, plus test_y: [M] integer labels.

  Returns:
    {'top1': accuracy, 'top5' (if num_classes >= 5)} as Python floats. As in
    DINO, top-5 ranks all classes by vote, so with k < 5 the tail is filled by
    zero-vote classes in class-id order.
  """
  _, _, _, test_y = validate_eval_inputs(train_x, train_y, test_x, test_y, num_classes=num_classes)
  ranked = knn_predict(
    train_x,
    train_y,
    test_x,
    num_classes=num_classes,
    k=k,
    temperature=temperature,
    chunk_size=chunk_size,
    num_ranked=min(5, num_classes),
  )
  hits = ranked == test_y[:, None]
  metrics = {"top1": float(np.mean(hits[:, 0]))}
  if num_classes >= 5:
    metrics["top5"] = float(np.mean(np.any(hits, axis=1)))
  return metrics
