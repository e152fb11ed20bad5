"""docs/recipes.md pins every method's `imagenet` preset: a later edit that drifts fails here.

Each method section of docs/recipes.md starts with `## <method> (`configs/<m>.py:<preset>`)` and
holds one table whose rows begin with a config key in backticks: | `key` | ours | official |
official source | why they differ |. Here each `ours` cell must equal the preset's value, and a
row whose `ours` differs from `official` must say why (never a silent difference).
"""

import ast
import math
import os
import re
import sys

import pytest

from jaxssl import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "docs", "recipes.md")
METHODS = (
  "simclr",
  "moco_v3",
  "byol",
  "simsiam",
  "dino",
  "ibot",
  "vicreg",
  "barlow_twins",
  "mae",
  "ijepa",
  "data2vec",
  "clip",
  "siglip",
  "mlm",
  "gpt",
)
_SECTION = re.compile(r"^## (\w+) \(`(configs/\w+\.py:[\w,]+)`\)", re.M)


NOT_A_LITERAL = object()


def _cell_value(cell: str):
  """A table cell as a Python value (`(0.4, 0.4)` -> tuple, `1e-4` -> float, `None` -> None);
  NOT_A_LITERAL when the cell is free text."""
  text = cell.strip().strip("`").strip()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return NOT_A_LITERAL


def _same(a, b) -> bool:
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, bool) or isinstance(b, bool):
    return a is b or a == b
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
  return a == b


def sections() -> dict[str, tuple[str, list[list[str]]]]:
  """method -> (config spec, rows as cell lists) of docs/recipes.md."""
  with open(RECIPES) as f:
    text = f.read()
  found = {}
  matches = list(_SECTION.finditer(text))
  for i, m in enumerate(matches):
    body = text[m.end() : matches[i + 1].start() if i + 1 < len(matches) else len(text)]
    rows = [
      [c.strip() for c in line.strip().strip("|").split("|")]
      for line in body.splitlines()
      if line.startswith("| `")
    ]
    found[m.group(1)] = (m.group(2), rows)
  return found


def _lookup(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node.to_dict() if hasattr(node, "to_dict") else node


def test_every_method_has_a_pinned_imagenet_table():
  found = sections()
  assert set(METHODS) <= set(found), f"missing in docs/recipes.md: {set(METHODS) - set(found)}"
  for method in METHODS:
    spec, rows = found[method]
    assert spec.startswith(f"configs/{method}.py:"), spec
    assert len(rows) >= 8, f"{method}: only {len(rows)} pinned rows"


@pytest.mark.parametrize("method", METHODS + ("dinov2",))
def test_preset_matches_its_table_and_differences_say_why(method):
  spec, rows = sections()[method]
  config = config_lib.load_config_file(os.path.join(ROOT, spec))
  for row in rows:
    assert len(row) == 5, f"{method}: a row needs 5 cells: {row}"
    key, ours, official, source, why = row
    key = key.strip("`")
    want = _cell_value(ours)
    assert want is not NOT_A_LITERAL, f"{method} {key}: 'ours' cell {ours!r} is not a literal"
    got = _lookup(config, key)
    assert _same(got, want), f"{method} {key}: the preset has {got!r}, docs/recipes.md {want!r}"
    assert source, f"{method} {key}: no official source"
    if not _same(_cell_value(official), want):
      assert len(why) > 10, f"{method} {key}: ours {ours} vs official {official} without a why"


def test_a_drifted_value_is_caught(tmp_path, monkeypatch):
  # The check itself: a table that disagrees with the preset fails.
  with open(RECIPES) as f:
    text = f.read()
  spec, rows = sections()["simclr"]
  key, ours = rows[0][0], rows[0][1]
  line = next(line for line in text.splitlines() if line.startswith(f"| {key} | {ours} |"))
  drifted = text.replace(line, line.replace(f"| {ours} |", "| 12345 |", 1))
  path = tmp_path / "recipes.md"
  path.write_text(drifted)
  monkeypatch.setattr(sys.modules[__name__], "RECIPES", str(path))
  with pytest.raises(AssertionError, match="docs/recipes.md 12345"):
    test_preset_matches_its_table_and_differences_say_why("simclr")
