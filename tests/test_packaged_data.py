"""The packaged-data rules: a missing package skips on a bare machine and fails under CI, and a
test that reads optional data without declaring it fails even where the data is installed."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import packaged_data

TESTS = pathlib.Path(__file__).parent
ROOT = TESTS.parent


def _absent(monkeypatch, name):
  """Makes dataset `name` look uninstalled for this test."""
  real = packaged_data._real  # pylint: disable=protected-access
  for variable in packaged_data.DATA[name].variables:
    monkeypatch.setitem(real, variable, "/nonexistent/jaxssl_test")


def test_missing_data_skips_outside_ci_with_the_install_command(monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  _absent(monkeypatch, "fortunes")
  with pytest.raises(pytest.skip.Exception, match="apt-get install fortunes fortunes-min"):
    packaged_data.require_data("fortunes")
  with pytest.raises(pytest.skip.Exception, match="apt-get install x"):
    packaged_data.require(False, "needs x (apt-get install x)")


@pytest.mark.parametrize("value", ["true", "1"])
def test_missing_data_fails_under_ci(monkeypatch, value):
  monkeypatch.setenv("CI", value)
  _absent(monkeypatch, "tuxpaint_stamps")
  with pytest.raises(
    pytest.fail.Exception, match="CI installs this data.*apt-get install tuxpaint-stamps-default"
  ):
    packaged_data.require_data("tuxpaint_stamps")


def test_unknown_dataset_is_an_error():
  with pytest.raises(KeyError, match="Unknown packaged dataset 'cifar10'"):
    packaged_data.require_data("cifar10")


def test_every_variable_is_hidden_outside_a_declaring_test():
  from jaxssl.data import text  # pylint: disable=g-import-not-at-top

  for data in packaged_data.DATA.values():
    for variable in data.variables:
      assert not os.path.exists(os.environ[variable]), variable
  assert not os.path.exists(text.FORTUNES_DIR)  # the library's default path too


# Run by test_an_undeclared_read_fails_where_the_data_is_installed, in this order, with fake
# "installed" fortunes: every test named `undeclared` must fail, every other one pass.
_INNER_TESTS = """
import subprocess
import sys

from jaxssl.data import text
import packaged_data


def test_undeclared_read_fails():
  text.read_fortunes()


def test_declared_read_passes():
  assert len(packaged_data.load('fortunes', text.read_fortunes)) == 200


def test_declared_prepare_into_the_shared_data_dir(data_dir):
  packaged_data.require_data('fortunes')
  assert text.prepare_documents('fortunes', data_dir).is_prepared()


def test_undeclared_read_of_the_prepared_copy_fails(data_dir):
  text.documents('fortunes', 'train', data_dir)


def test_declared_again_finds_the_prepared_copy(data_dir):
  packaged_data.require_data('fortunes')
  assert text.BUILDERS['fortunes'](data_dir=data_dir, file_format='array_record').is_prepared()


def test_undeclared_subprocess_read_fails():
  subprocess.run([sys.executable, '-c', 'from jaxssl.data import text; text.read_fortunes()'],
                 check=True)
"""


def test_an_undeclared_read_fails_where_the_data_is_installed(tmp_path):
  """The check itself: fortunes "installed" (a fake directory named by the variable), the tests
  above run through this conftest in a fresh pytest; the undeclared reads all fail, in process,
  from a prepared copy in the shared data dir and in a subprocess."""
  fortunes = tmp_path / "fortunes"
  fortunes.mkdir()
  # 200 quotes, so the MD5 split gives every split some documents.
  (fortunes / "numbers").write_text("".join(f"Quote number {i}.\n%\n" for i in range(200)))
  (tmp_path / "test_inner.py").write_text(textwrap.dedent(_INNER_TESTS))
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAXSSL_")}
  env.update(
    JAXSSL_FORTUNES_DIR=str(fortunes),
    CI="true",
    PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]),
  )
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-q",
      "-rA",
      "-p",
      "conftest",
      "-p",
      "no:cacheprovider",
      "-p",
      "no:xdist",
      "--rootdir",
      str(tmp_path),
      str(tmp_path / "test_inner.py"),
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  outcomes = dict(
    (name, status)
    for status, name in re.findall(
      r"^(PASSED|FAILED|ERROR|SKIPPED)\S* \S*::(\w+)", result.stdout, re.M
    )
  )
  expected = {
    name: "FAILED" if "undeclared" in name else "PASSED"
    for name in re.findall(r"^def (test_\w+)", _INNER_TESTS, re.M)
  }
  assert outcomes == expected, result.stdout[-4000:] + result.stderr[-2000:]
  assert "MissingDataError" in result.stdout


def test_tests_never_name_the_packages_paths():
  """Tests reach optional data through the library (which reads the hidden variables), never
  by the Debian paths or the library's default-path constants."""
  constants = (
    "DEFAULT_FASHION_MNIST_DIR",
    "DEFAULT_TUXPAINT_DIR",
    "DEFAULT_FONT",
    "DEFAULT_EMOJI_TEST",
    "FORTUNES_DIR",
    "PYTHON_DOC_DIR",
    "DEFAULT_SHAKESPEARE_DIR",
  )
  pattern = re.compile(r"['\"]/usr/share/|\.(" + "|".join(constants) + r")\b")
  offenders = []
  for path in sorted(TESTS.rglob("*.py")):
    if path.name in ("packaged_data.py", pathlib.Path(__file__).name):
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if pattern.search(line):
        offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
  assert not offenders, "\n".join(offenders)
