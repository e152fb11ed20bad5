"""The real trainer CLI (`jaxssl.train.run`) with two test-only probes, for subprocess tests.

  python tests/train_worker.py --config=configs/simclr.py:test --workdir=W [trainer flags]

Environment:
  JAXSSL_TEST_STEP_DELAY   seconds to sleep before each step, so a test can signal or kill the
                           process mid-run at a predictable point.
  JAXSSL_TEST_START_SKEW   seconds process 1 sleeps after jax.distributed is up, before it
                           trains, and again before it builds the train step: the skew a slower
                           host and a slower compile put between processes.
  JAXSSL_TEST_RECORD_DIR   saves this process's first local batches (what its input pipeline
                           fed the step) to <dir>/process_<i>.npz, to check per-host shards.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxssl import train  # noqa: E402  pylint: disable=g-import-not-at-top

_RECORD_STEPS = 2


def _probe(global_batch):
  delay = float(os.environ.get("JAXSSL_TEST_STEP_DELAY", "0"))
  record_dir = os.environ.get("JAXSSL_TEST_RECORD_DIR")
  recorded = []

  def probed(local_batch, sharding):
    if delay:
      time.sleep(delay)
    if record_dir and len(recorded) < _RECORD_STEPS:
      import jax  # pylint: disable=g-import-not-at-top

      recorded.append({k: np.asarray(v) for k, v in local_batch.items()})
      if len(recorded) == _RECORD_STEPS:
        os.makedirs(record_dir, exist_ok=True)
        np.savez(
          os.path.join(record_dir, f"process_{jax.process_index()}.npz"),
          **{f"{k}_{i}": v for i, b in enumerate(recorded) for k, v in b.items()},
        )
    return global_batch(local_batch, sharding)

  return probed


def _skewed(fn):
  skew = float(os.environ.get("JAXSSL_TEST_START_SKEW", "0"))

  def skewed(*args, **kwargs):
    import jax  # pylint: disable=g-import-not-at-top

    if skew and jax.process_index() == 1:
      time.sleep(skew)
    return fn(*args, **kwargs)

  return skewed


if __name__ == "__main__":
  train.pipeline.global_batch = _probe(train.pipeline.global_batch)
  train.train = _skewed(train.train)
  train.step_lib.make_train_step = _skewed(train.step_lib.make_train_step)
  train.run()
