r"""SimCLR on Fashion-MNIST for a fixed CPU budget: eval table, pretrained vs random init.

  python benchmarks/simclr_fashion_mnist.py --steps=1500 --workdir=/tmp/bench_simclr_fmnist

Pretrains `configs/simclr.py:fashion_mnist[,<backbone>]` for `--steps` steps (the whole
cosine schedule fits in that budget), then runs the eval job (linear probe, kNN, few-shot) on
every checkpoint and on the random-init encoder of the same run, and prints the table with
wall times. Needs the Debian package dataset-fashion-mnist (or JAXSSL_FASHION_MNIST_DIR).
Not a test: it prints figures.
"""

import os
import platform
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxssl import config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import metrics as metrics_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import train  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 1500, "Pretraining steps (the CPU budget).")
_BACKBONE = flags.DEFINE_string("backbone", "vit_mnist", "Backbone name (config_lib.BACKBONES).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Grain worker processes for augmentation.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_simclr_fashion_mnist", "Run directory.")


def main(_):
  metrics_lib.quiet_library_logs()
  config = config_lib.load_config_file(
    os.path.join(ROOT, f"configs/simclr.py:fashion_mnist,{_BACKBONE.value}")
  )
  config.total_epochs = None
  config.total_steps = _STEPS.value
  config.batch_size = _BATCH.value
  config.data.worker_count = _WORKERS.value
  config.checkpoint.every_steps = max(_STEPS.value // 3, 1)
  eval_config = config_lib.load_config_file(os.path.join(ROOT, "configs/eval.py:default"))

  t0 = time.perf_counter()
  logged = train.train(config, _WORKDIR.value)
  train_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  table = evaluate.evaluate(_WORKDIR.value, eval_config)
  eval_s = time.perf_counter() - t0

  print(
    f"\nSimCLR on Fashion-MNIST, backbone {_BACKBONE.value}, batch {_BATCH.value}, "
    f"{_STEPS.value} steps ({_STEPS.value * _BATCH.value / 60000:.1f} epochs)"
  )
  print(
    f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; pretraining "
    f"{train_s / 60:.1f} min ({logged.get('perf/examples_per_s', float('nan')):.0f} "
    f"examples/s at the end), eval job {eval_s / 60:.1f} min; "
    f"final loss {logged.get('train/loss', float('nan')):.3f}\n"
  )
  print("Test accuracy (%) of frozen features; step 0 = random init of the same encoder:\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
