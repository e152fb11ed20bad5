"""Few-shot linear evaluation by closed-form ridge regression.

The protocol of big_vision's `evaluators/fewshot_lsr.py` (used in ViT,
Dosovitskiy et al. 2021, sec. 4.1, and its successors): for each seed, draw
`shots` train examples per class, standardise features with that sample's
statistics, regress ±1 one-hot targets by L2-regularised least squares (with an
almost unregularised bias), and classify test points by argmax of the
regression output. Accuracy is averaged over seeds.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.eval.linear import validate_eval_inputs

# Value of the constant feature appended for the bias. Ridge penalises the
# bias weight b' of a constant feature c as l2 * b'^2; the effective bias is
# b = c * b', so its penalty is (l2 / c^2) * b^2: with c = 100 and the default
# l2 = 1024 that is ~0.1 * b^2, i.e. the bias is nearly unregularised while the
# whole problem stays one symmetric positive-definite solve. (big_vision's
# BIAS_CONSTANT.)
BIAS_FEATURE = 100.0
# Added to the per-feature std, as big_vision does: features constant on the
# sample centre to exactly 0 there, so their ridge weight is exactly 0 and the
# tiny divisor cannot amplify anything.
STD_EPS = 1e-5


def _augment(x, mean, std):
  """Standardises x and appends the constant bias feature: [n, D + 1]."""
  x = (x - mean) / std
  return jnp.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)


def ridge_weights(x_aug, targets, l2_reg):
  """W = argmin ||X W - Y||^2 + l2 ||W||^2 in closed form.

  Args:
    x_aug: [n, p] design matrix (standardised features + bias column).
    targets: [n, C] regression targets.
    l2_reg: scalar l2 > 0.

  Returns:
    [p, C] weights. Two equal forms (push-through identity
    (X^T X + l2 I)^-1 X^T = X^T (X X^T + l2 I)^-1):
      primal  W = (X^T X + l2 I_p)^-1 X^T Y,  a p x p solve, O(n p^2 + p^3);
      dual    W = X^T (X X^T + l2 I_n)^-1 Y,  an n x n solve, O(n^2 p + n^3).
    The smaller system is used (static shapes pick the branch at trace
    time). Both matrices are symmetric positive definite for l2 > 0, hence a
    Cholesky solve.
  """
  num_samples, num_features = x_aug.shape
  if num_samples >= num_features:
    gram = x_aug.T @ x_aug + l2_reg * jnp.eye(num_features, dtype=x_aug.dtype)
    factor = jax.scipy.linalg.cho_factor(gram)
    return jax.scipy.linalg.cho_solve(factor, x_aug.T @ targets)
  kernel = x_aug @ x_aug.T + l2_reg * jnp.eye(num_samples, dtype=x_aug.dtype)
  factor = jax.scipy.linalg.cho_factor(kernel)
  return x_aug.T @ jax.scipy.linalg.cho_solve(factor, targets)


@functools.partial(jax.jit, static_argnames="num_classes")
def _fit_and_predict(sample_x, sample_y, mean, std, test_x, l2_reg, *, num_classes):
  """Fits ridge on the sample and returns [M] predicted test classes."""
  # One-hot targets mapped to {-1, +1}: each class is a separate ±1
  # regression problem sharing the same design matrix.
  targets = 2.0 * jax.nn.one_hot(sample_y, num_classes) - 1.0
  weights = ridge_weights(_augment(sample_x, mean, std), targets, l2_reg)
  return jnp.argmax(_augment(test_x, mean, std) @ weights, axis=1)


def sample_per_class(train_y, rng, num_classes):
  """Per class, a random permutation of its train indices (big_vision order).

  Taking the first `shots` entries of each permutation gives nested samples:
  for one seed the 1-shot set is inside the 5-shot set, etc., so the curve
  over shots is not confounded by resampling.
  """
  order = np.argsort(train_y, kind="stable")
  boundaries = np.cumsum(np.bincount(train_y, minlength=num_classes))[:-1]
  return [rng.permutation(indices) for indices in np.split(order, boundaries)]


def fewshot_ridge(
  train_x,
  train_y,
  test_x,
  test_y,
  *,
  num_classes,
  shots: Sequence[int] = (1, 5, 10, 25),
  seeds: Sequence[int] = (0, 1, 2),
  l2_reg: float = 2.0**10,
) -> dict:
  """Few-shot top-1 of closed-form ridge regression, big_vision protocol.

  For each seed and shot count n: take n train examples per class (nested
  across n, see sample_per_class); standardise with that sample's mean and
  (population) std + STD_EPS; append a constant BIAS_FEATURE column; solve
  ridge for ±1 one-hot targets (ridge_weights); predict argmax on the
  identically transformed test features.

  Args:
    train_x, train_y, test_x, test_y, num_classes: see
      jaxssl.eval.linear.validate_eval_inputs.
    shots: examples per class to fit on.
    seeds: one sample per seed (np.random.default_rng(seed)).
    l2_reg: ridge strength (big_vision default 2^10).

  Returns:
    {'{n}shot_top1': mean test top-1 over seeds, '{n}shot_top1_std': its
    population std over seeds (0 for one seed)} as Python floats.

  Raises:
    ValueError: if a class has fewer than max(shots) train examples (naming
      the class and its count), or for bad inputs / arguments.
  """
  train_x, train_y, test_x, test_y = validate_eval_inputs(
    train_x, train_y, test_x, test_y, num_classes=num_classes
  )
  shots = [int(n) for n in shots]
  seeds = [int(s) for s in seeds]
  if not shots or min(shots) < 1:
    raise ValueError(f"shots must be a non-empty list of ints >= 1, got {shots}.")
  if not seeds:
    raise ValueError("seeds must name at least one seed.")
  if not l2_reg > 0:
    raise ValueError(f"l2_reg must be > 0 for a unique solution, got {l2_reg}.")
  counts = np.bincount(train_y, minlength=num_classes)
  short = np.flatnonzero(counts < max(shots))
  if short.size:
    listed = ", ".join(f"class {c} has {counts[c]}" for c in short[:10])
    raise ValueError(
      f"{max(shots)}-shot needs {max(shots)} train examples per class, but "
      f"{listed}{' ...' if short.size > 10 else ''}; lower shots or use a "
      "larger train split."
    )

  test_x_device = jnp.asarray(test_x)
  l2_reg = jnp.asarray(l2_reg, jnp.float32)
  accuracies = {n: [] for n in shots}
  for seed in seeds:
    per_class = sample_per_class(train_y, np.random.default_rng(seed), num_classes)
    for n in shots:
      index = np.concatenate([indices[:n] for indices in per_class])
      sample_x = train_x[index]
      # Statistics in float64 (tiny sample): a constant feature then has a
      # mean that is exactly its value, so it centres to exactly 0.
      mean = sample_x.mean(axis=0, dtype=np.float64).astype(np.float32)
      std = (sample_x.std(axis=0, dtype=np.float64) + STD_EPS).astype(np.float32)
      predicted = _fit_and_predict(
        sample_x, train_y[index], mean, std, test_x_device, l2_reg, num_classes=num_classes
      )
      accuracies[n].append(float(np.mean(np.asarray(predicted) == test_y)))

  metrics = {}
  for n in shots:
    metrics[f"{n}shot_top1"] = float(np.mean(accuracies[n]))
    metrics[f"{n}shot_top1_std"] = float(np.std(accuracies[n]))
  return metrics
