r"""CLIP and SigLIP on an image-caption set: zero-shot and retrieval vs chance.

  python benchmarks/clip_imagetext.py --steps=600 --workdir=/tmp/bench_clip
  python benchmarks/clip_imagetext.py --preset=emoji --steps=300 --workdir=/tmp/bench_emoji

Pretrains `configs/{clip,siglip}.py:<preset>` for `--steps` steps each (the whole schedule fits
in that budget), then runs the eval job on the final checkpoint and the random-init model of the
same run: zero-shot classification of the test split into the dataset's classes from prompts
built from the class names, image->text and text->image retrieval recall@1/5 among the test
pairs, and kNN / linear probe on the image tower. Prints one table per method with wall times.
Presets: `tuxpaint` (785 stamps, 16 categories; Debian tuxpaint-stamps-default) and `emoji`
(1,870 emoji, 9 groups; Debian fonts-noto-color-emoji and unicode-data). Not a test: it prints
figures.
"""

import collections
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
from jaxssl.data import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.eval import report as report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_PRESET = flags.DEFINE_enum(
  "preset", "tuxpaint", ["tuxpaint", "emoji"], "Config preset, i.e. the image-caption set."
)
_METHODS = flags.DEFINE_list("methods", ["clip", "siglip"], "Methods to run.")
_STEPS = flags.DEFINE_integer("steps", 600, "Pretraining steps per method (the CPU budget).")
_FIELDS = flags.DEFINE_list(
  "text_fields", ["keywords", "caption"], "Example fields composing the training text."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_clip_imagetext", "Parent run directory.")

_COLUMNS = [
  ("zeroshot", "top1"),
  ("zeroshot", "balanced_top1"),
  ("zeroshot", "chance_uniform"),
  ("zeroshot", "chance_majority"),
  ("retrieval", "img_to_txt_top1"),
  ("retrieval", "img_to_txt_top5"),
  ("retrieval", "txt_to_img_top1"),
  ("retrieval", "txt_to_img_top5"),
  ("knn", "top1"),
  ("linear", "top1"),
]


def _table(workdir: str) -> str:
  values = collections.defaultdict(dict)
  for r in report_lib.EvalReport(workdir, tensorboard=False).rows():
    values[r["step"]][(r["protocol"], r["metric"])] = r["value"]
  header = ["step"] + [f"{p} {m}" for p, m in _COLUMNS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for step in sorted(values):
    cells = [f"{100 * values[step][c]:.1f}" if c in values[step] else "-" for c in _COLUMNS]
    lines.append("| " + " | ".join(["0 (random init)" if step == 0 else str(step)] + cells) + " |")
  return "\n".join(lines)


def main(_):
  metrics_lib.quiet_library_logs()
  eval_config = config_lib.load_config_file(os.path.join(ROOT, "configs/eval.py:default"))
  with eval_config.unlocked():
    eval_config.protocols = ("zeroshot", "retrieval", "knn", "linear")
  reports = []
  for method in _METHODS.value:
    config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{method}.py:{_PRESET.value}"))
    config.total_steps = _STEPS.value
    config.checkpoint.every_steps = _STEPS.value
    config.image_text.text_fields = tuple(_FIELDS.value)
    workdir = os.path.join(_WORKDIR.value, method)
    t0 = time.perf_counter()
    logged = train.train(config, workdir)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate.evaluate(workdir, eval_config)
    eval_s = time.perf_counter() - t0
    info = datasets.get_info(config.data.name)
    reports.append(
      f"\n{method.upper()} on {info.name} ({info.split_sizes['train']} train / "
      f"{info.split_sizes['test']} test pairs, {info.num_classes} classes), text = "
      f"{' + '.join(_FIELDS.value)}, batch {config.batch_size}, {_STEPS.value} steps; "
      f"pretraining {train_s / 60:.1f} min, eval {eval_s / 60:.1f} min; final loss "
      f"{logged.get('train/loss', float('nan')):.3f}\n\n{_table(workdir)}"
    )
  print(
    f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores. Figures in % on the "
    "test split; step 0 = random init of the same run."
  )
  print("\n".join(reports))


if __name__ == "__main__":
  app.run(main)
