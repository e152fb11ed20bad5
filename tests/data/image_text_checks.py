"""What the image-caption dataset tests share: both splits read back through TFDS, checked
against the DatasetInfo that jaxssl.data.datasets registers."""

import collections

import numpy as np

from jaxssl.data import datasets
from jaxssl.data import image_text


def read_back(name: str, data_dir: str):
  """Yields (split, example) for every example of the prepared set `name`, texts as str, after
  checking the image is uint8 [32, 32, 3]."""
  for split in ("train", "test"):
    src = datasets.get_source(name, split, data_dir)
    for i in range(len(src)):
      example = dict(src[i])
      example["caption"] = image_text.as_text(example["caption"])
      example["keywords"] = image_text.as_text(example["keywords"])
      assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.uint8
      yield split, example


def read_splits_and_check_info(name: str, data_dir: str) -> dict[str, dict[str, list]]:
  """{split: {'images', 'labels', 'captions'}} of the prepared set `name`, after checking its
  registered split sizes and recomputing its train mean / std (float64 over all train pixels
  / 255) against the registered 4-digit values."""
  info = datasets.get_info(name)
  assert info.image_shape == (32, 32, 3)
  examples = collections.defaultdict(list)
  for split, example in read_back(name, data_dir):
    examples[split].append(example)
  assert {split: len(e) for split, e in examples.items()} == info.split_sizes
  splits = {
    split: {
      "images": np.stack([e["image"] for e in exs]),
      "labels": np.array([e["label"] for e in exs]),
      "captions": [e["caption"] for e in exs],
    }
    for split, exs in examples.items()
  }
  pixels = splits["train"]["images"].reshape(-1, 3).astype(np.float64) / 255.0
  np.testing.assert_allclose(info.mean, pixels.mean(0), atol=1e-4)
  np.testing.assert_allclose(info.std, pixels.std(0), atol=1e-4)
  return splits
