"""Image-caption pairs that ship inside a Debian package, as a TFDS ArrayRecord dataset.

`tuxpaint_stamps`: the stamps of Tux Paint (Debian `tuxpaint-stamps-default`, installed under
/usr/share/tuxpaint/stamps/<category>/.../<stamp>.png). Every stamp has a `<stamp>.txt` whose
first line is a one-sentence English caption ("A frog."); the other lines are translations.
Mirrored copies (`*_mirror.png`) have no caption and are skipped: 785 stamps in 16 categories
(the top-level directory: animals, clothes, food, ...).

Each example is {'image': uint8 [32, 32, 3], 'label': category index, 'caption': the English
sentence, 'keywords': the words of the stamp's path, e.g. 'animals amphibians frog'}. The
keywords play the part of the tags that come with web images (CLIP's alt-text, openclipart's
keywords): they are what lets a text tower trained on this set connect a class name such as
'animals' to images, which zero-shot classification needs; `caption` alone never names the
category. Images: transparent pixels composited onto white, padded to a white square (aspect
ratio kept), resized with Lanczos antialiasing.

Split: a stamp is test iff the MD5 of its caption is 0 mod 5, so stamps that share a caption
(frog.png and frog-1.png) always land in the same split and retrieval never finds a test
caption's twin among the training pairs. 633 train / 152 test.

`ImageCaptionBuilder` writes any such set (features, splits, PNG encoding); jaxssl/data/emoji.py
builds the second one, emoji with their Unicode names, on it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from jaxssl import errors

TUXPAINT_DIR_ENV = "JAXSSL_TUXPAINT_STAMPS_DIR"
DEFAULT_TUXPAINT_DIR = "/usr/share/tuxpaint/stamps"
TUXPAINT_APT_PACKAGE = "tuxpaint-stamps-default"
IMAGE_SIZE = 32
TEST_MODULUS = 5

# The top-level directories of tuxpaint-stamps-default 2022.06.04 (Debian 12), in label order.
TUXPAINT_CATEGORIES = (
  "animals",
  "clothes",
  "food",
  "hobbies",
  "household",
  "medical",
  "military",
  "naturalforces",
  "people",
  "plants",
  "seasonal",
  "space",
  "sports",
  "symbols",
  "town",
  "vehicles",
)
# The words a prompt uses for each category (directory names are single tokens).
TUXPAINT_CLASS_NAMES = tuple(
  "natural forces" if c == "naturalforces" else c for c in TUXPAINT_CATEGORIES
)

# DatasetInfo fields of the prepared set (jaxssl.data.datasets registers them). mean/std: our
# train split, float64 over all pixels / 255, rounded to 4 digits; tests/data/test_image_text.py
# recomputes them and the split sizes.
TUXPAINT_INFO = dict(
  name="tuxpaint_stamps",
  num_classes=len(TUXPAINT_CATEGORIES),
  image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
  split_sizes={"train": 633, "test": 152},
  mean=(0.7861, 0.7585, 0.7320),
  std=(0.3235, 0.3405, 0.3651),
)


def tuxpaint_dir(source_dir: str | None = None) -> pathlib.Path:
  """The stamps directory: `source_dir`, else $JAXSSL_TUXPAINT_STAMPS_DIR, else Debian's."""
  path = pathlib.Path(source_dir or os.environ.get(TUXPAINT_DIR_ENV) or DEFAULT_TUXPAINT_DIR)
  if not path.is_dir():
    raise errors.MissingDataError(
      f"Dataset 'tuxpaint_stamps' needs the Tux Paint stamps; {path} does not exist. Install "
      f"them with `apt-get install {TUXPAINT_APT_PACKAGE}` (into {DEFAULT_TUXPAINT_DIR}), or "
      f"set ${TUXPAINT_DIR_ENV} to a directory laid out as <category>/.../<stamp>.png with a "
      "<stamp>.txt caption beside each."
    )
  return path


def read_caption(txt_path: pathlib.Path) -> str:
  """The English caption: the first line of a stamp's .txt (the rest are `lang.utf8=...`)."""
  with open(txt_path, encoding="utf-8") as f:
    return f.readline().strip()


def path_keywords(relative_path: pathlib.PurePath) -> str:
  """'animals/amphibians/frog-1.png' -> 'animals amphibians frog': directories and the file
  stem, split on '_' and '-', digits dropped (they number variants, not content)."""
  words = []
  for part in relative_path.with_suffix("").parts:
    words += [w for w in part.replace("-", "_").split("_") if w and not w.isdigit()]
  return " ".join(words)


