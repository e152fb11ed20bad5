"""DejaVu glyphs image-caption dataset: the font and character table, labels and captions from
unicodedata, the split rule, the drawings, and the prepared set against the registered
DatasetInfo. Everything it reads ships with pip (matplotlib's bundled font), so nothing skips."""

import collections
import functools
import hashlib
import pathlib
import sys
import unicodedata

import matplotlib
import numpy as np
import pytest

from jaxssl.data import datasets
from jaxssl.data import glyphs
from jaxssl.data import image_text
from jaxssl.eval import zeroshot
import image_text_checks

# (character, label, key, caption, keywords) of a few characters everyone knows.
KNOWN = [
  ("A", "letter", "U+0041", "latin capital letter a", "letter uppercase letter"),
  ("\u03b1", "letter", "U+03B1", "greek small letter alpha", "letter lowercase letter"),
  ("7", "number", "U+0037", "digit seven", "number decimal number"),
  ("!", "punctuation", "U+0021", "exclamation mark", "punctuation mark other punctuation"),
  ("(", "punctuation", "U+0028", "left parenthesis", "punctuation mark open punctuation"),
  ("+", "symbol", "U+002B", "plus sign", "symbol math symbol"),
  ("$", "symbol", "U+0024", "dollar sign", "symbol currency symbol"),
]


@functools.lru_cache(maxsize=None)
def _characters():
  return tuple(glyphs.list_characters(glyphs.font_path()))


@functools.lru_cache(maxsize=None)
def _glyphs():
  """The drawn set (about 2 s), once per test session."""
  return tuple(glyphs.list_glyphs())


def test_font_is_matplotlibs_dejavu_sans():
  path = glyphs.font_path()
  assert path == pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
  assert glyphs.font_version(path) == "Version 2.35"  # what the module docstring describes
  with pytest.raises(FileNotFoundError, match="DejaVuSans.ttf"):
    glyphs.font_path("/nonexistent")


def test_category_table_covers_exactly_the_kept_categories():
  # Every general category Unicode gives a letter, number, punctuation mark or symbol.
  kept = {unicodedata.category(chr(c)) for c in range(sys.maxunicode + 1)}
  kept = {c for c in kept if c[0] in "LNPS"}
  assert set(glyphs.CATEGORY_NAMES) == kept and len(kept) == 19
  for category, long_name in glyphs.CATEGORY_NAMES.items():
    # 'Lu' -> 'uppercase letter', 'Nl' -> 'letter number': the last word is the class.
    assert long_name.split()[-1] == glyphs.GLYPH_CLASSES[glyphs.category_label(category)]
  for skipped in ("Mn", "Me", "Zs", "Cc", "Cf", "Co"):
    assert glyphs.category_label(skipped) is None
  assert glyphs.GLYPH_CLASSES == ("letter", "number", "punctuation", "symbol")
  assert zeroshot.class_names("dejavu_glyphs", "/nonexistent") == (
    "letter",
    "number",
    "punctuation mark",
    "symbol",
  )


def test_characters_labels_and_captions_come_from_unicodedata():
  entries = _characters()
  by_char = {e["char"]: e for e in entries}
  for char, label, key, caption, keywords in KNOWN:
    entry = by_char[char]
    assert glyphs.GLYPH_CLASSES[glyphs.category_label(entry["category"])] == label
    assert (entry["key"], entry["caption"], entry["keywords"]) == (key, caption, keywords)
  for entry in entries:
    char = entry["char"]
    assert entry["caption"] == unicodedata.name(char).lower()
    assert entry["category"] == unicodedata.category(char)
    label = glyphs.category_label(entry["category"])
    assert entry["keywords"].startswith(zeroshot.class_names("dejavu_glyphs", "")[label] + " ")
    assert entry["key"] == f"U+{ord(char):04X}"
  # The character map's 5,906 code points, 5,575 kept; no space, combining mark or private use.
  assert len(entries) == 5575
  assert collections.Counter(e["category"][0] for e in entries) == {
    "L": 3274,
    "S": 1940,
    "N": 190,
    "P": 171,
  }
  for skipped in (" ", "\u0301", "\u00ad", "\uf000"):  # space, acute accent, soft hyphen, PUA
    assert skipped not in by_char
  assert len({e["caption"] for e in entries}) == len(entries)  # names are unique


def test_drawings_are_ink_on_white():
  font = glyphs.load_font(glyphs.font_path())
  assert glyphs.render_glyph(font, " ") is None
  assert glyphs.render_glyph(font, "\u2800") is None  # braille pattern blank
  period, bar = glyphs.render_glyph(font, "."), glyphs.render_glyph(font, "|")
  assert period.mode == "RGBA" and bar.size[1] > 3 * bar.size[0]  # cropped to the ink
  pixels = image_text.to_square_rgb(bar)
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
  assert pixels[:, 15:17].max() < 60 and pixels[:, :4].min() == 255  # a dark bar on white
  drawn = _glyphs()
  # Only the two blank glyphs of the kept characters are left out.
  assert {e["key"] for e in _characters()} - {g["key"] for g in drawn} == {"U+2800", "U+FFFC"}
  for glyph in drawn:
    assert glyph["pixels"].shape == (32, 32, 3) and glyph["pixels"].dtype == np.uint8
    assert glyph["pixels"].min() < 128, glyph["caption"]  # ink, not a white square
  images = np.stack([g["pixels"] for g in drawn])
  assert np.array_equal(images[..., 0], images[..., 2])  # black on white: grey
  assert 0.5 < images.mean() / 255 < 0.9  # mostly white background around the strokes


def test_split_rule_is_md5_of_the_caption():
  for caption in ("latin capital letter a", "digit seven", "plus sign"):
    digest = int(hashlib.md5(caption.encode("utf-8")).hexdigest(), 16)
    assert image_text.is_test_caption(caption) == (digest % 5 == 0)
  assert image_text.TEST_MODULUS == 5


def test_prepared_set_matches_the_listing_and_the_recorded_info(data_dir):
  # Split sizes and train mean / std recomputed (float64) from the prepared set.
  splits = image_text_checks.read_splits_and_check_info("dejavu_glyphs", data_dir)
  assert datasets.get_info("dejavu_glyphs").num_classes == 4
  by_caption = {g["caption"]: g for g in _glyphs()}
  captions = {split: set(s["captions"]) for split, s in splits.items()}
  assert not captions["train"] & captions["test"]
  assert captions["train"] | captions["test"] == set(by_caption)
  for split, s in splits.items():
    for image, label, caption in zip(s["images"], s["labels"], s["captions"]):
      glyph = by_caption[caption]
      assert (split == "test") == image_text.is_test_caption(caption)
      assert label == glyphs.category_label(glyph["category"])
      np.testing.assert_array_equal(image, glyph["pixels"])
  counts = {split: collections.Counter(s["labels"].tolist()) for split, s in splits.items()}
  assert counts == {
    "train": {0: 2638, 3: 1515, 1: 162, 2: 141},
    "test": {0: 636, 3: 423, 1: 28, 2: 30},
  }
  # The text features of a few examples, read through get_source.
  source = datasets.get_source("dejavu_glyphs", "train", data_dir)
  for index in (0, 1, len(source) - 1):
    example = source[index]
    glyph = by_caption[image_text.as_text(example["caption"])]
    assert image_text.as_text(example["keywords"]) == glyph["keywords"]
    assert glyph["caption"] == unicodedata.name(glyph["char"]).lower()
