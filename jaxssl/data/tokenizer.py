"""Tokenizers for the text datasets: byte-level BPE (HuggingFace `tokenizers`) and raw bytes.

Both expose the same small interface: `encode(text) -> list[int]`, `decode(ids) -> str`,
`vocab_size`, and the special ids `pad_id`, `eos_id`, `mask_id` ([MASK] is BERT's, Devlin et
al. 2019 sec. 3.1; EOS separates packed documents, GPT-2).

* `BpeTokenizer`: byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford
  et al. 2019 sec. 2.2) trained offline on the prepared corpus's train split by `train_bpe` and
  saved as `tokenizer.json` beside the prepared data. Byte level means every string round
  trips exactly and there is no unknown token. Training is deterministic: the documents are fed
  in a fixed order, and the trainer's merges are chosen by (count, pair) order.
* `ByteTokenizer`: the fallback with nothing to train: ids 0..255 are the UTF-8 bytes, then the
  special tokens (vocab 259).

`get_tokenizer(spec)` builds one from a config string: 'byte', or a path to a tokenizer.json.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

SPECIAL_TOKENS = ("<pad>", "<eos>", "<mask>")
TOKENIZER_FILE = "tokenizer.json"


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then <pad>, <eos>, <mask>."""

  name = "byte"

  def __init__(self):
    self.pad_id, self.eos_id, self.mask_id = 256, 257, 258
    self.vocab_size = 256 + len(SPECIAL_TOKENS)

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Iterable[int]) -> str:
    # Special tokens carry no text; a cut through a multi-byte character decodes as U+FFFD.
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class BpeTokenizer:
  """A trained byte-level BPE tokenizer (HuggingFace `tokenizers`), loaded from tokenizer.json."""

  def __init__(self, path: str | os.PathLike):
    tokenizers = _import_tokenizers()
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.exists(path):
      raise ValueError(
        f"No tokenizer file at {path!r}; train one with "
        "jaxssl.data.tokenizer.train_bpe (the text dataset builders do this when "
        "they prepare the data) or use tokenizer='byte'."
      )
    self.path = path
    self.name = path
    self._tok = tokenizers.Tokenizer.from_file(path)
    # '<eos>' written in a document is text, not the EOS id (the trainer adds EOS itself).
    self._tok.encode_special_tokens = True
    ids = [self._tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if any(i is None for i in ids):
      raise ValueError(
        f"{path} lacks the special tokens {SPECIAL_TOKENS}; retrain it with train_bpe."
      )
    self.pad_id, self.eos_id, self.mask_id = ids
    self.vocab_size = self._tok.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts))]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def _import_tokenizers():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      "The BPE tokenizer needs the `tokenizers` package: pip install tokenizers "
      "(or use tokenizer='byte')."
    ) from e
  return tokenizers


def train_bpe(
  texts: Iterable[str], vocab_size: int, path: str | os.PathLike, min_frequency: int = 2
) -> BpeTokenizer:
  """Trains a byte-level BPE tokenizer on `texts` (in the given order) and saves it at `path`.

  `path` is a directory (tokenizer.json is written inside) or a .json file path.
  """
  tokenizers = _import_tokenizers()
  if vocab_size < 256 + len(SPECIAL_TOKENS):
    raise ValueError(
      f"vocab_size {vocab_size} is below the 256 byte symbols + "
      f"{len(SPECIAL_TOKENS)} specials; use at least 259 (or the ByteTokenizer)."
    )
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=list(SPECIAL_TOKENS),
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(list(texts), trainer=trainer)
  path = os.fspath(path)
  if not path.endswith(".json"):
    os.makedirs(path, exist_ok=True)
    path = os.path.join(path, TOKENIZER_FILE)
  tok.save(path)
  return BpeTokenizer(path)


def get_tokenizer(spec: str):
  """'byte' -> ByteTokenizer; a tokenizer.json path (or its directory) -> BpeTokenizer."""
  if spec == "byte":
    return ByteTokenizer()
  return BpeTokenizer(spec)
