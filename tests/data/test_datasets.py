"""Tests for jaxssl.data.datasets: embedded datasets prepare, read back real data, fail clearly."""

import collections
import gzip
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxssl.data import datasets
import packaged_data


def _read_all(source):
  examples = [source[i] for i in range(len(source))]
  return (np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples]))


def _as_multiset(images, labels):
  """Order-free view of a split: TFDS stores examples in a key-hashed order."""
  return collections.Counter((img.tobytes(), int(lab)) for img, lab in zip(images, labels))


def test_mnist5k_reads_back_the_csv_split(data_dir):
  train_x, train_y, test_x, test_y = datasets.load_mnist5k_arrays()
  splits = {}
  for split, raw_x, raw_y in (("train", train_x, train_y), ("test", test_x, test_y)):
    source = datasets.get_source("mnist5k", split, data_dir)
    images, labels = _read_all(source)
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    assert _as_multiset(images, labels) == _as_multiset(raw_x, raw_y)
    splits[split] = (images, labels)
  assert len(splits["train"][1]) == 4000 and len(splits["test"][1]) == 1000
  np.testing.assert_array_equal(np.bincount(splits["train"][1]), [400] * 10)
  np.testing.assert_array_equal(np.bincount(splits["test"][1]), [100] * 10)
  # Real MNIST: the mean pixel of all 5,000 digits is close to the well-known 0.1307 * 255.
  all_pixels = np.concatenate([splits["train"][0], splits["test"][0]]).astype(np.float64)
  assert abs(all_pixels.mean() / 255.0 - 0.1307) < 0.002
  assert all_pixels.max() == 255


def test_mnist5k_file_format():
  # Independent parse of the packaged file: 785 integer columns, label last, sorted by class.
  with gzip.open(datasets._mnist5k_path(), "rt") as f:
    rows = [line.split(",") for line in f]
  assert len(rows) == 5000 and {len(r) for r in rows} == {785}
  labels = np.array([int(r[-1]) for r in rows])
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 500))
  *_, test_y = datasets.load_mnist5k_arrays()
  np.testing.assert_array_equal(test_y, labels[::5])


def test_digits_reads_back_sklearn_split(data_dir):
  from sklearn.datasets import load_digits

  digits = load_digits()
  expected = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
  for split, part in (("train", slice(0, 1397)), ("test", slice(1397, None))):
    images, labels = _read_all(datasets.get_source("digits", split, data_dir))
    assert images.shape[1:] == (8, 8, 1)
    assert _as_multiset(images, labels) == _as_multiset(expected[part], digits.target[part])
  assert images.max() == 255  # 16 -> 255


def test_statistics_are_those_of_the_train_split(data_dir):
  for name in ("mnist5k", "digits"):
    info = datasets.get_info(name)
    images, _ = _read_all(datasets.get_source(name, "train", data_dir))
    pixels = images.astype(np.float64) / 255.0
    assert info.split_sizes["train"] == len(images)
    np.testing.assert_allclose(info.mean, [pixels.mean()], atol=1e-4)
    np.testing.assert_allclose(info.std, [pixels.std()], atol=1e-4)
    assert info.num_classes == 10 and info.image_shape == images.shape[1:]


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _write_tiny_fashion(directory, rng):
  arrays = {
    "train": (rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)),
    "t10k": (rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)),
  }
  for prefix, (images, labels) in arrays.items():
    _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
  return arrays


def test_fashion_mnist_from_any_idx_directory(tmp_path):
  source_dir = tmp_path / "idx"
  source_dir.mkdir()
  arrays = _write_tiny_fashion(source_dir, np.random.default_rng(0))
  data_dir = str(tmp_path / "tfds")
  datasets.prepare("fashion_mnist", data_dir, source_dir=str(source_dir))
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images, labels = _read_all(datasets.get_source("fashion_mnist", split, data_dir))
    raw_x, raw_y = arrays[prefix]
    assert _as_multiset(images, labels) == _as_multiset(raw_x[..., None].astype(np.uint8), raw_y)


