"""Tux Paint image-caption dataset: builder on a hand-made stamps directory, the real package."""

import collections
import hashlib
import pathlib

import numpy as np
from PIL import Image
import pytest

from jaxssl.data import datasets
from jaxssl.data import image_text
import image_text_checks
import packaged_data


def _write_stamp(root, relative, caption, rgba):
  png = pathlib.Path(root) / relative
  png.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rgba, mode="RGBA").save(png)
  png.with_suffix(".txt").write_text(f"{caption}\nfr.utf8=Traduction.\n", encoding="utf-8")


def _fake_stamps(root):
  """Six stamps in three categories, one mirrored copy without caption, one shared caption."""
  red = np.zeros((20, 10, 4), np.uint8)
  red[..., 0], red[..., 3] = 255, 255  # opaque red, 2:1 tall
  clear = np.zeros((8, 8, 4), np.uint8)  # fully transparent
  stamps = [
    ("animals/amphibians/frog.png", "A frog."),
    ("animals/amphibians/frog-1.png", "A frog."),
    ("food/fruit/red_apple.png", "A red apple."),
    ("vehicles/auto/car.png", "A car."),
    ("vehicles/auto/bus.png", "A bus."),
    ("food/fruit/pear.png", "A pear."),
  ]
  for relative, caption in stamps:
    _write_stamp(root, relative, caption, red if "apple" in relative else clear)
  Image.fromarray(clear, mode="RGBA").save(pathlib.Path(root) / "vehicles/auto/car_mirror.png")
  return dict(stamps)


def test_keywords_split_rule_and_square_rgb():
  assert image_text.path_keywords(pathlib.PurePath("animals/amphibians/frog-1.png")) == (
    "animals amphibians frog"
  )
  assert image_text.path_keywords(pathlib.PurePath("town/roadsigns/xing_school.png")) == (
    "town roadsigns xing school"
  )
  for caption in ("A frog.", "The letter x.", "Ein Frosch é."):
    digest = int(hashlib.md5(caption.encode("utf-8")).hexdigest(), 16)
    assert image_text.is_test_caption(caption) == (digest % 5 == 0)
  # Opaque red 20x10 -> centred on a white square: red middle columns, white sides.
  rgba = np.zeros((20, 10, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 255, 255
  out = image_text.to_square_rgb(Image.fromarray(rgba, mode="RGBA"), size=8)
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, 0], 255)  # padding is white
  assert np.all(out[:, 3:5, 0] == 255) and np.all(out[:, 3:5, 1:] < 10)
  # Transparent pixels become white.
  clear = image_text.to_square_rgb(Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA"), 4)
  np.testing.assert_array_equal(clear, 255)


def test_builder_on_a_stamps_directory(tmp_path):
  source = tmp_path / "stamps"
  captions = _fake_stamps(source)
  data_dir = str(tmp_path / "tfds")
  datasets.prepare("tuxpaint_stamps", data_dir, source_dir=str(source))
  seen = {}
  for split, ex in image_text_checks.read_back("tuxpaint_stamps", data_dir):
    assert (split == "test") == image_text.is_test_caption(ex["caption"])
    category = ex["keywords"].split()[0]
    assert image_text.TUXPAINT_CATEGORIES[int(ex["label"])] == category
    seen[ex["keywords"]] = (ex["caption"], ex["image"])
  # Every captioned stamp exactly once; the mirrored copy (no caption) is skipped.
  expected = {image_text.path_keywords(pathlib.PurePath(p)): c for p, c in captions.items()}
  assert {k: v[0] for k, v in seen.items()} == expected
  apple = seen["food fruit red apple"][1]
  assert np.all(apple[:, 12:20, 0] >= 250) and np.all(apple[:, 12:20, 1] < 10)
  np.testing.assert_array_equal(seen["animals amphibians frog"][1], 255)


def test_missing_package_names_the_apt_package(tmp_path, monkeypatch):
  monkeypatch.delenv(image_text.TUXPAINT_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="apt-get install tuxpaint-stamps-default"):
    datasets.prepare(
      "tuxpaint_stamps", str(tmp_path / "tfds"), source_dir=str(tmp_path / "no_such_dir")
    )
  assert not (tmp_path / "tfds" / "jaxssl_tuxpaint_stamps" / "1.0.0").exists()
  # An unknown category means a different package version: say so.
  _write_stamp(tmp_path / "odd", "dinosaurs/rex.png", "A rex.", np.zeros((4, 4, 4), np.uint8))
  with pytest.raises(ValueError, match="category 'dinosaurs'"):
    image_text.list_stamps(str(tmp_path / "odd"))


def test_real_tuxpaint_stamps_match_the_recorded_info(data_dir):
  packaged_data.require_data("tuxpaint_stamps")
  splits = image_text_checks.read_splits_and_check_info("tuxpaint_stamps", data_dir)
  assert datasets.get_info("tuxpaint_stamps").num_classes == 16
  labels = {split: s["labels"] for split, s in splits.items()}
  # No caption in both splits; every class has train examples.
  assert not set(splits["train"]["captions"]) & set(splits["test"]["captions"])
  assert set(labels["train"]) == set(range(16))
  counts = collections.Counter(labels["train"].tolist() + labels["test"].tolist())
  assert counts[image_text.TUXPAINT_CATEGORIES.index("symbols")] == 247
  assert counts[image_text.TUXPAINT_CATEGORIES.index("animals")] == 146
