r"""The method zoo on Fashion-MNIST: every method for the same budget, eval table vs random init.

  python benchmarks/zoo_fashion_mnist.py --steps=500 --workdir=/tmp/zoo
  python benchmarks/zoo_fashion_mnist.py --methods=simclr --steps=1500   # one method, longer
  python benchmarks/zoo_fashion_mnist.py --methods=simclr,byol --steps=1500 --placement=device
  python benchmarks/zoo_fashion_mnist.py --methods=simclr,byol --placement=host --seed=1

For each method, pretrains `configs/<method>.py:fashion_mnist` for the same number of steps at
the same global batch (so the same number of epochs; the cosine schedules fit in that budget,
and schedules the preset sized for its own 10 epochs are rescaled: see `shrink_schedules`),
then runs the eval job (linear probe, kNN, 10-shot) on the final checkpoint and on the
random-init encoder of the same run (step 0). Prints one Markdown table and writes it to
`<workdir>/zoo.md` (`zoo_<placement>.md` with --placement), with each method's pretraining wall time (methods differ in cost per step:
multi-crop and EMA teachers cost more forwards). Restartable: a finished run or evaluation is
not redone. A method that fails is a row saying so, not a missing row.

Needs the Debian package dataset-fashion-mnist (or JAXSSL_FASHION_MNIST_DIR). Not a test: it
prints figures.
"""

import json
import os
import platform
import sys
import time
import traceback

from absl import app
from absl import flags
import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import evaluate
from jaxssl import methods
from jaxssl import metrics as metrics_lib
from jaxssl import train
from jaxssl.eval import report as report_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

ZOO = (
  "simclr",
  "moco_v3",
  "byol",
  "simsiam",
  "dino",
  "ibot",
  "vicreg",
  "barlow_twins",
  "mae",
  "ijepa",
  "data2vec",
)

_METHODS = flags.DEFINE_list("methods", list(ZOO), "Methods to run (configs/<m>.py).")
_STEPS = flags.DEFINE_integer("steps", 500, "Pretraining steps per method (the budget).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size for every method.")
_BACKBONE = flags.DEFINE_string(
  "backbone",
  "",
  "Backbone override (config_lib.BACKBONES); "
  "empty: each preset's own (vit_mnist for all zoo presets).",
)
_WORKERS = flags.DEFINE_integer("workers", 1, "Grain worker processes for augmentation.")
_EVAL = flags.DEFINE_string("eval_config", "default", "Preset of configs/eval.py.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/zoo_fashion_mnist", "Parent run directory.")
_PLACEMENT = flags.DEFINE_enum(
  "placement",
  "auto",
  ["auto", "host", "device"],
  "config.augment.placement of the methods that have it (jaxssl/data/device_augment.py); "
  "runs of 'host' or 'device' go to <workdir>/<method>_<placement>, so they never resume "
  "each other.",
)

_SEED = flags.DEFINE_integer(
  "seed",
  None,
  "config.seed of every run (default: the presets'); runs with a seed go to "
  "<workdir>/<method>[_<placement>]_seed<k>: the spread between seeds is the run-to-run noise.",
)


def _suffix() -> str:
  """The run-directory and table-name suffix of this invocation's placement and seed."""
  suffix = "" if _PLACEMENT.value == "auto" else f"_{_PLACEMENT.value}"
  return suffix if _SEED.value is None else f"{suffix}_seed{_SEED.value}"


FASHION_MNIST_TRAIN = 60_000


def shrink_schedules(config, preset_steps: int, steps: int, batch_size: int) -> None:
  """Rescales, in place, the schedules a preset sized for its own run length.

  Counted in epochs (DINO's teacher-temperature warmup, ...): scaled by budget/preset epochs,
  or a short budget spends most of its steps warming up. DINO's last-layer freeze is the
  exception: it guards the first steps, while the features are still near-identical across
  images and the prototypes would follow the student to flat logits (uniform collapse; DINO:
  "try increasing this value if the loss does not decrease"), so it stays a number of epochs,
  not a fraction of the run. It is `optim.frozen_until`, which this leaves alone like all of
  `optim` (the legacy `freeze_last_layer_epochs` is kept too).
  EMA teachers (`*_momentum` < 1 of a method section, data2vec's `anneal_steps`): the horizon
  1 / (1 - m) is scaled by budget/preset steps. Else a 300-step budget leaves an m = 0.996
  teacher at prod(m_t) ~ exp(-0.6) = 55% of its random init, a blend of random and trained
  weights that the eval job then measures (I-JEPA's teacher came out below its own init).
  """
  budget_epochs = steps * batch_size / FASHION_MNIST_TRAIN
  ratio = preset_steps / steps
  for name, section in config.items():
    if not isinstance(section, ml_collections.ConfigDict) or name in ("optim", "data"):
      continue
    for key, value in section.items():
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      if key == "freeze_last_layer_epochs":
        continue  # DINO's freeze: kept (see above)
      if key.endswith("_epochs") and config.total_epochs:
        section[key] = value * budget_epochs / config.total_epochs
      elif key.endswith("momentum") and key != "center_momentum" and 0 < value < 1:
        section[key] = 1.0 - min(0.5, (1.0 - value) * ratio)
      elif key == "anneal_steps" and value:
        section[key] = max(1, round(value / ratio))


