"""Emoji image-caption dataset: emoji-test.txt parsing, the split rule, glyph rendering, the
builder on an excerpt, and the real packages against the registered DatasetInfo."""

import collections
import hashlib
import pathlib

import numpy as np
from PIL import features as pil_features
from PIL import ImageFont
import pytest

from jaxssl.data import datasets
from jaxssl.data import emoji
from jaxssl.data import image_text
from jaxssl.eval import zeroshot
import image_text_checks
import packaged_data


# Lines of Debian 12's /usr/share/unicode/emoji/emoji-test.txt (15.0), in file order (the
# real-package test checks each data line is in the installed file): a header, a test-split
# emoji (slightly smiling face), a qualified / unqualified pair, a ZWJ sequence with its
# gendered and skin-toned variants, a component, a keycap (a '#' inside the comment), a flag.
EXCERPT = (
  "# emoji-test.txt\n"
  "# Date: 2022-08-12, 20:24:39 GMT\n"
  "# group: Smileys & Emotion\n"
  "\n"
  "# subgroup: face-smiling\n"
  "1F600                                                  ; fully-qualified     # \U0001f600 "
  "E1.0 grinning face\n"
  "1F642                                                  ; fully-qualified     # \U0001f642 "
  "E1.0 slightly smiling face\n"
  "# subgroup: face-affection\n"
  "263A FE0F                                              ; fully-qualified     # \u263a\ufe0f "
  "E0.6 smiling face\n"
  "263A                                                   ; unqualified         # \u263a "
  "E0.6 smiling face\n"
  "# group: People & Body\n"
  "# subgroup: person-role\n"
  "1F9D1 200D 1F373                                       ; fully-qualified     # "
  "\U0001f9d1\u200d\U0001f373 E12.1 cook\n"
  "1F468 200D 1F373                                       ; fully-qualified     # "
  "\U0001f468\u200d\U0001f373 E4.0 man cook\n"
  "1F468 1F3FB 200D 1F373                                 ; fully-qualified     # "
  "\U0001f468\U0001f3fb\u200d\U0001f373 E4.0 man cook: light skin tone\n"
  "1F469 200D 1F373                                       ; fully-qualified     # "
  "\U0001f469\u200d\U0001f373 E4.0 woman cook\n"
  "# group: Component\n"
  "\n"
  "# subgroup: skin-tone\n"
  "1F3FB                                                  ; component           # \U0001f3fb "
  "E1.0 light skin tone\n"
  "# group: Symbols\n"
  "# subgroup: keycap\n"
  "0023 FE0F 20E3                                         ; fully-qualified     # #\ufe0f\u20e3 "
  "E0.6 keycap: #\n"
  "0023 20E3                                              ; unqualified         # #\u20e3 "
  "E0.6 keycap: #\n"
  "# group: Flags\n"
  "# subgroup: country-flag\n"
  "1F1EF 1F1F5                                            ; fully-qualified     # "
  "\U0001f1ef\U0001f1f5 E0.6 flag: Japan\n"
  "# fully-qualified : 3655\n"
  "#EOF\n"
)

# What parse_emoji_test keeps of EXCERPT: (key, group, caption, keywords).
EXPECTED = [
  ("1F600", "Smileys & Emotion", "grinning face", "smileys and emotion face smiling"),
  ("1F642", "Smileys & Emotion", "slightly smiling face", "smileys and emotion face smiling"),
  ("263A-FE0F", "Smileys & Emotion", "smiling face", "smileys and emotion face affection"),
  ("1F9D1-200D-1F373", "People & Body", "cook", "people and body person role"),
  ("1F468-200D-1F373", "People & Body", "man cook", "people and body person role"),
  ("1F469-200D-1F373", "People & Body", "woman cook", "people and body person role"),
  ("23-FE0F-20E3", "Symbols", "keycap: #", "symbols keycap"),
  ("1F1EF-1F1F5", "Flags", "flag: Japan", "flags country flag"),
]


