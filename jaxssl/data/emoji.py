"""Emoji images with their Unicode names, as a TFDS ArrayRecord image-caption dataset.

`emoji`: every fully-qualified emoji of Unicode's emoji-test.txt (Debian `unicode-data`,
/usr/share/unicode/emoji/emoji-test.txt; version 15.0 in Debian 12), drawn with Google's Noto
Color Emoji font (Debian `fonts-noto-color-emoji`, 2.042 in Debian 12, /usr/share/fonts/truetype/
noto/NotoColorEmoji.ttf, a CBDT colour-bitmap font with one strike at 109 px). Each line of the file
gives an emoji's code points, its status and its CLDR short name; `# group:` and `# subgroup:`
headers sort them (group 'Smileys & Emotion', subgroup 'face-smiling', name 'grinning face').

Kept: status `fully-qualified` in the nine groups of EMOJI_GROUPS ('Component', the bare skin
tones and hair styles, is skipped), minus the skin-tone variants (sequences holding a modifier
U+1F3FB..U+1F3FF): they are 1,785 of the 2,148 'People & Body' entries, the same figure recoloured
five (or 25) ways, which at 32x32 would be near-duplicates making one class 59% of the set. 1,870
emoji remain, 85 to 363 per group.

Each example is {'image': uint8 [32, 32, 3], 'label': group index, 'caption': the CLDR short
name ('grinning face', 'flag: Japan'), 'keywords': the group and subgroup words
('smileys and emotion face smiling')}. The keywords play the part of Tux Paint's path keywords
(see image_text.py): they are what lets a text tower connect the zero-shot class names
(EMOJI_CLASS_NAMES, the groups lower-cased with '&' read 'and') to images.

Images: the sequence drawn with Pillow (`embedded_color=True`), cropped to its ink, composited
onto white, padded to a white square and resized with Lanczos (image_text.to_square_rgb).
Multi-code-point sequences (ZWJ sequences, flags, keycaps, U+FE0F presentation forms) need text
shaping to become one glyph: with Pillow's raqm layout (HarfBuzz; checked with Pillow 13.0 and
raqm 0.11) all 1,870 render as one glyph. Each is checked as it is drawn (`render_emoji`: the
laid-out advance is one glyph's and the ink fits in it); without raqm (Pillow's basic layout)
such sequences come out as several glyphs, fail the check and are left out with a warning, and
the split sizes then differ from the registered ones.

Split: an emoji is test iff the MD5 of its split key is 0 mod 5. The key is the code points
without the gender signs, hair-style components, ZWJ and U+FE0F, with man / woman read as
person, boy / girl as child and old man / old woman as older person (`split_key`), so Unicode's
gender and hair-style variants of one emoji ('cook', 'man cook', 'woman cook'; 'man: red hair',
'person') land in the same split: no test pair has a gender or hair-style twin among the
training pairs. Short names are unique (checked), so identical captions never straddle the
split either. 1,481 train / 389 test.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import pathlib
from typing import Iterable

from absl import logging
import numpy as np
from PIL import features as pil_features
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from jaxssl import errors
from jaxssl.data import image_text

FONT_ENV = "JAXSSL_EMOJI_FONT"
EMOJI_TEST_ENV = "JAXSSL_EMOJI_TEST"
FONT_FILE = "NotoColorEmoji.ttf"
EMOJI_TEST_FILE = "emoji-test.txt"
DEFAULT_FONT = f"/usr/share/fonts/truetype/noto/{FONT_FILE}"
DEFAULT_EMOJI_TEST = f"/usr/share/unicode/emoji/{EMOJI_TEST_FILE}"
FONT_APT_PACKAGE = "fonts-noto-color-emoji"
EMOJI_TEST_APT_PACKAGE = "unicode-data"
# The only bitmap strike of Noto Color Emoji; FreeType refuses other sizes for a CBDT font.
FONT_SIZE = 109
# Any one-code-point emoji: its advance is the width of one glyph.
_REFERENCE_EMOJI = "\U0001f600"  # grinning face

# The groups of emoji-test.txt 15.0 (Debian 12 unicode-data) in file order = label order;
# 'Component' (skin tones, hair styles on their own) is skipped.
EMOJI_GROUPS = (
  "Smileys & Emotion",
  "People & Body",
  "Animals & Nature",
  "Food & Drink",
  "Travel & Places",
  "Activities",
  "Objects",
  "Symbols",
  "Flags",
)
SKIPPED_GROUPS = ("Component",)
SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)


def prompt_words(header: str) -> str:
  """'Smileys & Emotion' -> 'smileys and emotion'; 'face-smiling' -> 'face smiling'."""
  return " ".join(header.lower().replace("&", "and").replace("-", " ").split())


EMOJI_CLASS_NAMES = tuple(prompt_words(g) for g in EMOJI_GROUPS)

# DatasetInfo fields of the prepared set (jaxssl.data.datasets registers them). mean/std: our
# train split, float64 over all pixels / 255, rounded to 4 digits; tests/data/test_emoji.py
# recomputes them and the split sizes.
EMOJI_INFO = dict(
  name="emoji",
  num_classes=len(EMOJI_GROUPS),
  image_shape=(image_text.IMAGE_SIZE, image_text.IMAGE_SIZE, 3),
  split_sizes={"train": 1481, "test": 389},
  mean=(0.7938, 0.7332, 0.6631),
  std=(0.2965, 0.2913, 0.3572),
)


def source_paths(source_dir: str | None = None) -> tuple[pathlib.Path, pathlib.Path]:
  """(font, emoji-test.txt): both in `source_dir` if given, else $JAXSSL_EMOJI_FONT and
  $JAXSSL_EMOJI_TEST, else Debian's paths."""
  if source_dir:
    font, test = pathlib.Path(source_dir) / FONT_FILE, pathlib.Path(source_dir) / EMOJI_TEST_FILE
  else:
    font = pathlib.Path(os.environ.get(FONT_ENV) or DEFAULT_FONT)
    test = pathlib.Path(os.environ.get(EMOJI_TEST_ENV) or DEFAULT_EMOJI_TEST)
  for path, package, default, env in (
    (font, FONT_APT_PACKAGE, DEFAULT_FONT, FONT_ENV),
    (test, EMOJI_TEST_APT_PACKAGE, DEFAULT_EMOJI_TEST, EMOJI_TEST_ENV),
  ):
    if not path.is_file():
      raise errors.MissingDataError(
        f"Dataset 'emoji' needs {path.name}; {path} does not exist. Install it with "
        f"`apt-get install {package}` (into {default}), or set ${env} to the file (or pass a "
        f"source_dir holding {FONT_FILE} and {EMOJI_TEST_FILE})."
      )
  return font, test


