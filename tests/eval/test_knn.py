"""Tests for jaxssl.eval.knn against a brute-force float64 NumPy kNN."""

import numpy as np
import pytest

from jaxssl.eval import knn
from synthetic import gaussian_blobs


def _brute_force_ranked(train_x, train_y, test_x, num_classes, k, temperature, num_ranked):
  """One test point at a time: sort all similarities, vote with exp(s/T)."""
  train = train_x.astype(np.float64)
  train /= np.linalg.norm(train, axis=1, keepdims=True)
  ranked = []
  for query in test_x.astype(np.float64):
    similarity = train @ (query / np.linalg.norm(query))
    neighbours = np.argsort(-similarity, kind="stable")[:k]
    votes = np.zeros(num_classes)
    for index in neighbours:
      votes[train_y[index]] += np.exp(similarity[index] / temperature)
    ranked.append(np.argsort(-votes, kind="stable")[:num_ranked])
  return np.array(ranked)


@pytest.mark.parametrize("chunk_size", [32, 1, 1000])
def test_matches_brute_force(chunk_size):
  # 77 test points: chunk 32 leaves a padded last chunk of 13, chunk 1000 is
  # one chunk larger than the test set.
  train_x, train_y, test_x, test_y = gaussian_blobs(300, 77, 16, 6, seed=0, spread=2.0)
  k, temperature = 20, 0.07
  expected = _brute_force_ranked(train_x, train_y, test_x, 6, k, temperature, num_ranked=5)
  ranked = knn.knn_predict(
    train_x,
    train_y,
    test_x,
    num_classes=6,
    k=k,
    temperature=temperature,
    chunk_size=chunk_size,
    num_ranked=5,
  )
  np.testing.assert_array_equal(ranked, expected)
  metrics = knn.knn_classify(
    train_x,
    train_y,
    test_x,
    test_y,
    num_classes=6,
    k=k,
    temperature=temperature,
    chunk_size=chunk_size,
  )
  assert metrics["top1"] == np.mean(expected[:, 0] == test_y)
  assert metrics["top5"] == np.mean(np.any(expected == test_y[:, None], 1))
  # Not a degenerate problem: better than chance, not trivially perfect.
  assert 1 / 6 < metrics["top1"] < 1.0


def test_small_temperature_and_k_one():
  # exp(1 / 0.005) overflows float32; the max-subtracted votes must not.
  train_x, train_y, test_x, test_y = gaussian_blobs(200, 50, 8, 4, seed=1, spread=1.5)
  for k, temperature in ((1, 0.07), (7, 0.005)):
    expected = _brute_force_ranked(train_x, train_y, test_x, 4, k, temperature, num_ranked=1)[:, 0]
    ranked = knn.knn_predict(
      train_x, train_y, test_x, num_classes=4, k=k, temperature=temperature, chunk_size=16
    )
    np.testing.assert_array_equal(ranked[:, 0], expected)
  metrics = knn.knn_classify(train_x, train_y, test_x, test_y, num_classes=4, k=1)
  assert set(metrics) == {"top1"}  # No top-5 with fewer than 5 classes.


def test_invariant_to_feature_scale():
  # Cosine similarity: rescaling any feature vector changes nothing.
  train_x, train_y, test_x, test_y = gaussian_blobs(150, 40, 8, 5, seed=2, spread=1.5)
  rng = np.random.default_rng(3)
  scaled_train = train_x * rng.uniform(0.1, 10.0, (150, 1)).astype(np.float32)
  scaled_test = test_x * rng.uniform(0.1, 10.0, (40, 1)).astype(np.float32)
  expected = knn.knn_predict(train_x, train_y, test_x, num_classes=5, k=10)
  scaled = knn.knn_predict(scaled_train, train_y, scaled_test, num_classes=5, k=10)
  np.testing.assert_array_equal(scaled, expected)


def test_duplicate_neighbours_tie_to_lower_index():
  # Every train point equals the query direction: similarities all tie, the
  # k lowest indices vote (like a stable sort), so class 0 wins 2 votes to 1.
  train_x = np.ones((6, 3), np.float32)
  train_y = np.array([0, 1, 0, 1, 1, 1])
  ranked = knn.knn_predict(train_x, train_y, np.ones((2, 3), np.float32), num_classes=2, k=3)
  np.testing.assert_array_equal(ranked[:, 0], [0, 0])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(k=0), "k=0"),
    (dict(k=1000), "k=1000"),
    (dict(temperature=0.0), "temperature"),
    (dict(chunk_size=0), "chunk"),
  ],
)
def test_bad_arguments(kwargs, message):
  train_x, train_y, test_x, test_y = gaussian_blobs(20, 5, 4, 3, seed=0)
  with pytest.raises(ValueError, match=message):
    knn.knn_classify(train_x, train_y, test_x, test_y, num_classes=3, **kwargs)


def test_bad_inputs_are_rejected():
  train_x, train_y, test_x, test_y = gaussian_blobs(20, 5, 4, 3, seed=0)
  nan_test = test_x.copy()
  nan_test[2, 1] = np.nan
  with pytest.raises(ValueError, match="test_x has 1 NaN"):
    knn.knn_classify(train_x, train_y, nan_test, test_y, num_classes=3)
  with pytest.raises(ValueError, match="feature dims"):
    knn.knn_classify(train_x, train_y, test_x[:, :3], test_y, num_classes=3)
  with pytest.raises(ValueError, match="outside"):
    knn.knn_classify(train_x, train_y, test_x, test_y + 3, num_classes=3)
