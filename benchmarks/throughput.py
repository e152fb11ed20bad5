r"""Training throughput, FLOPs and MFU of the real train step; Grain pipeline speed vs the step.

  python benchmarks/throughput.py                      # defaults: batch 32 at 224x224
  python benchmarks/throughput.py --image_size=112 --batch_size=16 --steps=8  # quick CPU run

For each case (SimCLR + ResNet-18, SimCLR + ViT-S/16, MAE + ViT-S/16; paper heads/decoder of the
`imagenet` presets) it builds the trainer's own state and jitted step (jaxssl.state/step), then

  * steps/s and examples/s: median of `--steps` timed steps after `--warmup` steps, on one
    fixed device batch (made by the method's real augmentation), so the step alone is timed;
  * FLOPs per step: XLA's cost analysis of the compiled step (`lower().compile()`), i.e. what
    the compiler will execute, forward + backward + optimizer (LAPACK custom calls such as the
    RankMe SVD are not counted);
  * MFU: achieved FLOP/s over the peak FLOP/s of a large jitted matmul in the same dtype
    (bfloat16: bf16 operands accumulated in float32, the form the model's matmuls take and
    the only one XLA:CPU runs on AVX512-BF16 / AMX; jaxssl/kernels/cpu/matmul.py), measured in the same run on the same device just before and after the timed steps (not a
    datasheet number);
  * the Grain pipeline alone (examples/s with 0 and 2 worker processes) on an in-memory source
    of random uint8 `--source_size`^2 RGB images (no JPEG decoding: add that on real ImageNet),
    and the fraction of wall time a pipeline-fed loop spends waiting in next(iterator).

Runs under the host allocator --malloc (default auto: tcmalloc where installed, re-executing
itself; jaxssl/kernels/cpu/host_malloc.py). Prints a table and writes JSON (`--json`). Timings on a machine
shared with other jobs are noisy: the JSON records the date, machine and load average next to
every figure.
"""

import functools
import datetime
import json
import os
import platform
import sys
import time

# scipy's OpenBLAS (JAX's LAPACK on CPU, e.g. RankMe's SVD) spins one thread per core; on a
# loaded machine that makes a 1 ms SVD take 100s of ms. One thread is faster here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from jaxssl import config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.kernels.cpu import host_malloc  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import kernels  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import methods  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import optim  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.data import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.data import device_augment  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.kernels.cpu.matmul import LOW_PRECISION  # pylint: disable=g-import-not-at-top,wrong-import-position
from timing import median_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

