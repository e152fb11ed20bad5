"""Eval outputs: metrics.jsonl rows, TensorBoard scalars, accuracy-vs-step plots, results.md.

One row per (step, protocol, metric):
  {"step": 600, "protocol": "knn", "metric": "top1", "value": 0.91, "random_init": false}
Step 0 is the randomly initialised encoder of the same run (same seed), the baseline.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping

# The headline metric of each protocol: the column of the results table.
HEADLINE = {
  "linear": "top1",
  "knn": "top1",
  "fewshot": "10shot_top1",
  "zeroshot": "top1",
  "retrieval": "img_to_txt_top1",
  "language": "bits_per_byte",
}
# Protocols whose plot is not accuracy: (metrics plotted, y-axis label). Their values are
# shown as they are; accuracies (every other protocol's top1/top5 metrics) in %.
NON_ACCURACY_PLOTS = {"language": (("bits_per_byte", "bits_per_token"), "bits (lower is better)")}


def is_accuracy(metric: str) -> bool:
  return "top1" in metric or "top5" in metric


def format_value(metric: str, value: float) -> str:
  """Accuracies as percentages (91.2), anything else (bits per byte) as it is (1.234)."""
  return f"{100 * value:.1f}" if is_accuracy(metric) else f"{value:.3f}"


def plot_series(rows: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
  """{protocol: {metric: [(step, value), ...] by step}}: the lines of each protocol's plot.

  Accuracies in % for the classification protocols (few-shot in shot order: 1, 5, 10, 25, not
  10 before 5); the metrics of NON_ACCURACY_PLOTS as they are.
  """
  series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
  for r in rows:
    protocol, metric = r["protocol"], r["metric"]
    if protocol in NON_ACCURACY_PLOTS:
      plotted, scale = metric in NON_ACCURACY_PLOTS[protocol][0], 1.0
    else:
      plotted, scale = is_accuracy(metric) and not metric.endswith("_std"), 100.0
    if plotted:
      series[protocol].setdefault(metric, []).append((r["step"], scale * r["value"]))
  return {
    protocol: {
      name: sorted(by_metric[name])
      for name in sorted(by_metric, key=lambda name: (len(name.split("shot")[0]), name))
    }
    for protocol, by_metric in series.items()
  }


class EvalReport:
  """Appends eval rows under `<workdir>/eval/` and re-renders the table and plots."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.dir = os.path.join(workdir, "eval")
    os.makedirs(self.dir, exist_ok=True)
    self.jsonl = os.path.join(self.dir, "metrics.jsonl")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(logdir=os.path.join(self.dir, "tensorboard"), flush_secs=5)

  def rows(self) -> list[dict]:
    if not os.path.exists(self.jsonl):
      return []
    with open(self.jsonl) as f:
      return [json.loads(line) for line in f if line.strip()]

  def evaluated(self) -> set[tuple[int, str]]:
    """(step, protocol) pairs already written: a restarted eval job does not redo them."""
    return {(r["step"], r["protocol"]) for r in self.rows()}

  def add(self, step: int, protocol: str, metrics: Mapping[str, float]) -> None:
    with open(self.jsonl, "a") as f:
      for name, value in metrics.items():
        f.write(
          json.dumps(
            {
              "step": int(step),
              "protocol": protocol,
              "metric": name,
              "value": float(value),
              "random_init": step == 0,
            }
          )
          + "\n"
        )
    if self._tb is not None:
      for name, value in metrics.items():
        self._tb.add_scalar(f"eval/{protocol}/{name}", float(value), int(step))
      self._tb.flush()

  def table(self) -> str:
    """Markdown: one row per checkpoint, one column per protocol's headline metric (accuracies
    in %)."""
    cells: dict[int, dict[str, float]] = defaultdict(dict)
    for r in self.rows():
      if HEADLINE.get(r["protocol"]) == r["metric"]:
        cells[r["step"]][r["protocol"]] = r["value"]
    protocols = [p for p in HEADLINE if any(p in c for c in cells.values())]
    header = ["step"] + [f"{p} {HEADLINE[p]}" for p in protocols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in sorted(cells):
      label = "0 (random init)" if step == 0 else str(step)
      vals = [
        format_value(HEADLINE[p], cells[step][p]) if p in cells[step] else "-" for p in protocols
      ]
      lines.append("| " + " | ".join([label] + vals) + " |")
    return "\n".join(lines) + "\n"

  def write_table(self) -> str:
    text = self.table()
    with open(os.path.join(self.dir, "results.md"), "w") as f:
      f.write(text)
    return text

  def write_plots(self) -> list[str]:
    """One PNG per protocol: the lines of plot_series against the checkpoint step."""
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    paths = []
    for protocol, by_metric in plot_series(self.rows()).items():
      fig, ax = plt.subplots(figsize=(5, 3.5))
      for name, points in by_metric.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
      ax.set_xlabel("training step (0 = random init)")
      ax.set_ylabel(NON_ACCURACY_PLOTS.get(protocol, (None, "accuracy (%)"))[1])
      ax.set_title(f"{protocol} evaluation")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
      fig.tight_layout()
      path = os.path.join(self.dir, f"{protocol}.png")
      fig.savefig(path, dpi=100)
      plt.close(fig)
      paths.append(path)
    return paths

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
