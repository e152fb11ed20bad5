r"""The separate eval job: frozen-feature linear probe, kNN and few-shot for each checkpoint.

  python -m jaxssl.evaluate --workdir=/tmp/simclr [--watch] [--config=configs/eval.py:fast]

Reads `<workdir>/config.json` to rebuild the method, restores only {'params', 'aux'} of each
committed checkpoint onto this job's own devices, extracts features for the eval dataset's
train and test splits, runs the protocols and writes `<workdir>/eval/` (metrics.jsonl,
TensorBoard, one PNG per protocol, results.md). With --watch it follows a live run: each new
checkpoint once, never a half-written one (Orbax commits by rename), tolerating checkpoints the
trainer deletes, and exits once the run's final step is evaluated. Re-running skips what is done.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import errors
from jaxssl import metrics as metrics_lib
from jaxssl.data import datasets
from jaxssl.eval import features as features_lib
from jaxssl.eval import fewshot
from jaxssl.eval import knn
from jaxssl.eval import language
from jaxssl.eval import linear
from jaxssl.eval import report as report_lib
from jaxssl.eval import zeroshot

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval.py"
)


def _define_flags() -> None:
  # Defined when the entry point runs, not at import, so train and evaluate import together.
  config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Eval config file[:preset].", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "The training run's workdir.")
  flags.DEFINE_bool("watch", False, "Follow a live run until its final step.")


PROTOCOLS = {
  "linear": lambda tr, te, n, c: linear.linear_probe(*tr, *te, num_classes=n, **c.linear),
  "knn": lambda tr, te, n, c: knn.knn_classify(*tr, *te, num_classes=n, **c.knn),
  "fewshot": lambda tr, te, n, c: fewshot.fewshot_ridge(*tr, *te, num_classes=n, **c.fewshot),
}


def _check_protocols(eval_config) -> None:
  known = set(PROTOCOLS) | set(zeroshot.PROTOCOLS) | {language.PROTOCOL}
  unknown = set(eval_config.protocols) - known
  if unknown:
    raise errors.ConfigError(
      f"Unknown eval protocols {sorted(unknown)}; choose from {sorted(known)} (--config.protocols)."
    )


class EvalJob:
  """Evaluates the checkpoints of one workdir; state lives in `<workdir>/eval/metrics.jsonl`."""

  def __init__(self, workdir: str, eval_config: ml_collections.ConfigDict):
    _check_protocols(eval_config)
    self.workdir, self.eval_config = workdir, eval_config
    self.encoder = features_lib.Encoder(workdir)
    train_config = self.encoder.config
    self.data_dir = (
      eval_config.data_dir or train_config.data.data_dir or datasets.default_data_dir()
    )
    name = eval_config.dataset or train_config.data.name
    self.info = datasets.get_info(name, self.data_dir)
    self.sources = {
      split: datasets.get_source(name, split, self.data_dir)
      for split in (eval_config.train_split, eval_config.test_split)
    }
    train_info = datasets.get_info(train_config.data.name, self.data_dir)
    self.final_step = config_lib.total_steps(
      train_config, train_info.split_sizes[train_config.data.split]
    )
    self.report = report_lib.EvalReport(workdir)
    # Image-text protocols (zero-shot, retrieval) only apply to runs with a text tower.
    self.protocols = [
      p
      for p in eval_config.protocols
      if p not in zeroshot.PROTOCOLS or hasattr(self.encoder.method, "embed_texts")
    ]
    if language.is_language_method(self.encoder.method):
      # Language-model runs: held-out perplexity / bits per byte (jaxssl/eval/language.py).
      self.protocols = [language.PROTOCOL]
    self.eval_name = name

  def _pending(self, step: int) -> list[str]:
    done = self.report.evaluated()
    return [p for p in self.protocols if (step, p) not in done]

  def evaluate_variables(self, step: int, variables) -> None:
    pending = self._pending(step)
    if language.PROTOCOL in pending:
      test_split = self.eval_config.test_split
      result = language.evaluate_lm(
        self.encoder.method,
        variables,
        self.sources[test_split],
        self.info,
        split=test_split,
        train_source=self.sources[self.eval_config.train_split],
        batch_size=self.eval_config.batch_size,
      )
      self.report.add(step, language.PROTOCOL, result)
      logging.info("step %d %s: %s", step, language.PROTOCOL, result)
      pending.remove(language.PROTOCOL)
    image_text = [p for p in pending if p in zeroshot.PROTOCOLS]
    if image_text:
      results = zeroshot.evaluate_image_text(
        self.encoder,
        variables,
        self.sources[self.eval_config.test_split],
        self.info,
        class_names=zeroshot.class_names(self.eval_name, self.data_dir),
        protocols=image_text,
        batch_size=self.eval_config.batch_size,
        **self.eval_config.zeroshot,
      )
      for protocol, result in results.items():
        self.report.add(step, protocol, result)
        logging.info("step %d %s: %s", step, protocol, {k: round(v, 4) for k, v in result.items()})
    pending = [p for p in pending if p in PROTOCOLS]
    if not pending:
      return
    bs = self.eval_config.batch_size
    split_features = [
      self.encoder.features(variables, self.sources[s], self.info, batch_size=bs)
      for s in (self.eval_config.train_split, self.eval_config.test_split)
    ]
    for protocol in pending:
      t0 = time.perf_counter()
      result = PROTOCOLS[protocol](
        split_features[0], split_features[1], self.info.num_classes, self.eval_config
      )
      self.report.add(step, protocol, result)
      logging.info(
        "step %d %s (%.1fs): %s",
        step,
        protocol,
        time.perf_counter() - t0,
        {k: round(v, 4) for k, v in result.items()},
      )

  def run(self, *, watch: bool) -> str:
    """Evaluates every committed checkpoint not yet evaluated; with `watch`, keeps polling
    until the final step is done. Returns the Markdown results table."""
    if self.eval_config.random_init and self._pending(0):
      self.evaluate_variables(0, self.encoder.random_init())
    ckpt_dir = checkpoint.checkpoint_dir(self.workdir)
    while True:
      steps = []
      if os.path.isdir(ckpt_dir):
        checkpointer = checkpoint.Checkpointer(self.workdir, read_only=True)
        steps = checkpointer.all_steps()
        for step in steps:
          if not self._pending(step):
            continue
          checkpoint.silence_failed_read_leftovers()
          try:
            variables = self.encoder.restore(checkpointer, step)
          except Exception as e:  # pylint: disable=broad-except
            if step not in checkpointer.all_steps():
              logging.warning("Checkpoint %d was deleted before it was read; skipped.", step)
              continue
            reason = checkpoint.failure_summary(e)
            raise errors.CheckpointError(
              f"Checkpoint {step} in {ckpt_dir} could not be read ({reason}); the trainer "
              "sets unreadable steps aside when it resumes, or move it away by hand."
            ) from None
          self.evaluate_variables(step, variables)
        checkpointer.close()
      finished = self.final_step in steps and not self._pending(self.final_step)
      if not watch or finished:
        break
      time.sleep(self.eval_config.poll_seconds)
    if not steps and not watch:
      logging.warning(
        "No checkpoints in %s yet; only the random-init baseline was evaluated.", ckpt_dir
      )
    self.report.write_plots()
    table = self.report.write_table()
    self.report.close()
    return table


def _wait_for_run(workdir: str, poll_seconds: float) -> None:
  """--watch may start before the trainer: wait until it has written its run files."""
  needed = [os.path.join(workdir, f) for f in ("config.json", "input_spec.json")]
  while not all(os.path.exists(p) for p in needed):
    logging.log_every_n_seconds(logging.INFO, "Waiting for a training run in %s ...", 60, workdir)
    time.sleep(poll_seconds)


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict, *, watch: bool = False) -> str:
  """Runs the eval job on `workdir`; returns the Markdown results table."""
  if watch:
    _wait_for_run(workdir, eval_config.poll_seconds)
  return EvalJob(workdir, eval_config).run(watch=watch)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  if not FLAGS.workdir:
    raise app.UsageError("--workdir (a training run's workdir) is required.")
  table = evaluate(FLAGS.workdir, FLAGS.config, watch=FLAGS.watch)
  print(f"\nEval results for {FLAGS.workdir} (accuracy %, step 0 = random init):\n")
  print(table)


def run() -> None:
  """Console script `jaxssl-eval`."""
  config_lib.run_app(main, _define_flags)


if __name__ == "__main__":
  run()
