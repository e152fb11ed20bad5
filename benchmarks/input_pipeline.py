r"""Input pipeline cost with the view augmentation on the host vs in the train step (device).

  python benchmarks/input_pipeline.py                       # SimCLR ResNet-18, batch 32, 224px
  python benchmarks/input_pipeline.py --workers=0,2 --steps=3 --target_rate=7000

For `--placements` (config.augment.placement; jaxssl/data/device_augment.py) it reports

  * host CPU-seconds per example of the Grain pipeline (user + system time of this process and
    of its worker processes over the timed batches), with 0 and N workers, and its examples/s;
  * device milliseconds the augmentation adds to a step: the jitted `DeviceViews` alone on one
    global batch of uint8 crops (median), and its XLA FLOPs / bytes beside the step's;
  * the trainer's step (benchmarks/throughput.py's StepRunner, the same placement): what it
    consumes per second, and how many host cores each mode needs to feed it and to feed
    `--target_rate` examples/s (default 7,000: one H100 at ~40% of its bf16 peak on SimCLR
    ViT-S/16, issue 30's estimate).

Source images are random uint8 `--source_size`^2 RGB in memory (no JPEG decode, which both
modes pay on the host). Shares throughput.py's flags (batch_size, image_size, source_size,
dtype, steps, warmup, pipeline_batches, workers, malloc).
"""

import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import psutil  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # pylint: disable=g-import-not-at-top,wrong-import-position
from timing import median_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxssl.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.kernels.cpu import host_malloc  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
_CASE = flags.DEFINE_string("case", "simclr_resnet18", "A two-view case of throughput.CASES.")
_PLACEMENTS = flags.DEFINE_list("placements", ["host", "device"], "Placements to compare.")
_TARGET = flags.DEFINE_float("target_rate", 7000.0, "Examples/s an accelerator would consume.")
_OUT = flags.DEFINE_string("out_json", "/tmp/jaxssl_input_pipeline.json", "Where to write results.")


def _cpu_seconds(proc: psutil.Process) -> float:
  """User + system CPU seconds of `proc` and its live children (Grain workers)."""
  total = 0.0
  for p in [proc] + proc.children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def host_cost(source, transform, workers: int) -> tuple[float, float]:
  """(host CPU-seconds per example, examples/s) of the pipeline alone, in steady state."""
  batch, batches = FLAGS.batch_size, FLAGS.pipeline_batches
  dataset = pipeline.make_train_dataset(source, transform, global_batch_size=batch, seed=0)
  it = pipeline.make_train_iterator(dataset, worker_count=workers, prefetch_buffer_size=2)
  proc = psutil.Process()
  try:
    for _ in range(1 + 2 * workers):  # start-up and the prefetched batches, untimed
      next(it)
    cpu0, wall0 = _cpu_seconds(proc), time.perf_counter()
    for _ in range(batches):
      next(it)
    cpu, wall = _cpu_seconds(proc) - cpu0, time.perf_counter() - wall0
  finally:
    if hasattr(it, "close"):
      it.close()
  return cpu / (batches * batch), batches * batch / wall


def device_cost(runner) -> dict:
  """The jitted augmentation alone on the runner's global batch: ms, FLOPs, bytes."""
  key = jax.random.key(0)
  with jax.set_mesh(runner.mesh):

    def call():
      jax.block_until_ready(runner.augment(runner.batch, key))

    call()
    seconds = median_seconds(call, max(FLAGS.steps, 3))
  return dict(ms=1e3 * seconds, flops=runner.augment_flops, bytes=runner.augment_bytes)


def run(placement: str, source) -> dict:
  FLAGS.placement = placement
  config = throughput.build_config(_CASE.value)
  runner = throughput.StepRunner(config, source, throughput.synthetic_info())
  if (runner.device_views is not None) != (placement == "device"):
    raise ValueError(f"case {_CASE.value!r} has no device augmentation; use a two-view case.")
  step_s = runner.median_step_seconds(FLAGS.warmup, FLAGS.steps)
  host = {}
  for w in FLAGS.workers:
    cpu_per_example, rate = host_cost(source, runner.transform, int(w))
    host[w] = dict(cpu_s_per_example=cpu_per_example, examples_per_s=rate)
  step_rate = FLAGS.batch_size / step_s
  cpu = host[FLAGS.workers[0]]["cpu_s_per_example"]
  return dict(
    placement=placement,
    step_s=step_s,
    step_examples_per_s=step_rate,
    step_flops=runner.flops_per_step,
    step_bytes=runner.bytes_per_step,
    host=host,
    cores_for_step=step_rate * cpu,
    cores_for_target=_TARGET.value * cpu,
    device=device_cost(runner) if runner.device_views is not None else None,
    batch_bytes=int(sum(np.asarray(v).nbytes for v in jax.device_get(runner.batch).values())),
  )


def main(_):
  host_malloc.exec_with(FLAGS.malloc)
  info = throughput.machine()
  print(
    f"{info['date']}  {info['cpu']} x{info['cpu_count']} ({info['device']}), jax {info['jax']}, "
    f"malloc {info['malloc']}, load average {info['load_avg']}"
  )
  source = throughput.synthetic_source(4 * FLAGS.batch_size)
  rows = [run(p, source) for p in _PLACEMENTS.value]
  info["load_avg_end"] = os.getloadavg()
  workers = FLAGS.workers
  print(
    f"\n{_CASE.value}, batch {FLAGS.batch_size}, {FLAGS.image_size}px views from "
    f"{FLAGS.source_size}^2 sources, {FLAGS.dtype}; step median of {FLAGS.steps}\n"
  )
  print(
    "| placement | host CPU-ms / example | "
    + " | ".join(f"pipeline ex/s ({w} workers)" for w in workers)
    + " | batch MB | augmentation ms / step (GFLOP) | step s (GFLOP) | cores to feed the step | "
    f"cores for {_TARGET.value:,.0f} ex/s |"
  )
  print("|" + "---|" * (7 + len(workers)))
  for r in rows:
    d = r["device"]
    aug = f"{d['ms']:.0f} ({d['flops'] / 1e9:.1f})" if d else "0 (on the host)"
    print(
      f"| {r['placement']} | {1e3 * r['host'][workers[0]]['cpu_s_per_example']:.2f} | "
      + " | ".join(f"{r['host'][w]['examples_per_s']:.0f}" for w in workers)
      + f" | {r['batch_bytes'] / 1e6:.1f} | {aug} | {r['step_s']:.2f} "
      f"({r['step_flops'] / 1e9:.0f}) | {r['cores_for_step']:.2f} | {r['cores_for_target']:.0f} |"
    )
  if len(rows) == 2 and rows[0]["host"] and rows[1]["host"]:
    a, b = (rows[i]["host"][workers[0]]["cpu_s_per_example"] for i in (0, 1))
    print(f"\nhost CPU per example, {rows[0]['placement']} / {rows[1]['placement']}: {a / b:.1f}x")
  with open(_OUT.value, "w") as f:
    json.dump(
      dict(machine=info, case=_CASE.value, target_rate=_TARGET.value, rows=rows), f, indent=1
    )
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
