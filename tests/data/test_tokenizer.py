"""Tokenizers: byte fallback and trained byte-level BPE (round trips, determinism, specials)."""

import json

import pytest

from jaxssl.data import text
from jaxssl.data.tokenizer import (
  SPECIAL_TOKENS,
  BpeTokenizer,
  ByteTokenizer,
  get_tokenizer,
  train_bpe,
)

SAMPLES = [
  "Hello, world!",
  "  leading spaces\n\ttabs\n",
  "ünïcödé — “quotes” 日本語 🙂",
  "",
  "def f(x):\n    return x ** 2\n",
]


def _corpus():
  """Real English + code text that ships inside Python (the pydoc topics), split into
  paragraphs so BPE training sees many short documents, as with a quote corpus."""
  return [p + "\n" for _, doc in text.read_pydoc_topics() for p in doc.split("\n\n") if p.strip()][
    :3000
  ]


def test_byte_tokenizer_round_trip_and_specials():
  tok = ByteTokenizer()
  assert tok.vocab_size == 259 and (tok.pad_id, tok.eos_id, tok.mask_id) == (256, 257, 258)
  for s in SAMPLES:
    ids = tok.encode(s)
    assert ids == list(s.encode("utf-8"))
    assert tok.decode(ids) == s
    assert tok.decode([tok.eos_id, *ids, tok.pad_id, tok.mask_id]) == s
  assert isinstance(get_tokenizer("byte"), ByteTokenizer)


@pytest.fixture(scope="module")
def bpe_paths(tmp_path_factory):
  corpus = _corpus()
  a = tmp_path_factory.mktemp("a")
  b = tmp_path_factory.mktemp("b")
  train_bpe(corpus, 600, a)
  train_bpe(corpus, 600, b)
  return a / "tokenizer.json", b / "tokenizer.json"


def test_bpe_training_is_deterministic(bpe_paths):
  a, b = (json.loads(p.read_text()) for p in bpe_paths)
  assert a["model"]["vocab"] == b["model"]["vocab"]
  assert a["model"]["merges"] == b["model"]["merges"]


def test_bpe_round_trip_specials_and_compression(bpe_paths):
  tok = get_tokenizer(str(bpe_paths[0]))
  assert isinstance(tok, BpeTokenizer) and tok.vocab_size == 600
  assert [tok.pad_id, tok.eos_id, tok.mask_id] == [0, 1, 2]
  for s in SAMPLES + _corpus()[:200]:
    assert tok.decode(tok.encode(s)) == s, s
  # The special token strings in text are ordinary characters, not special ids.
  assert tok.decode(tok.encode(SPECIAL_TOKENS[1])) == SPECIAL_TOKENS[1]
  assert tok.eos_id not in tok.encode(SPECIAL_TOKENS[1])
  # Merges compress: fewer tokens than bytes on held-in English text.
  corpus = "".join(_corpus()[:500])
  assert len(tok.encode(corpus)) < 0.6 * len(corpus.encode("utf-8"))
  assert tok.decode([tok.eos_id] + tok.encode("abc")) == "abc"


def test_bad_inputs_raise(tmp_path):
  with pytest.raises(ValueError, match="259"):
    train_bpe(["abc"], 100, tmp_path)
  with pytest.raises(ValueError, match="train_bpe"):
    get_tokenizer(str(tmp_path / "missing.json"))
