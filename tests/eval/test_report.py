"""EvalReport: the results table and the plotted lines, for accuracy and language protocols."""

import json
import os
import warnings

from jaxssl.eval import language
from jaxssl.eval import report as report_lib


def _report(tmp_path, rows):
  report = report_lib.EvalReport(str(tmp_path), tensorboard=False)
  for step, protocol, metrics in rows:
    report.add(step, protocol, metrics)
  return report


def test_jsonl_rows_mark_step_zero_as_the_random_init(tmp_path):
  report = _report(tmp_path, [(0, "knn", {"top1": 0.1}), (50, "knn", {"top1": 0.8})])
  with open(os.path.join(tmp_path, "eval", "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert rows == [
    {"step": 0, "protocol": "knn", "metric": "top1", "value": 0.1, "random_init": True},
    {"step": 50, "protocol": "knn", "metric": "top1", "value": 0.8, "random_init": False},
  ]
  assert report.evaluated() == {(0, "knn"), (50, "knn")}


def test_table_shows_accuracies_in_percent_and_bits_per_byte_as_they_are(tmp_path):
  report = _report(
    tmp_path,
    [
      (0, "linear", {"top1": 0.1234, "top5": 0.5}),
      (0, language.PROTOCOL, {"nll": 3.0, "bits_per_byte": 2.5, "perplexity": 20.1}),
      (60, language.PROTOCOL, {"nll": 1.5, "bits_per_byte": 1.23456, "perplexity": 4.48}),
    ],
  )
  assert report.table().splitlines() == [
    "| step | linear top1 | language bits_per_byte |",
    "|---|---|---|",
    "| 0 (random init) | 12.3 | 2.500 |",
    "| 60 | - | 1.235 |",
  ]


def test_plot_series_puts_shots_in_order_and_skips_spreads(tmp_path):
  metrics = {
    "25shot_top1": 0.9,
    "10shot_top1": 0.8,
    "5shot_top1": 0.7,
    "1shot_top1": 0.5,
    "1shot_top1_std": 0.05,
    "num_classes": 10.0,
  }
  report = _report(tmp_path, [(20, "fewshot", metrics), (0, "fewshot", metrics)])
  series = report_lib.plot_series(report.rows())
  assert list(series) == ["fewshot"]
  assert list(series["fewshot"]) == ["1shot_top1", "5shot_top1", "10shot_top1", "25shot_top1"]
  assert series["fewshot"]["10shot_top1"] == [(0, 80.0), (20, 80.0)]


def test_a_language_run_plots_its_bits_not_an_empty_accuracy_plot(tmp_path):
  report = _report(
    tmp_path,
    [
      (6, language.PROTOCOL, {"nll": 1.5, "bits_per_byte": 1.2, "bits_per_token": 2.1}),
      (0, language.PROTOCOL, {"nll": 3.0, "bits_per_byte": 2.5, "bits_per_token": 4.3}),
    ],
  )
  assert report_lib.plot_series(report.rows()) == {
    language.PROTOCOL: {
      "bits_per_byte": [(0, 2.5), (6, 1.2)],
      "bits_per_token": [(0, 4.3), (6, 2.1)],
    }
  }
  with warnings.catch_warnings():
    # matplotlib warns "No artists with labels found" when a plot has no lines.
    warnings.simplefilter("error")
    paths = report.write_plots()
  assert paths == [os.path.join(tmp_path, "eval", f"{language.PROTOCOL}.png")]
  with open(paths[0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
