"""Checkpointer retention: the newest N steps plus every K-th, through Orbax preservation
policies; a read-only manager creates nothing."""
import os

import jax.numpy as jnp
import pytest

from jaxssl import checkpoint


@pytest.mark.parametrize("max_to_keep, keep_every, kept", [
    (2, 4, [4, 8, 9]),
    (3, None, [7, 8, 9]),
    (None, None, list(range(1, 10))),
])
def test_keeps_the_last_n_and_every_kth_step(tmp_path, max_to_keep, keep_every, kept):
  writer = checkpoint.Checkpointer(str(tmp_path), max_to_keep=max_to_keep,
                                   keep_every=keep_every)
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