def test_fashion_mnist_missing_files_name_the_fix(tmp_path, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  data_dir = tmp_path / "tfds"
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
    datasets.prepare("fashion_mnist", str(data_dir), source_dir=str(empty))
  assert datasets.FASHION_MNIST_DIR_ENV in str(e.value)
  assert not (data_dir / "jaxssl_fashion_mnist" / "1.0.0").exists()  # nothing half-written
  monkeypatch.setenv(datasets.FASHION_MNIST_DIR_ENV, str(empty))
  with pytest.raises(FileNotFoundError, match=str(empty)):
    datasets.load_fashion_mnist_arrays()


def test_idx_parser_rejects_other_files(tmp_path):
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # 0x0d: float IDX, not unsigned bytes.
  with pytest.raises(ValueError, match="unsigned-byte IDX"):
    datasets._read_idx(path)


def test_fashion_mnist_debian_files(data_dir):
  packaged_data.require_data("fashion_mnist")
  train_x, train_y, test_x, test_y = datasets.load_fashion_mnist_arrays()
  np.testing.assert_array_equal(np.bincount(train_y), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test_y), [1000] * 10)
  info = datasets.get_info("fashion_mnist")
  pixels = train_x.astype(np.float64) / 255.0
  np.testing.assert_allclose(info.mean, [pixels.mean()], atol=1e-4)
  np.testing.assert_allclose(info.std, [pixels.std()], atol=1e-4)
  train = datasets.get_source("fashion_mnist", "train", data_dir)
  assert len(train) == 60000
  test_images, test_labels = _read_all(datasets.get_source("fashion_mnist", "test", data_dir))
  assert _as_multiset(test_images, test_labels) == _as_multiset(test_x, test_y)


def test_prepare_is_idempotent(data_dir):
  datasets.prepare("digits", data_dir)
  files = sorted((pathlib.Path(data_dir) / "jaxssl_digits").rglob("*"))
  mtimes = [f.stat().st_mtime_ns for f in files]
  datasets.prepare("digits", data_dir)
  assert sorted((pathlib.Path(data_dir) / "jaxssl_digits").rglob("*")) == files
  assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_concurrent_prepare_in_two_processes(tmp_path):
  code = (
    "import sys; from jaxssl.data import datasets; "
    'datasets.prepare("digits", sys.argv[1]); '
    'print(len(datasets.get_source("digits", "test", sys.argv[1])))'
  )
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", code, str(tmp_path)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for _ in range(2)
  ]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
    assert out.split()[-1] == "400"


def test_unknown_dataset_lists_embedded_names(data_dir):
  with pytest.raises(ValueError, match="Unknown dataset") as e:
    datasets.get_source("no_such_dataset_xyz", "train", data_dir)
  for name in datasets.EMBEDDED_NAMES:
    assert name in str(e.value)
  assert "tfds build no_such_dataset_xyz" in str(e.value)
  with pytest.raises(ValueError, match="embedded datasets: mnist5k"):
    datasets.prepare("no_such_dataset_xyz", data_dir)


def test_unprepared_catalog_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(ValueError, match="not prepared") as e:
    datasets.get_source("mnist", "train", str(tmp_path))
  assert "--file_format=array_record" in str(e.value)


def test_catalog_path_reads_a_prepared_tfds_dataset(data_dir):
  # Our builders are registered TFDS datasets too, so their registered names exercise the
  # catalog path: tfds.builder -> is_prepared -> as_data_source, and estimated statistics.
  datasets.prepare("digits", data_dir)
  catalog = datasets.get_source("jaxssl_digits", "test", data_dir)
  embedded = datasets.get_source("digits", "test", data_dir)
  assert _as_multiset(*_read_all(catalog)) == _as_multiset(*_read_all(embedded))
  info = datasets.get_info("jaxssl_digits", data_dir)
  expected = datasets.get_info("digits")
  assert info.split_sizes == expected.split_sizes and info.num_classes == 10
  assert info.image_shape == (8, 8, 1)
  np.testing.assert_allclose(info.mean, expected.mean, atol=1e-4)
  np.testing.assert_allclose(info.std, expected.std, atol=1e-4)
  # A strided subset estimates the statistics closely.
  subset = datasets.get_info("jaxssl_digits", data_dir, stats_examples=300)
  np.testing.assert_allclose(subset.mean, expected.mean, atol=0.02)


def test_default_data_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
  assert datasets.default_data_dir() == str(tmp_path)
  monkeypatch.delenv(datasets.DATA_DIR_ENV)
  assert datasets.default_data_dir().endswith(
    os.path.join(".cache", "jaxssl", "tensorflow_datasets")
  )