def test_parse_emoji_test_excerpt():
  entries = emoji.parse_emoji_test(EXCERPT.splitlines(keepends=True))
  assert [(e["key"], e["group"], e["caption"], e["keywords"]) for e in entries] == EXPECTED
  assert entries[3]["sequence"] == "\U0001f9d1\u200d\U0001f373"
  assert emoji.EMOJI_CLASS_NAMES == (
    "smileys and emotion",
    "people and body",
    "animals and nature",
    "food and drink",
    "travel and places",
    "activities",
    "objects",
    "symbols",
    "flags",
  )
  assert zeroshot.class_names("emoji", "/nonexistent") == emoji.EMOJI_CLASS_NAMES


def test_parse_rejects_unknown_groups_bad_lines_and_twin_names():
  with pytest.raises(ValueError, match="group 'Dinosaurs'"):
    emoji.parse_emoji_test(["# group: Dinosaurs\n"])
  with pytest.raises(ValueError, match="line 3 is not"):  # the emoji column must match
    emoji.parse_emoji_test(
      [
        "# group: Flags\n",
        "# subgroup: flag\n",
        "1F600 ; fully-qualified # \U0001f601 E1.0 grinning face\n",
      ]
    )
  with pytest.raises(ValueError, match="line 1 is not"):  # data before any group header
    emoji.parse_emoji_test(["1F600 ; fully-qualified # \U0001f600 E1.0 grinning face\n"])
  twin = "1F601 ; fully-qualified # \U0001f601 E0.6 grinning face\n"
  with pytest.raises(ValueError, match="unique names"):
    emoji.parse_emoji_test(EXCERPT.splitlines()[:7] + [twin])


def test_split_rule_keeps_gender_and_hair_variants_together():
  cook, man_cook, woman_cook = (
    "\U0001f9d1\u200d\U0001f373",
    "\U0001f468\u200d\U0001f373",
    ("\U0001f469\u200d\U0001f373"),
  )
  runner, man_running = "\U0001f3c3", "\U0001f3c3\u200d\u2642\ufe0f"
  person, man_red_hair = "\U0001f9d1", "\U0001f468\u200d\U0001f9b0"
  assert (
    emoji.split_key(cook)
    == emoji.split_key(man_cook)
    == emoji.split_key(woman_cook)
    == ("1F9D1 1F373")
  )
  assert emoji.split_key(runner) == emoji.split_key(man_running) == "1F3C3"
  assert emoji.split_key(person) == emoji.split_key(man_red_hair) == "1F9D1"
  # Distinct emoji keep distinct keys (flags are not merged, keycaps keep their base).
  japan, france = "\U0001f1ef\U0001f1f5", "\U0001f1eb\U0001f1f7"
  assert emoji.split_key(japan) != emoji.split_key(france)
  assert emoji.split_key("#\ufe0f\u20e3") == "23 20E3"
  for group in ([cook, man_cook, woman_cook], [runner, man_running], [person, man_red_hair]):
    assert len({emoji.is_test_emoji(s) for s in group}) == 1
  for sequence in (cook, japan, france, "\U0001f600", "\U0001f436", "\U0001f34e"):
    digest = int(hashlib.md5(emoji.split_key(sequence).encode("utf-8")).hexdigest(), 16)
    assert emoji.is_test_emoji(sequence) == (digest % 5 == 0)


