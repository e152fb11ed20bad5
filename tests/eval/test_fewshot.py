"""Tests for jaxssl.eval.fewshot against an independent float64 NumPy ridge."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.eval import fewshot
from synthetic import gaussian_blobs


def _blobs(num_train, num_test, dim, num_classes, seed, spread=2.0):
  return gaussian_blobs(num_train, num_test, dim, num_classes, seed, spread, balanced_train=True)


def _numpy_ridge(sample_x, sample_y, test_x, num_classes, l2_reg):
  """Float64 reference: ridge as one least-squares problem, then argmax.

  min ||X W - Y||^2 + l2 ||W||^2 is the least-squares problem
  [X; sqrt(l2) I] W = [Y; 0], solved here with np.linalg.lstsq (SVD), a
  different route from the normal equations / dual solve under test.
  """
  x = sample_x.astype(np.float64)
  mean, std = x.mean(0), x.std(0) + fewshot.STD_EPS

  def augment(features):
    standardized = (features.astype(np.float64) - mean) / std
    bias = np.full((features.shape[0], 1), fewshot.BIAS_FEATURE)
    return np.concatenate([standardized, bias], axis=1)

  design = augment(sample_x)
  targets = 2.0 * np.eye(num_classes)[sample_y] - 1.0
  dim = design.shape[1]
  stacked_x = np.concatenate([design, np.sqrt(l2_reg) * np.eye(dim)])
  stacked_y = np.concatenate([targets, np.zeros((dim, num_classes))])
  weights = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
  return weights, np.argmax(augment(test_x) @ weights, axis=1)


def _big_vision_sample(train_y, num_classes, shots, seed):
  """Sampling written as in big_vision: per-class permutation, first n."""
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.where(train_y == c)[0]) for c in range(num_classes)]
  return np.concatenate([indices[:shots] for indices in per_class])


@pytest.mark.parametrize("num_samples, dim", [(40, 12), (8, 30)])
def test_ridge_weights_match_lstsq_primal_and_dual(num_samples, dim):
  # (40, 12): more samples than features -> primal; (8, 30): dual.
  rng = np.random.default_rng(0)
  design = rng.normal(size=(num_samples, dim)).astype(np.float32)
  targets = rng.choice([-1.0, 1.0], size=(num_samples, 3)).astype(np.float32)
  for l2_reg in (0.5, 2.0**10):
    weights = fewshot.ridge_weights(jnp.asarray(design), jnp.asarray(targets), l2_reg)
    stacked_x = np.concatenate([design, np.sqrt(l2_reg) * np.eye(dim)])
    stacked_y = np.concatenate([targets, np.zeros((dim, 3))])
    expected = np.linalg.lstsq(stacked_x.astype(np.float64), stacked_y, rcond=None)[0]
    np.testing.assert_allclose(weights, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


@pytest.mark.parametrize("shots", [1, 3, 40])
def test_predictions_match_numpy(shots):
  # dim 24 + bias: 1- and 3-shot (5 and 15 samples) use the dual solve,
  # 40-shot (200 samples) the primal one.
  train_x, train_y, test_x, _ = _blobs(300, 200, 24, 5, seed=1)
  index = _big_vision_sample(train_y, 5, shots, seed=0)
  sample_x = train_x[index]
  mean = sample_x.mean(0, dtype=np.float64).astype(np.float32)
  std = (sample_x.std(0, dtype=np.float64) + fewshot.STD_EPS).astype(np.float32)
  for l2_reg in (1.0, 2.0**10):
    predicted = fewshot._fit_and_predict(
      sample_x, train_y[index], mean, std, test_x, l2_reg, num_classes=5
    )
    _, expected = _numpy_ridge(sample_x, train_y[index], test_x, 5, l2_reg)
    np.testing.assert_array_equal(predicted, expected)


def test_fewshot_ridge_end_to_end_matches_numpy():
  train_x, train_y, test_x, test_y = _blobs(300, 200, 24, 5, seed=2)
  shots, seeds = (1, 4, 10), (0, 1, 2)
  metrics = fewshot.fewshot_ridge(
    train_x, train_y, test_x, test_y, num_classes=5, shots=shots, seeds=seeds
  )
  assert set(metrics) == {f"{n}shot_top1{s}" for n in shots for s in ("", "_std")}
  for n in shots:
    accuracies = []
    for seed in seeds:
      index = _big_vision_sample(train_y, 5, n, seed)
      _, predicted = _numpy_ridge(train_x[index], train_y[index], test_x, 5, 2.0**10)
      accuracies.append(np.mean(predicted == test_y))
    assert metrics[f"{n}shot_top1"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert metrics[f"{n}shot_top1_std"] == pytest.approx(np.std(accuracies), abs=1e-12)
  # More shots help on this problem, and 10-shot is far above chance.
  assert metrics["10shot_top1"] > metrics["1shot_top1"]
  assert metrics["10shot_top1"] > 0.5


def test_samples_are_nested_and_match_big_vision_order():
  _, train_y, _, _ = _blobs(300, 10, 4, 5, seed=3)
  per_class = fewshot.sample_per_class(train_y, np.random.default_rng(7), 5)
  for n in (1, 5, 25):
    index = np.concatenate([indices[:n] for indices in per_class])
    np.testing.assert_array_equal(index, _big_vision_sample(train_y, 5, n, seed=7))
    np.testing.assert_array_equal(np.bincount(train_y[index]), [n] * 5)


def test_deterministic_and_seed_dependent():
  train_x, train_y, test_x, test_y = _blobs(300, 200, 24, 5, seed=4)
  run = lambda seeds: fewshot.fewshot_ridge(  # noqa: E731
    train_x, train_y, test_x, test_y, num_classes=5, shots=(2,), seeds=seeds
  )
  assert run((0, 1)) == run((0, 1))
  assert run((0,))["2shot_top1"] != run((5,))["2shot_top1"]
  assert run((0,))["2shot_top1_std"] == 0.0


def test_constant_feature_does_not_blow_up():
  # A feature constant on the sample but not on test: standardised by
  # (x - mean) / (0 + eps) it is huge on test, yet its ridge weight is exactly
  # 0 so predictions equal those without the feature.
  train_x, train_y, test_x, test_y = _blobs(300, 200, 24, 5, seed=5)
  with_constant = np.concatenate([train_x, np.full((300, 1), 3.0, np.float32)], axis=1)
  test_with_varying = np.concatenate(
    [test_x, np.random.default_rng(0).normal(size=(200, 1)).astype(np.float32)], axis=1
  )
  kwargs = dict(num_classes=5, shots=(1, 5), seeds=(0,))
  expected = fewshot.fewshot_ridge(train_x, train_y, test_x, test_y, **kwargs)
  got = fewshot.fewshot_ridge(with_constant, train_y, test_with_varying, test_y, **kwargs)
  assert got == expected


def test_too_few_examples_names_class_and_count():
  train_x, train_y, test_x, test_y = _blobs(300, 20, 4, 5, seed=6)
  keep = (train_y != 3) | (np.cumsum(train_y == 3) <= 7)  # 7 of class 3.
  with pytest.raises(ValueError, match="class 3 has 7"):
    fewshot.fewshot_ridge(
      train_x[keep], train_y[keep], test_x, test_y, num_classes=5, shots=(1, 10)
    )


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(shots=()), "shots"),
    (dict(shots=(0,)), "shots"),
    (dict(seeds=()), "seeds"),
    (dict(l2_reg=0.0), "l2_reg"),
  ],
)
def test_bad_arguments(kwargs, message):
  train_x, train_y, test_x, test_y = _blobs(50, 10, 4, 5, seed=0)
  with pytest.raises(ValueError, match=message):
    fewshot.fewshot_ridge(train_x, train_y, test_x, test_y, num_classes=5, **kwargs)


def test_bad_inputs_are_rejected():
  train_x, train_y, test_x, test_y = _blobs(50, 10, 4, 5, seed=0)
  nan_train = train_x.copy()
  nan_train[3] = np.inf
  with pytest.raises(ValueError, match="train_x has 4 NaN/inf"):
    fewshot.fewshot_ridge(nan_train, train_y, test_x, test_y, num_classes=5, shots=(1,))
  with pytest.raises(ValueError, match="one label per row"):
    fewshot.fewshot_ridge(train_x, train_y[:-1], test_x, test_y, num_classes=5, shots=(1,))
