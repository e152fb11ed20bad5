"""Tests that read data from an optional Debian / sdist package: skip without it, fail in CI.

The README's test command must pass on a machine with nothing but Python, so a test needing
`apt-get install fortunes` skips there with the install command as its reason. CI installs every
such package (`.ci/run`), so there (CI=true) a missing package is a failure, never a silent skip.
"""
import os

import pytest


def missing(reason: str):
  """Skips the calling test (fails it under CI=true) with `reason`, which names the install."""
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail(f"CI installs this data (.ci/run), but: {reason}")
  pytest.skip(reason)


def load(reader, *args):
  """reader(*args), or `missing` with the reader's own ValueError (it names the install)."""
  try:
    return reader(*args)
  except ValueError as e:
    missing(str(e))


def require(present: bool, reason: str):
  """`missing(reason)` unless `present`; call at the top of a test that needs the package."""
  if not present:
    missing(reason)