def parse_emoji_test(lines: Iterable[str]) -> list[dict[str, str]]:
  """The kept entries of emoji-test.txt, in file order: {'sequence', 'key' (code points in hex,
  '1F468-200D-1F373'), 'group', 'subgroup', 'caption', 'keywords'}.

  A data line reads `1F600 ; fully-qualified # 😀 E1.0 grinning face`: code points; status #
  the emoji itself, the Emoji version it came in, the CLDR short name.
  """
  entries, group, subgroup = [], None, None
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if line.startswith("# group:"):
      group, subgroup = line.split(":", 1)[1].strip(), None
      if group not in EMOJI_GROUPS + SKIPPED_GROUPS:
        raise ValueError(
          f"emoji-test.txt line {number}: group {group!r} is not one of "
          f"{EMOJI_GROUPS + SKIPPED_GROUPS}; this loader knows "
          f"{EMOJI_TEST_APT_PACKAGE} 15.0. Add the group to EMOJI_GROUPS."
        )
      continue
    if line.startswith("# subgroup:"):
      subgroup = line.split(":", 1)[1].strip()
      continue
    if not line or line.startswith("#"):
      continue
    fields, _, comment = line.partition("#")
    points, _, status = fields.partition(";")
    parts = comment.split(maxsplit=2)
    try:
      codepoints = [int(p, 16) for p in points.split()]
    except ValueError:
      codepoints = []
    sequence = "".join(map(chr, codepoints))
    if (
      not codepoints
      or len(parts) != 3
      or parts[0] != sequence
      or not parts[1].startswith("E")
      or group is None
      or subgroup is None
    ):
      raise ValueError(
        f"emoji-test.txt line {number} is not `code points ; status # emoji "
        f"E<version> name` under a group and subgroup header: {line!r}. Reinstall "
        f"{EMOJI_TEST_APT_PACKAGE} or point ${EMOJI_TEST_ENV} at the real file."
      )
    if (
      status.strip() != "fully-qualified"
      or group in SKIPPED_GROUPS
      or any(c in SKIN_TONES for c in codepoints)
    ):
      continue
    entries.append(
      {
        "sequence": sequence,
        "key": "-".join(f"{c:X}" for c in codepoints),
        "group": group,
        "subgroup": subgroup,
        "caption": parts[2],
        "keywords": f"{prompt_words(group)} {prompt_words(subgroup)}",
      }
    )
  counts = collections.Counter(e["caption"] for e in entries)
  twins = sorted(c for c, n in counts.items() if n > 1)
  if twins:
    raise ValueError(
      f"emoji-test.txt gives two kept emoji the same name ({', '.join(twins[:3])});"
      f" the split assumes unique names. Reinstall {EMOJI_TEST_APT_PACKAGE}."
    )
  return entries


