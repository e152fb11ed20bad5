"""Fixed synthetic feature sets for the protocol tests (imported by tests/eval/test_*.py)."""

import numpy as np


def gaussian_blobs(num_train, num_test, dim, num_classes, seed, spread=1.0, balanced_train=False):
  """Class-centred Gaussian features: (train_x, train_y, test_x, test_y), float32 features.

  `balanced_train` gives every class num_train // num_classes training examples (few-shot
  sampling needs enough per class); otherwise train labels are uniform at random.
  """
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_classes, dim))
  if balanced_train:
    train_y = np.repeat(np.arange(num_classes), num_train // num_classes)
  else:
    train_y = rng.integers(0, num_classes, num_train)
  test_y = rng.integers(0, num_classes, num_test)
  train_x = centers[train_y] + spread * rng.normal(size=(train_y.size, dim))
  test_x = centers[test_y] + spread * rng.normal(size=(num_test, dim))
  return train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y