def _config(method: str):
  arg = "fashion_mnist" + (f",{_BACKBONE.value}" if _BACKBONE.value else "")
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{method}.py:{arg}"))
  shrink_schedules(
    config, config_lib.total_steps(config, FASHION_MNIST_TRAIN), _STEPS.value, _BATCH.value
  )
  config.total_epochs = None
  config.total_examples = None
  config.total_steps = _STEPS.value
  config.batch_size = _BATCH.value
  config.data.worker_count = _WORKERS.value
  if "placement" in config.get("augment", {}):
    config.augment.placement = _PLACEMENT.value
  if _SEED.value is not None:
    config.seed = _SEED.value
  config.checkpoint.every_steps = _STEPS.value  # only the final checkpoint is evaluated
  # The presets warm up over 200 steps of a 10-epoch run; keep warm-up a fifth of a short one.
  config.optim.warmup_steps = min(config.optim.warmup_steps, _STEPS.value // 5)
  return config


def _headline(workdir: str) -> dict[int, dict[str, float]]:
  """{step: {protocol: headline accuracy}} from the eval job's metrics.jsonl."""
  cells: dict[int, dict[str, float]] = {}
  with open(os.path.join(workdir, "eval", "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if report_lib.HEADLINE.get(row["protocol"]) == row["metric"]:
        cells.setdefault(row["step"], {})[row["protocol"]] = row["value"]
  return cells


def _run(method: str, eval_config) -> dict:
  workdir = os.path.join(_WORKDIR.value, method + _suffix())
  timing_path = os.path.join(workdir, "zoo_timing.json")
  config = _config(method)
  if os.path.exists(timing_path):
    with open(timing_path) as f:
      timing = json.load(f)
  else:
    started_at = checkpoint.Checkpointer(workdir, read_only=True).latest_step() or 0
    t0 = time.perf_counter()
    train.train(config, workdir)
    reached = checkpoint.Checkpointer(workdir, read_only=True).latest_step()
    if reached != _STEPS.value:
      # train() returns normally after SIGTERM/SIGINT (it checkpointed): stop the whole zoo
      # instead of moving on to the next method; re-running continues where it stopped.
      raise SystemExit(
        f"{method} stopped at step {reached} of {_STEPS.value}; re-run the same "
        "command to continue."
      )
    # A resumed run's wall time covers only its last part: not a figure for the table.
    timing = {"train_s": time.perf_counter() - t0 if started_at == 0 else None}
  t0 = time.perf_counter()
  evaluate.evaluate(workdir, eval_config)
  timing.setdefault("eval_s", time.perf_counter() - t0)
  with open(timing_path, "w") as f:
    json.dump(timing, f)
  cells = _headline(workdir)
  return {
    **timing,
    "random": cells.get(0, {}),
    "trained": cells.get(_STEPS.value, {}),
    "final_loss": _final_loss(workdir),
  }


def _final_loss(workdir: str) -> float:
  """The last logged train/loss of the run (its metrics.jsonl survives restarts)."""
  loss = float("nan")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      loss = json.loads(line).get("train/loss", loss)
  return loss


def _cell(result: dict, protocol: str) -> str:
  before, after = result["random"].get(protocol), result["trained"].get(protocol)
  if before is None or after is None:
    return "-"
  return f"{100 * before:.1f} → **{100 * after:.1f}**"


def main(_):
  metrics_lib.quiet_library_logs()
  unknown = [m for m in _METHODS.value if m not in methods.available()]
  if unknown:
    raise app.UsageError(f"Unknown methods {unknown}; available: {methods.available()}.")
  eval_config = config_lib.load_config_file(os.path.join(ROOT, f"configs/eval.py:{_EVAL.value}"))
  # Image-only methods: the image-text protocols (zero-shot, retrieval) never run for them.
  protocols = [p for p in ("linear", "knn", "fewshot") if p in eval_config.protocols]
  header = (
    ["method"]
    + [f"{p} {report_lib.HEADLINE[p]}" for p in protocols]
    + ["pretrain min", "final loss"]
  )
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for method in _METHODS.value:
    try:
      result = _run(method, eval_config)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      lines.append(f"| {method} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |")
      continue
    lines.append(
      "| "
      + " | ".join(
        [method]
        + [_cell(result, p) for p in protocols]
        + [
          "-" if result.get("train_s") is None else f"{result['train_s'] / 60:.1f}",
          f"{result['final_loss']:.3f}",
        ]
      )
      + " |"
    )
    print("\n".join(lines), flush=True)
  table = "\n".join(lines) + "\n"
  summary = (
    f"Fashion-MNIST, {_STEPS.value} steps x batch {_BATCH.value} "
    f"({_STEPS.value * _BATCH.value / 60000:.1f} epochs) per method; test accuracy % of "
    f"frozen features, random init → pretrained; augment.placement={_PLACEMENT.value}; "
    f"seed {'of the presets' if _SEED.value is None else _SEED.value}; "
    f"{platform.machine()}, "
    f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}.\n\n"
  )
  os.makedirs(_WORKDIR.value, exist_ok=True)
  name = f"zoo{_suffix()}.md"
  with open(os.path.join(_WORKDIR.value, name), "w") as f:
    f.write(summary + table)
  print("\n" + summary + table)


if __name__ == "__main__":
  app.run(main)
