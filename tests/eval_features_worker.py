"""One process of a multi-process eval-job feature extraction (for tests/test_multihost.py).

  launch/local_multiprocess.sh 2 2 python tests/eval_features_worker.py WORKDIR STEP DATA_DIR OUT

Restores checkpoint STEP of WORKDIR with the eval job's Encoder on this job's mesh, extracts
features of the first 40 digits test images (batch 16: the last global batch is padded), and
process 0 writes them to OUT (.npz). Process 1 starts extracting 35 s after process 0, more than
gloo's 30 s: it passes only through the encoder's compile-then-barrier.
"""

import os
import sys
import time

from absl import flags as absl_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import parallel

NUM_EXAMPLES, BATCH_SIZE = 40, 16


def main(argv):
  positional = [a for a in argv if not a.startswith("--")]
  flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--"))
  workdir, step, data_dir, out = positional
  absl_flags.FLAGS.mark_as_parsed()  # as under absl.app.run: Orbax reads its flags
  parallel.initialize_distributed(
    flags["coordinator_address"], int(flags["num_processes"]), int(flags["process_id"])
  )
  import jax
  from jaxssl import checkpoint
  from jaxssl.data import datasets
  from jaxssl.eval import features as features_lib

  encoder = features_lib.Encoder(workdir)
  variables = encoder.restore(checkpoint.Checkpointer(workdir, read_only=True), int(step))
  source = datasets.get_source("digits", f"test[:{NUM_EXAMPLES}]", data_dir)
  if jax.process_index() == 1:  # a host that reaches the first batch 35 s late (gloo: 30 s)
    time.sleep(35)
  feats, labels = encoder.features(
    variables, source, datasets.get_info("digits", data_dir), batch_size=BATCH_SIZE
  )
  if jax.process_index() == 0:
    np.savez(out, features=feats, labels=labels, process_count=jax.process_count())


if __name__ == "__main__":
  main(sys.argv[1:])