def is_test_caption(caption: str) -> bool:
  """The split rule: MD5 of the UTF-8 caption is 0 modulo 5."""
  return int(hashlib.md5(caption.encode("utf-8")).hexdigest(), 16) % TEST_MODULUS == 0


def to_square_rgb(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
  """Any PIL image -> uint8 [size, size, 3]: alpha over white, white-padded square, Lanczos."""
  rgba = image.convert("RGBA")
  side = max(rgba.size)
  canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
  canvas.alpha_composite(rgba, ((side - rgba.size[0]) // 2, (side - rgba.size[1]) // 2))
  return np.asarray(canvas.convert("RGB").resize((size, size), Image.LANCZOS))


def list_stamps(source_dir: str | None = None) -> list[dict[str, str]]:
  """Every captioned stamp, sorted by path: {'path', 'key' (path relative to the stamps
  directory), 'category', 'caption', 'keywords'}."""
  root = tuxpaint_dir(source_dir)
  stamps = []
  for png in sorted(root.rglob("*.png")):
    txt = png.with_suffix(".txt")
    if png.stem.endswith("_mirror") or not txt.exists():
      continue  # mirrored duplicates carry no caption
    relative = png.relative_to(root)
    category = relative.parts[0]
    if category not in TUXPAINT_CATEGORIES:
      raise ValueError(
        f"Stamp {png} is in category {category!r}, not one of "
        f"{TUXPAINT_CATEGORIES}; this loader knows {TUXPAINT_APT_PACKAGE} "
        "2022.06.04. Add the category to TUXPAINT_CATEGORIES."
      )
    stamps.append(
      {
        "path": str(png),
        "key": str(relative),
        "category": category,
        "caption": read_caption(txt),
        "keywords": path_keywords(relative),
      }
    )
  if not stamps:
    raise errors.MissingDataError(
      f"No captioned stamps (<stamp>.png + <stamp>.txt) under {root}; "
      f"reinstall {TUXPAINT_APT_PACKAGE}."
    )
  return stamps


class ImageCaptionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes an image-caption set as a TFDS dataset (ArrayRecord, no TensorFlow): features
  image (uint8 [32, 32, 3]), label, caption and keywords; a train and a test split.

  A subclass names its labels and lists its examples: {'key' (TFDS orders a split by hashing
  keys, so the order does not depend on where the data is installed), 'label', 'caption',
  'keywords', 'is_test'} plus whatever `_pixels` reads the image from.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First jaxssl release."}
  label_names: tuple[str, ...] = ()
  about = ""  # the DatasetInfo description

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _examples(self) -> list[dict]:
    raise NotImplementedError

  def _pixels(self, example: dict) -> np.ndarray:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.about,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
          "label": tfds.features.ClassLabel(names=self.label_names),
          "caption": tfds.features.Text(),
          "keywords": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    examples = self._examples()
    return {
      "train": self._generate_examples([e for e in examples if not e["is_test"]]),
      "test": self._generate_examples([e for e in examples if e["is_test"]]),
    }

  def _generate_examples(self, examples):
    for example in examples:
      png = io.BytesIO()
      Image.fromarray(self._pixels(example), mode="RGB").save(png, format="PNG")
      yield (
        example["key"],
        {
          "image": png.getvalue(),
          "label": example["label"],
          "caption": example["caption"],
          "keywords": example["keywords"],
        },
      )


class JaxsslTuxpaintStamps(ImageCaptionBuilder, skip_registration=True):
  """The captioned Tux Paint stamps, keyed by their path relative to the stamps directory."""

  name = "jaxssl_tuxpaint_stamps"
  short_name = "tuxpaint_stamps"
  label_names = TUXPAINT_CATEGORIES
  about = "Tux Paint stamps with English captions; see jaxssl/data/image_text.py."

  def _examples(self):
    return [
      dict(s, label=TUXPAINT_CATEGORIES.index(s["category"]), is_test=is_test_caption(s["caption"]))
      for s in list_stamps(self._source_dir)
    ]

  def _pixels(self, example):
    with Image.open(example["path"]) as image:
      return to_square_rgb(image)


def as_text(value) -> str:
  """A TFDS Text feature as read from a data source (UTF-8 bytes) -> str."""
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)