def test_missing_files_name_the_apt_packages(tmp_path, monkeypatch):
  monkeypatch.setenv(emoji.FONT_ENV, str(tmp_path / "no_font.ttf"))
  monkeypatch.setenv(emoji.EMOJI_TEST_ENV, str(tmp_path / "no_emoji-test.txt"))
  with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
    datasets.prepare("emoji", str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds" / "jaxssl_emoji" / "1.0.0").exists()
  (tmp_path / "font.ttf").write_bytes(b"")
  monkeypatch.setenv(emoji.FONT_ENV, str(tmp_path / "font.ttf"))
  with pytest.raises(FileNotFoundError, match="apt-get install unicode-data"):
    emoji.source_paths()
  with pytest.raises(FileNotFoundError, match=emoji.FONT_FILE):  # a source_dir holds both
    emoji.source_paths(str(tmp_path))


def _require_font() -> pathlib.Path:
  """Declares the emoji data (font and emoji-test.txt); returns the real font's path."""
  packaged_data.require_data("emoji")
  return emoji.source_paths()[0]


def test_render_one_glyph_or_nothing():
  font_path = _require_font()
  font = emoji.load_font(font_path)
  glyph = emoji.render_emoji(font, "\U0001f600")
  pixels = image_text.to_square_rgb(glyph)
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
  assert pixels.min() < 100 and pixels.std() > 20  # ink on white, not a flat square
  assert np.all(pixels[0, 0] >= 250)  # the corner of a round face is the white background
  assert not np.all(pixels[..., 0] == pixels[..., 2])  # colour, not grey: yellow face
  # 'A' is not in the emoji font: it draws no ink and is refused.
  assert emoji.render_emoji(font, "A") is None
  # A ZWJ sequence and a flag are one glyph only with text shaping (raqm); Pillow's basic
  # layout draws their parts side by side, which the check catches.
  basic = emoji.load_font(font_path, ImageFont.Layout.BASIC)
  assert emoji.render_emoji(basic, "\U0001f600") is not None
  for sequence in ("\U0001f468\u200d\U0001f373", "\U0001f1ef\U0001f1f5"):
    assert emoji.render_emoji(basic, sequence) is None
    shaped = emoji.render_emoji(font, sequence)
    if pil_features.check("raqm"):
      assert shaped is not None and shaped.size[0] <= font.getlength("\U0001f600") + 1
    else:
      assert shaped is None


def test_builder_on_an_excerpt(tmp_path):
  font_path = _require_font()
  source = tmp_path / "emoji_source"
  source.mkdir()
  (source / emoji.FONT_FILE).symlink_to(font_path)
  (source / emoji.EMOJI_TEST_FILE).write_text(EXCERPT, encoding="utf-8")
  data_dir = str(tmp_path / "tfds")
  datasets.prepare("emoji", data_dir, source_dir=str(source))
  sequences = {e["caption"]: e["sequence"] for e in emoji.parse_emoji_test(EXCERPT.splitlines())}
  seen, splits = {}, collections.Counter()
  for split, ex in image_text_checks.read_back("emoji", data_dir):
    assert (split == "test") == emoji.is_test_emoji(sequences[ex["caption"]])
    assert ex["image"].std() > 10  # every emoji drew something
    seen[ex["caption"]] = (emoji.EMOJI_GROUPS[int(ex["label"])], ex["keywords"])
    splits[split] += 1
  assert splits == {"train": 7, "test": 1}  # test: slightly smiling face
  assert seen == {caption: (group, keywords) for _, group, caption, keywords in EXPECTED}


def test_real_emoji_match_the_recorded_info(data_dir):
  _require_font()
  test_file = emoji.source_paths()[1]
  installed = test_file.read_text(encoding="utf-8").splitlines()
  excerpt_data = [l for l in EXCERPT.splitlines() if l and not l.startswith("#")]
  assert set(excerpt_data) <= set(installed)  # the excerpt is the real format
  splits = image_text_checks.read_splits_and_check_info("emoji", data_dir)
  assert datasets.get_info("emoji").num_classes == 9
  # Every kept entry of the file drew as one glyph: none was left out.
  entries = emoji.read_emoji_test(test_file)
  assert len(entries) == len(splits["train"]["captions"]) + len(splits["test"]["captions"]) == 1870
  # Neither a caption nor a split key (gender / hair variants) is in both splits.
  key_of = {e["caption"]: emoji.split_key(e["sequence"]) for e in entries}
  captions = {split: set(s["captions"]) for split, s in splits.items()}
  keys = {split: {key_of[c] for c in captions[split]} for split in captions}
  assert not captions["train"] & captions["test"] and not keys["train"] & keys["test"]
  labels = {split: s["labels"] for split, s in splits.items()}
  assert set(labels["train"]) == set(labels["test"]) == set(range(9))
  counts = collections.Counter(labels["train"].tolist() + labels["test"].tolist())
  assert counts[emoji.EMOJI_GROUPS.index("People & Body")] == 363
  assert counts[emoji.EMOJI_GROUPS.index("Flags")] == 269