CASES = {  # name: (config file, backbone section)
  "simclr_resnet18": ("simclr", dict(name="resnet", depth=18, stem="imagenet", width=64)),
  "simclr_vit_s16": ("simclr", dict(name="vit", variant="S/16", pool="gap")),
  "mae_vit_s16": ("mae", dict(name="vit", variant="S/16", pool="gap")),
  # Accelerators (benchmarks/accelerator_check.sh); too slow for a CPU's default run.
  "mae_vit_b16": ("mae", dict(name="vit", variant="B/16", pool="gap")),
}
CPU_CASES = ["simclr_resnet18", "simclr_vit_s16", "mae_vit_s16"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_CASES = flags.DEFINE_list("cases", CPU_CASES, f"Subset of {list(CASES)}.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size (examples per step).")
_IMAGE = flags.DEFINE_integer("image_size", 224, "Model input side (multiple of 16).")
_SOURCE = flags.DEFINE_integer("source_size", 256, "Side of the source images the crops come from.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "model.dtype.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Side of the square peak-FLOP/s matmul.")
_PIPE_BATCHES = flags.DEFINE_integer("pipeline_batches", 8, "Batches timed per pipeline run.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Grain worker counts to time.")
_LOOP_WORKERS = flags.DEFINE_integer("loop_workers", 2, "Workers of the pipeline-fed loop.")
_MALLOC = flags.DEFINE_enum(
  "malloc",
  "auto",
  ["auto", "glibc", "tcmalloc"],
  "Host allocator; auto: tcmalloc where installed "
  "(jaxssl/kernels/cpu/host_malloc.py: glibc's maps and unmaps XLA:CPU's per-step "
  "buffers). The script re-executes itself under it.",
)
_PLACEMENT = flags.DEFINE_enum(
  "placement",
  "auto",
  ["auto", "host", "device"],
  "config.augment.placement of the two-view cases (jaxssl/data/device_augment.py); auto: "
  "as the trainer, device on GPU/TPU, host on CPU.",
)
_JSON = flags.DEFINE_string("json", "/tmp/jaxssl_throughput.json", "Where to write results.")


def machine() -> dict:
  return dict(
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    host=platform.node(),
    cpu=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    load_avg=os.getloadavg(),
    device=str(jax.devices()[0].device_kind),
    num_devices=jax.device_count(),
    jax=jax.__version__,
    openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
    malloc=host_malloc.loaded(),
  )


def matmul_peak(n: int, dtype) -> float:
  """FLOP/s of a jitted [n, n] @ [n, n] in `dtype`: the best of 5 after one warm-up (a peak is
  what the hardware can deliver; load from other jobs only ever lowers it)."""
  return gemm_rate((n, n), (n, n), dtype, repeats=1)


def gemm_rate(lhs_shape, rhs_shape, dtype, repeats: int = 3) -> float:
  """FLOP/s of one jitted (batched) matmul of these shapes: the best of 5 medians of `repeats`
  calls each, after one warm-up. Low-precision operands accumulate in float32."""
  a = jax.random.normal(jax.random.PRNGKey(0), lhs_shape, dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), rhs_shape, dtype)
  accumulate = jnp.float32 if jnp.dtype(dtype) in LOW_PRECISION else None
  matmul = jax.jit(functools.partial(jnp.matmul, preferred_element_type=accumulate))
  matmul(a, b).block_until_ready()
  best = min(median_seconds(lambda: matmul(a, b).block_until_ready(), repeats) for _ in range(5))
  return 2 * np.prod(lhs_shape) * rhs_shape[-1] / best


def mae_gemm_shapes(batch: int, image_size: int) -> dict[str, tuple[tuple, tuple]]:
  """The forward matmuls of the ViT-S/16 MAE step (encoder on the 25% visible tokens, 512-wide
  decoder on all of them), as (lhs, rhs) shapes: what the step's FLOPs are made of."""
  tokens = (image_size // 16) ** 2
  enc, dec = batch * tokens // 4, batch * tokens  # rows: visible tokens / all tokens
  return {
    "enc qkv [T,384]x[384,1152]": ((enc, 384), (384, 1152)),
    "enc mlp [T,384]x[384,1536]": ((enc, 384), (384, 1536)),
    "enc mlp [T,1536]x[1536,384]": ((enc, 1536), (1536, 384)),
    f"enc attn QK^T [B*6,{tokens // 4},64]x[64,{tokens // 4}]": (
      (batch * 6, tokens // 4, 64),
      (batch * 6, 64, tokens // 4),
    ),
    "dec mlp [T,512]x[512,2048]": ((dec, 512), (512, 2048)),
    "dec mlp [T,2048]x[2048,512]": ((dec, 2048), (2048, 512)),
    f"dec attn QK^T [B*16,{tokens},32]x[32,{tokens}]": (
      (batch * 16, tokens, 32),
      (batch * 16, 32, tokens),
    ),
  }


def build_config(case: str) -> ml_collections.ConfigDict:
  method_name, model = CASES[case]
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{method_name}.py:imagenet"))
  config.batch_size = _BATCH.value
  config.data.image_size = _IMAGE.value
  config.model = ml_collections.ConfigDict({**model, "dtype": _DTYPE.value})
  config.total_epochs = None
  config.total_steps = 1000
  if "placement" in config.get("augment", {}):
    config.augment.placement = _PLACEMENT.value
  return config


def synthetic_source(n: int):
  rng = np.random.default_rng(0)
  side = _SOURCE.value
  return [
    {"image": rng.integers(0, 256, (side, side, 3), np.uint8), "label": np.int32(0)}
    for _ in range(n)
  ]


def synthetic_info() -> datasets.DatasetInfo:
  return datasets.DatasetInfo(
    name="synthetic",
    num_classes=1000,
    image_shape=(_SOURCE.value, _SOURCE.value, 3),
    split_sizes={"train": 1},
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
  )


def pipeline_rate(source, transform, workers: int) -> float:
  """Examples/s of the training pipeline alone, in steady state.

  Worker start-up and the batches the workers prefetched meanwhile (2 per worker) are drawn
  before the clock starts; after that the loop drains faster than workers produce, so the
  timed batches measure production.
  """
  dataset = pipeline.make_train_dataset(source, transform, global_batch_size=_BATCH.value, seed=0)
  it = pipeline.make_train_iterator(dataset, worker_count=workers, prefetch_buffer_size=2)
  try:
    for _ in range(1 + 2 * workers):
      next(it)
    start = time.perf_counter()
    for _ in range(_PIPE_BATCHES.value):
      next(it)
    return _PIPE_BATCHES.value * _BATCH.value / (time.perf_counter() - start)
  finally:
    if hasattr(it, "close"):
      it.close()


def compiled_cost(compiled) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of a compiled program, from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))), float(cost.get("bytes accessed", float("nan")))


class StepRunner:
  """The trainer's own state and jitted step (jaxssl.state / jaxssl.step) for `config`, with
  one real augmented batch placed on the device once, so the step alone can be timed."""

  def __init__(self, config, source, info):
    self.mesh = parallel.make_mesh(config.mesh)
    # The trainer's kernels: picked from the mesh's platform (jaxssl.kernels).
    self.method = methods.build(config, kernels.for_mesh(self.mesh))
    # The trainer's placement of the augmentation: crops on the host, the rest maybe in the step.
    self.transform, self.device_views = device_augment.place(
      self.method.train_transform(info), kernels.platform(self.mesh)
    )
    transform = self.transform
    self.batch_size = config.batch_size
    rules = parallel.get_rules(config.sharding_rules)
    self.batch_sharding = parallel.batch_sharding(self.mesh, rules)
    first = next(
      iter(
        pipeline.make_train_dataset(source, transform, global_batch_size=config.batch_size, seed=0)
      )
    )
    self.batch = self.device_batch(first)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.batch.items()}
    if self.device_views is not None:
      spec = self.device_views.output_spec(spec)
    tx = optim.make_optimizer(
      config.optim, optim.make_schedule(config.optim, config.batch_size, 1000)
    )
    with jax.set_mesh(self.mesh):
      self.state, shardings = state_lib.create_train_state(
        self.method, tx, spec, self.mesh, rules, 0
      )
      self.train_step = step_lib.make_train_step(
        self.method, tx, shardings, self.mesh, rules, device_views=self.device_views
      )
      start = time.perf_counter()
      compiled = self.train_step.lower(self.state, self.batch).compile()
      self.compile_s = time.perf_counter() - start
    # Bytes XLA expects the step to move: flops / bytes is its arithmetic intensity.
    self.flops_per_step, self.bytes_per_step = compiled_cost(compiled)
    # The step's share spent augmenting (device placement): the jitted DeviceViews alone, on
    # the same global batch, so its cost can be reported beside the model's.
    self.augment = None
    self.augment_flops = self.augment_bytes = 0.0
    if self.device_views is not None:
      self.augment = jax.jit(self.device_views)
      with jax.set_mesh(self.mesh):
        augment = self.augment.lower(self.batch, jax.random.key(0)).compile()
      self.augment_flops, self.augment_bytes = compiled_cost(augment)

  def device_batch(self, local):
    return pipeline.global_batch({k: local[k] for k in self.method.batch_keys}, self.batch_sharding)

  def step(self, batch=None):
    with jax.set_mesh(self.mesh):
      self.state, metrics = self.train_step(self.state, self.batch if batch is None else batch)
    jax.block_until_ready(metrics)

  def median_step_seconds(self, warmup: int, steps: int) -> float:
    for _ in range(warmup):
      self.step()
    return median_seconds(self.step, steps)

  def fed_loop(self, dataset, workers: int, steps: int, warmup: int) -> tuple[float, float]:
    """(wall seconds per step, fraction waiting in next()) of a pipeline-fed loop.

    `warmup` fed steps (at least one: worker start-up) run untimed first: at start-up every
    worker fills its prefetch buffer at once, competing with the first steps for the cores,
    which a long run never sees again.
    """
    it = pipeline.make_train_iterator(dataset, worker_count=workers)
    waited = 0.0
    try:
      for _ in range(max(warmup, 1)):
        self.step(self.device_batch(next(it)))
      start = time.perf_counter()
      for _ in range(steps):
        t0 = time.perf_counter()
        local = next(it)
        waited += time.perf_counter() - t0
        self.step(self.device_batch(local))
      total = time.perf_counter() - start
    finally:
      if hasattr(it, "close"):
        it.close()
    return total / steps, waited / total


