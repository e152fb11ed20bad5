"""The packaged-data helper: a missing package skips on a bare machine and fails under CI."""
import pytest

import packaged_data


def _reader_without_package():
  raise ValueError("No fortune files; install them with `apt-get install -y fortunes`.")


def test_missing_data_skips_outside_ci_with_the_install_command(monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="apt-get install -y fortunes"):
    packaged_data.load(_reader_without_package)
  with pytest.raises(pytest.skip.Exception, match="apt-get install x"):
    packaged_data.require(False, "needs x (apt-get install x)")


@pytest.mark.parametrize("value", ["true", "1"])
def test_missing_data_fails_under_ci(monkeypatch, value):
  monkeypatch.setenv("CI", value)
  with pytest.raises(pytest.fail.Exception, match="CI installs this data.*apt-get install -y"):
    packaged_data.load(_reader_without_package)


def test_present_data_is_returned_and_required_data_passes(monkeypatch):
  monkeypatch.setenv("CI", "true")
  assert packaged_data.load(lambda a: [a], 3) == [3]
  packaged_data.require(True, "never shown")
