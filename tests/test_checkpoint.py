"""Checkpointer retention: the newest N steps plus every K-th, through Orbax preservation
policies; a read-only manager creates nothing."""

import os
import shutil

import jax.numpy as jnp
import pytest

from jaxssl import checkpoint


@pytest.mark.parametrize(
  "max_to_keep, keep_every, kept",
  [
    (2, 4, [4, 8, 9]),
    (3, None, [7, 8, 9]),
    (None, None, list(range(1, 10))),
  ],
)
def test_keeps_the_last_n_and_every_kth_step(tmp_path, max_to_keep, keep_every, kept):
  writer = checkpoint.Checkpointer(str(tmp_path), max_to_keep=max_to_keep, keep_every=keep_every)
  for step in range(1, 10):
    writer.save(step, {"x": jnp.full((3,), float(step))}, None)
  writer.close()
  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  assert reader.all_steps() == kept
  reader.close()
  assert float(checkpoint.read_state_numpy(str(tmp_path), kept[-1])["x"][0]) == kept[-1]


def test_read_only_creates_no_directory(tmp_path):
  reader = checkpoint.Checkpointer(str(tmp_path / "run"), read_only=True)
  assert reader.all_steps() == [] and reader.latest_step() is None
  reader.close()
  assert not os.path.exists(checkpoint.checkpoint_dir(str(tmp_path / "run")))


def _delete_once_listed(monkeypatch, step_dir):
  """Makes `step_dir` vanish at the first look inside it, after the listing found it: the
  moment a trainer's retention policy deletes a step under an eval job listing the directory
  (seen in CI: Orbax then stats the vanished step for its commit time)."""
  real_stat = os.stat

  def stat(path, *args, **kwargs):
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(step_dir + os.sep):
      monkeypatch.setattr(os, "stat", real_stat)  # once; rmtree's own stats go straight through
      shutil.rmtree(step_dir)
    return real_stat(path, *args, **kwargs)

  monkeypatch.setattr(os, "stat", stat)


def test_listing_survives_a_step_deleted_while_listed(tmp_path, monkeypatch):
  writer = checkpoint.Checkpointer(str(tmp_path), max_to_keep=None)
  for step in (1, 2, 3):
    writer.save(step, {"x": jnp.full((3,), float(step))}, None)
  writer.close()
  ckpt_dir = checkpoint.checkpoint_dir(str(tmp_path))
  _delete_once_listed(monkeypatch, os.path.join(ckpt_dir, "2"))
  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)  # lists in its constructor
  assert not os.path.exists(os.path.join(ckpt_dir, "2"))
  assert reader.all_steps() == [1, 3]
  _delete_once_listed(monkeypatch, os.path.join(ckpt_dir, "3"))
  assert reader.all_steps() == [1]
  reader.close()


def test_failed_read_leftovers_are_dropped_and_other_reports_kept(monkeypatch):
  """What an abandoned Orbax read reports as it is collected never reaches the output; any
  other unraisable error still does (jaxssl/checkpoint.py, silence_failed_read_leftovers)."""
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top

  seen = []
  record = seen.append
  monkeypatch.setattr(sys, "unraisablehook", record)
  checkpoint.silence_failed_read_leftovers()
  checkpoint.silence_failed_read_leftovers()  # installed once, not stacked
  hook = sys.unraisablehook
  assert hook.previous is record

  async def read():
    pass

  coroutine = read()
  report = lambda obj, exc: types.SimpleNamespace(object=obj, exc_value=exc)  # noqa: E731
  hook(report(coroutine, Exception("Encountered error while reading array index")))
  hook(report(None, RuntimeError("Event loop is closed")))
  assert not seen
  other = report(None, ValueError("a real problem"))
  hook(other)
  assert seen == [other]
  coroutine.close()