def run_case(case: str) -> dict:
  source = synthetic_source(4 * _BATCH.value)
  runner = StepRunner(build_config(case), source, synthetic_info())
  # The peak is measured right before and right after the timed steps and the higher taken:
  # on a shared machine the load drifts, and a peak from minutes earlier can be far off.
  peak_before = matmul_peak(_MATMUL.value, jnp.dtype(_DTYPE.value))
  step_s = runner.median_step_seconds(_WARMUP.value, _STEPS.value)
  peak = max(peak_before, matmul_peak(_MATMUL.value, jnp.dtype(_DTYPE.value)))
  loop_s, wait_fraction = runner.fed_loop(
    pipeline.make_train_dataset(source, runner.transform, global_batch_size=_BATCH.value, seed=1),
    _LOOP_WORKERS.value,
    _STEPS.value,
    _WARMUP.value,
  )
  step_rate = _BATCH.value / step_s
  pipe = {w: pipeline_rate(source, runner.transform, int(w)) for w in _WORKERS.value}
  flops = runner.flops_per_step
  return dict(
    case=case,
    placement="device" if runner.device_views else "host",
    batch_size=_BATCH.value,
    image_size=_IMAGE.value,
    dtype=_DTYPE.value,
    params=state_lib.count_params(runner.state.params),
    compile_s=runner.compile_s,
    step_s=step_s,
    steps_per_s=1 / step_s,
    examples_per_s=step_rate,
    flops_per_step=flops,
    augment_flops_per_step=runner.augment_flops,
    achieved_flops_per_s=flops / step_s,
    bytes_per_step=runner.bytes_per_step,
    flops_per_byte=flops / runner.bytes_per_step,
    peak_flops_per_s=peak,
    mfu=flops / step_s / peak,
    pipeline_examples_per_s=pipe,
    pipeline_over_step={w: r / step_rate for w, r in pipe.items()},
    loop_workers=_LOOP_WORKERS.value,
    loop_s_per_step=loop_s,
    data_wait_fraction=wait_fraction,
  )


