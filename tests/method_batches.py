"""One real global batch of a method's own training pipeline, as the trainer builds it (shared
by the tests that need every method's batch shapes: sharding invariance, export)."""

import numpy as np

from jaxssl.data import datasets
from jaxssl.data import pipeline


def first_batch(config, method, data_dir) -> dict[str, np.ndarray]:
  """The first global batch of `method`'s training pipeline for `config` (its `batch_keys`)."""
  info = datasets.get_info(config.data.name, data_dir)
  source = datasets.get_source(config.data.name, config.data.split, data_dir)
  dataset = pipeline.make_train_dataset(
    source, method.train_transform(info), global_batch_size=config.batch_size, seed=config.seed
  )
  example = next(iter(dataset))
  return {k: np.asarray(example[k]) for k in method.batch_keys}