def read_emoji_test(path: pathlib.Path) -> list[dict[str, str]]:
  with open(path, encoding="utf-8") as f:
    entries = parse_emoji_test(f)
  if not entries:
    raise ValueError(f"No fully-qualified emoji in {path}; reinstall {EMOJI_TEST_APT_PACKAGE}.")
  return entries


# Code points a split key ignores: ZWJ, emoji presentation selector, female / male signs, the
# hair-style components; and the gendered people read as their neutral form.
_KEY_DROPPED = {0x200D, 0xFE0F, 0x2640, 0x2642, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3}
_KEY_NEUTRAL = {
  0x1F468: 0x1F9D1,
  0x1F469: 0x1F9D1,  # man, woman -> person
  0x1F466: 0x1F9D2,
  0x1F467: 0x1F9D2,  # boy, girl -> child
  0x1F474: 0x1F9D3,
  0x1F475: 0x1F9D3,
}  # old man, old woman -> older person


def split_key(sequence: str) -> str:
  """The emoji with gender and hair style erased, in hex: 'man cook' and 'woman cook' (and
  'cook') -> '1F9D1 1F373'."""
  return " ".join(
    f"{_KEY_NEUTRAL.get(ord(c), ord(c)):X}" for c in sequence if ord(c) not in _KEY_DROPPED
  )


def is_test_emoji(sequence: str) -> bool:
  """The split rule: MD5 of the UTF-8 split key is 0 modulo 5."""
  return (
    int(hashlib.md5(split_key(sequence).encode("utf-8")).hexdigest(), 16) % image_text.TEST_MODULUS
    == 0
  )


def load_font(path: str | os.PathLike, layout_engine=None) -> ImageFont.FreeTypeFont:
  """Noto Color Emoji at its bitmap size; Pillow's raqm layout unless told otherwise."""
  return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=layout_engine)


def render_emoji(font: ImageFont.FreeTypeFont, sequence: str) -> Image.Image | None:
  """The emoji drawn as RGBA, cropped to its ink; None unless it is one visible glyph.

  One glyph: the layout engine advances the pen by one emoji's width for the whole sequence
  (an unshaped ZWJ sequence or flag advances by one width per part), and the drawn ink is
  non-empty and no wider than that (a code point missing from the font draws nothing).
  """
  advance = font.getlength(_REFERENCE_EMOJI)
  if round(font.getlength(sequence) / advance) != 1:
    return None
  side = 2 * math.ceil(advance)
  canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
  ImageDraw.Draw(canvas).text((0, 0), sequence, font=font, embedded_color=True)
  ink = canvas.getchannel("A").getbbox()
  if ink is None or ink[2] - ink[0] > advance + 1:
    return None
  return canvas.crop(ink)


def list_emoji(source_dir: str | None = None) -> list[dict[str, str | np.ndarray]]:
  """The kept entries of emoji-test.txt (parse_emoji_test) that the font draws as one glyph,
  each with its 'pixels' (uint8 [32, 32, 3])."""
  font_path, test_path = source_paths(source_dir)
  font = load_font(font_path)
  kept, dropped = [], []
  for entry in read_emoji_test(test_path):
    glyph = render_emoji(font, entry["sequence"])
    if glyph is None:
      dropped.append(entry["caption"])
    else:
      kept.append(dict(entry, pixels=image_text.to_square_rgb(glyph)))
  if dropped:
    logging.warning(
      "%d of %d emoji did not draw as one glyph with %s and are left out (e.g. %s); the split "
      "sizes will differ from the registered ones. Multi-code-point emoji need text shaping: "
      "this Pillow %s raqm (the PyPI wheels have it).",
      len(dropped),
      len(dropped) + len(kept),
      font_path,
      ", ".join(dropped[:3]),
      "has" if pil_features.check("raqm") else "lacks",
    )
  if not kept:
    raise ValueError(
      f"No emoji of {test_path} drew as a glyph with {font_path}; reinstall {FONT_APT_PACKAGE}."
    )
  return kept


class JaxsslEmoji(image_text.ImageCaptionBuilder, skip_registration=True):
  """The Noto Color Emoji images with their Unicode names, keyed by their code points."""

  name = "jaxssl_emoji"
  short_name = "emoji"
  label_names = EMOJI_CLASS_NAMES
  about = "Noto Color Emoji with Unicode short names; see jaxssl/data/emoji.py."

  def _examples(self):
    return [
      dict(e, label=EMOJI_GROUPS.index(e["group"]), is_test=is_test_emoji(e["sequence"]))
      for e in list_emoji(self._source_dir)
    ]

  def _pixels(self, example):
    return example["pixels"]