def main(_):
  host_malloc.exec_with(_MALLOC.value)  # before anything allocates: the process is replaced
  info = machine()
  print(
    f"{info['date']}  {info['cpu']} x{info['cpu_count']} ({info['device']}), jax "
    f"{info['jax']}, malloc {info['malloc']}, load average {info['load_avg']}"
  )
  results = []
  for case in _CASES.value:
    if case not in CASES:
      raise ValueError(f"Unknown case {case!r}; choose from {list(CASES)}.")
    results.append(run_case(case))
    print(
      f"  done {case}: {results[-1]['step_s']:.2f} s/step, peak "
      f"{results[-1]['peak_flops_per_s'] / 1e9:.1f} GFLOP/s",
      flush=True,
    )
  info["load_avg_end"] = os.getloadavg()

  workers = list(_WORKERS.value)
  print(
    f"\nbatch {_BATCH.value}, {_IMAGE.value}x{_IMAGE.value}, {_DTYPE.value}; median of "
    f"{_STEPS.value} steps; pipeline on random {_SOURCE.value}^2 uint8 sources\n"
  )
  header = (
    "| case | placement | params | s/step | steps/s | examples/s | GFLOP/step | of which "
    "augmentation | peak GFLOP/s | MFU | "
    + " | ".join(f"pipeline ex/s ({w} workers)" for w in workers)
    + f" | fed s/step ({_LOOP_WORKERS.value} workers) | data wait |"
  )
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for r in results:
    pipe = " | ".join(
      f"{r['pipeline_examples_per_s'][w]:.1f} ({r['pipeline_over_step'][w]:.1f}x)" for w in workers
    )
    print(
      f"| {r['case']} | {r['placement']} | {r['params'] / 1e6:.1f}M | {r['step_s']:.2f} | "
      f"{r['steps_per_s']:.2f} | {r['examples_per_s']:.1f} | "
      f"{r['flops_per_step'] / 1e9:.0f} | {r['augment_flops_per_step'] / 1e9:.2f} | "
      f"{r['peak_flops_per_s'] / 1e9:.1f} | "
      f"{100 * r['mfu']:.0f}% | {pipe} | {r['loop_s_per_step']:.2f} | "
      f"{100 * r['data_wait_fraction']:.0f}% |"
    )
  print("\n(pipeline ex/s: Grain alone; in brackets its rate over the step's consumption)")
  gemms = {}
  if "mae_vit_s16" in _CASES.value:
    # What bounds the MAE step's MFU: the same matmuls alone, at the step's own shapes.
    dtype = jnp.dtype(_DTYPE.value)
    peak = matmul_peak(_MATMUL.value, dtype)
    print(
      f"\nMAE ViT-S/16 matmuls alone (batch {_BATCH.value}, {_DTYPE.value}; peak "
      f"{_MATMUL.value}^2 = {peak / 1e9:.1f} GFLOP/s)\n\n| matmul | GFLOP/s | of peak |\n|---|---|---|"
    )
    for name, (lhs, rhs) in mae_gemm_shapes(_BATCH.value, _IMAGE.value).items():
      rate = gemm_rate(lhs, rhs, dtype)
      gemms[name] = dict(flops_per_s=rate, of_peak=rate / peak)
      print(f"| {name} | {rate / 1e9:.1f} | {100 * rate / peak:.0f}% |")
  with open(_JSON.value, "w") as f:
    json.dump(
      dict(
        machine=info,
        matmul_size=_MATMUL.value,
        source_size=_SOURCE.value,
        results=results,
        mae_gemms=gemms,
      ),
      f,
      indent=1,
    )
  print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  app.run(main)
