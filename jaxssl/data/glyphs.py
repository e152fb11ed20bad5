"""The characters of DejaVu Sans with their Unicode names, as a TFDS ArrayRecord image-caption
dataset.

`dejavu_glyphs`: every visible character of DejaVu Sans 2.35 (the name table's version string
'Version 2.35'), the font that matplotlib bundles (`matplotlib.get_data_path()` +
'/fonts/ttf/DejaVuSans.ttf'), captioned by its name in Python's `unicodedata` (Unicode 14.0.0,
`unicodedata.unidata_version`, with Python 3.11). matplotlib is a dependency of jaxssl, so the
set needs nothing but pip: no Debian package, no download.

Kept: the font's character map (fontTools' `getBestCmap`) has 5,906 code points; 5,575 of them
have a Unicode name and a general category that is a letter (L*), number (N*), punctuation (P*)
or symbol (S*): letters 3,274, symbols 1,940, numbers 190, punctuation 171. Marks (M*, drawn on a
neighbour), separators (Z*), controls and formats (C*) and the unnamed private-use glyphs are
skipped, and so are the two kept characters whose glyph draws no ink (U+2800 BRAILLE PATTERN
BLANK, U+FFFC OBJECT REPLACEMENT CHARACTER): 5,573 remain.

Each example is {'image': uint8 [32, 32, 3], 'label': the major general category (letter,
number, punctuation, symbol), 'caption': the Unicode name lower-cased ('greek small letter
alpha', 'plus sign'), 'keywords': the class name and the long name of the general category
('letter lowercase letter', 'symbol math symbol', 'punctuation mark open punctuation')}. The
keywords play the part of Tux Paint's path keywords (see image_text.py): they are what lets a
text tower connect the zero-shot class names (GLYPH_CLASS_NAMES) to images; names such as
'plus sign' or 'digit seven' never say 'symbol' or 'number'.

Images: the character drawn black with Pillow at 64 px on a transparent canvas, cropped to its
ink, composited onto white, padded to a white square and resized with Lanczos
(image_text.to_square_rgb), as emoji.py does; black on white, so the three channels are equal.
One code point needs no text shaping, so Pillow's basic layout draws it (the images are the same
with raqm: checked for all 5,573). Cropping discards size ('.' and '·' become the same filled
disc), and scripts share shapes ('latin capital letter a', 'greek capital letter alpha' and
'cyrillic capital letter a' are one image under three captions): the 5,573 images hold 5,062
distinct ones.

Split: a character is test iff the MD5 of its caption is 0 mod 5 (image_text.is_test_caption).
Unicode names are unique and never change (Unicode's name stability policy), so no caption is in
both splits and a character's split is the same under any Python's unicodedata. 4,456 train /
1,117 test (letters 2,638 / 636, symbols 1,515 / 423, numbers 162 / 28, punctuation 141 / 30).
"""

from __future__ import annotations

import importlib.util
import pathlib
import unicodedata

from fontTools import ttLib
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from jaxssl import errors
from jaxssl.data import image_text

FONT_FILE = "DejaVuSans.ttf"
FONT_SIZE = 64
# Transparent border around the glyph's box on the drawing canvas, so no ink is cut off.
_MARGIN = FONT_SIZE // 4

# The classes in label order: the first letter of a general category picks one.
GLYPH_CLASSES = ("letter", "number", "punctuation", "symbol")
GLYPH_CLASS_NAMES = ("letter", "number", "punctuation mark", "symbol")  # zero-shot prompt words
_CLASS_OF_MAJOR = {"L": 0, "N": 1, "P": 2, "S": 3}

# The long names of the kept general categories (Unicode's PropertyValueAliases.txt, gc),
# lower-cased with '_' read as a space.
CATEGORY_NAMES = {
  "Lu": "uppercase letter",
  "Ll": "lowercase letter",
  "Lt": "titlecase letter",
  "Lm": "modifier letter",
  "Lo": "other letter",
  "Nd": "decimal number",
  "Nl": "letter number",
  "No": "other number",
  "Pc": "connector punctuation",
  "Pd": "dash punctuation",
  "Ps": "open punctuation",
  "Pe": "close punctuation",
  "Pi": "initial punctuation",
  "Pf": "final punctuation",
  "Po": "other punctuation",
  "Sm": "math symbol",
  "Sc": "currency symbol",
  "Sk": "modifier symbol",
  "So": "other symbol",
}

# DatasetInfo fields of the prepared set (jaxssl.data.datasets registers them). mean/std: our
# train split, float64 over all pixels / 255, rounded to 4 digits; tests/data/test_glyphs.py
# recomputes them and the split sizes.
DEJAVU_GLYPHS_INFO = dict(
  name="dejavu_glyphs",
  num_classes=len(GLYPH_CLASSES),
  image_shape=(image_text.IMAGE_SIZE, image_text.IMAGE_SIZE, 3),
  split_sizes={"train": 4456, "test": 1117},
  mean=(0.7428, 0.7428, 0.7428),
  std=(0.4001, 0.4001, 0.4001),
)


def font_path(source_dir: str | None = None) -> pathlib.Path:
  """DejaVuSans.ttf: in `source_dir` if given, else the copy inside the installed matplotlib
  (its mpl-data directory, what `matplotlib.get_data_path()` returns; found without importing
  matplotlib)."""
  if source_dir:
    path = pathlib.Path(source_dir) / FONT_FILE
  else:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
      raise errors.MissingDataError(
        f"Dataset 'dejavu_glyphs' needs matplotlib's bundled {FONT_FILE}: `pip install matplotlib`."
      )
    package_dir = pathlib.Path(list(spec.submodule_search_locations)[0])
    path = package_dir / "mpl-data" / "fonts" / "ttf" / FONT_FILE
  if not path.is_file():
    raise errors.MissingDataError(
      f"Dataset 'dejavu_glyphs' needs {FONT_FILE}; {path} does not exist. "
      "Reinstall matplotlib (`pip install --force-reinstall matplotlib`), or "
      f"pass a source_dir holding {FONT_FILE}."
    )
  return path


def font_version(path: str | pathlib.Path) -> str:
  """The font's version string (name table record 5), e.g. 'Version 2.35'."""
  with ttLib.TTFont(str(path), lazy=True) as font:
    return font["name"].getDebugName(5)


def category_label(category: str) -> int | None:
  """A general category ('Ll') -> its class index in GLYPH_CLASSES; None for M*, Z*, C*."""
  return _CLASS_OF_MAJOR.get(category[:1])


def list_characters(path: str | pathlib.Path) -> list[dict[str, str]]:
  """The kept characters of the font's character map, by code point: {'char', 'key' ('U+03B1'),
  'category' ('Ll'), 'caption' ('greek small letter alpha'), 'keywords' ('letter lowercase
  letter')}. Kept: a Unicode name and a letter, number, punctuation or symbol category."""
  with ttLib.TTFont(str(path), lazy=True) as font:
    code_points = sorted(font.getBestCmap())
  entries = []
  for code_point in code_points:
    char = chr(code_point)
    name, category = unicodedata.name(char, ""), unicodedata.category(char)
    label = category_label(category)
    if not name or label is None:
      continue
    entries.append(
      {
        "char": char,
        "key": f"U+{code_point:04X}",
        "category": category,
        "caption": name.lower(),
        "keywords": f"{GLYPH_CLASS_NAMES[label]} {CATEGORY_NAMES[category]}",
      }
    )
  if not entries:
    raise ValueError(
      f"No named letter, number, punctuation or symbol in the character map of "
      f"{path}; reinstall matplotlib."
    )
  return entries


def load_font(path: str | pathlib.Path) -> ImageFont.FreeTypeFont:
  """DejaVu Sans at FONT_SIZE with Pillow's basic layout (one code point needs no shaping)."""
  return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)


def render_glyph(font: ImageFont.FreeTypeFont, char: str) -> Image.Image | None:
  """The character drawn black as RGBA on a transparent canvas, cropped to its ink; None if it
  draws no ink (a blank glyph)."""
  left, top, right, bottom = font.getbbox(char)
  size = (max(right - left, 0) + 2 * _MARGIN, max(bottom - top, 0) + 2 * _MARGIN)
  canvas = Image.new("RGBA", size, (0, 0, 0, 0))
  ImageDraw.Draw(canvas).text((_MARGIN - left, _MARGIN - top), char, font=font, fill=(0, 0, 0, 255))
  ink = canvas.getchannel("A").getbbox()
  return None if ink is None else canvas.crop(ink)


def list_glyphs(source_dir: str | None = None) -> list[dict[str, str | np.ndarray]]:
  """The kept characters (list_characters) that draw ink, each with its 'pixels' (uint8
  [32, 32, 3])."""
  path = font_path(source_dir)
  font = load_font(path)
  glyphs = []
  for entry in list_characters(path):
    glyph = render_glyph(font, entry["char"])
    if glyph is not None:
      glyphs.append(dict(entry, pixels=image_text.to_square_rgb(glyph)))
  if not glyphs:
    raise ValueError(f"No character of {path} drew any ink; reinstall matplotlib.")
  return glyphs


class JaxsslDejavuGlyphs(image_text.ImageCaptionBuilder, skip_registration=True):
  """The DejaVu Sans characters with their Unicode names, keyed by code point ('U+03B1')."""

  name = "jaxssl_dejavu_glyphs"
  short_name = "dejavu_glyphs"
  label_names = GLYPH_CLASSES
  about = "matplotlib's DejaVu Sans characters with Unicode names; see jaxssl/data/glyphs.py."

  def _examples(self):
    return [
      dict(g, label=category_label(g["category"]), is_test=image_text.is_test_caption(g["caption"]))
      for g in list_glyphs(self._source_dir)
    ]

  def _pixels(self, example):
    return example["pixels"]
