r"""This CPU's floating-point ceiling: fused multiply-adds per second, measured, not looked up.

  python benchmarks/fma_peak.py
  python benchmarks/fma_peak.py --vs_pytorch_json=/tmp/jaxssl_vs_pytorch.json [...]

No library's GEMM and no training step can run more FLOP/s than the vector units issue. This
script measures that ceiling directly: a small C kernel (compiled here with the system's `cc`;
no other build step) keeps 12-16 independent accumulator registers busy with

  * float32 FMA, `vfmadd` on 512-bit (AVX-512) and 256-bit (AVX2) registers:
    2 FLOP per lane per instruction;
  * bfloat16 dot products accumulated in float32, `vdpbf16ps` (AVX512-BF16): two bf16 products
    added to each float32 lane, 4 FLOP per lane per instruction (the instruction behind
    bf16 GEMMs with float32 accumulation on CPUs without AMX tiles);

enough independent chains to hide each instruction's latency, so the loop runs at the
instruction's throughput. It runs on one core, then one pinned process per core at once
(the sum is the machine's ceiling: per-core clocks under all-core load can be lower). Each run
checks its result against the closed form, so the loop did the arithmetic it is credited with.

With --vs_pytorch_json (files written by `vs_pytorch.py`, whose JSON carries XLA's count of the
step's FLOPs), it prints each side's achieved FLOP/s, and what 1.5x the peer's rate would need
as a fraction of this ceiling: the bound on the issue's goal at equal FLOPs and precision.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpuinfo  # pylint: disable=g-import-not-at-top,wrong-import-position

# A kernel runs `iters` rounds over its accumulators and prints "<seconds> <checksum>".
#   fma kernels: acc <- acc * 0.5 + b, which converges to 2b (exactly, once acc = 2b) from any
#     start, so after enough rounds every lane holds 2b: checksum = lanes * chains * 2b.
#   dpbf16: acc <- acc + x0*y0 + x1*y1 with x1*y1 = -x0*y0 (exact in float32), so every lane
#     keeps its start value: checksum = lanes * sum of the start values. The products are computed: the
#     hardware has no shortcut for values that cancel.
# `b`, `x` and `iters` come from argv, so the compiler can neither fold nor shorten the loop.
KERNEL_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define FMA_KERNEL(NAME, TARGET, VEC, SET1, FMADD, STORE, LANES, CHAINS)                \
  __attribute__((target(TARGET))) static double NAME(long iters, float b, double *secs) { \
    VEC acc[CHAINS];                                                                    \
    for (int c = 0; c < CHAINS; ++c) acc[c] = SET1((float)c);                           \
    const VEC half = SET1(0.5f), add = SET1(b);                                         \
    double t0 = now();                                                                  \
    for (long i = 0; i < iters; ++i) {                                                  \
      _Pragma("GCC unroll 32")                                                          \
      for (int c = 0; c < CHAINS; ++c) acc[c] = FMADD(acc[c], half, add);               \
    }                                                                                   \
    *secs = now() - t0;                                                                 \
    float out[LANES]; double sum = 0;                                                   \
    for (int c = 0; c < CHAINS; ++c) {                                                  \
      STORE(out, acc[c]);                                                               \
      for (int l = 0; l < LANES; ++l) sum += out[l];                                    \
    }                                                                                   \
    return sum;                                                                         \
  }

/* 32 vector registers with AVX-512, 16 with AVX2: 2 hold the constants, the rest accumulate
   (more chains than registers would spill to memory). */
FMA_KERNEL(fma512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16, 16)
FMA_KERNEL(fma256, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8, 12)

__attribute__((target("avx512f,avx512bf16")))
static double dpbf16(long iters, float x, double *secs) {
  enum { CHAINS = 16 };
  __m512 acc[CHAINS];
  for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_set1_ps((float)c);
  /* Pairs (x, -x) times (x, x): each lane adds x*x - x*x = 0. */
  __m512 xs = _mm512_set1_ps(x), pair = _mm512_mask_blend_ps(0xAAAA, xs, _mm512_set1_ps(-x));
  __m512bh lhs = _mm512_cvtne2ps_pbh(pair, pair), rhs = _mm512_cvtne2ps_pbh(xs, xs);
  double t0 = now();
  for (long i = 0; i < iters; ++i) {
    _Pragma("GCC unroll 16")
    for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], lhs, rhs);
  }
  *secs = now() - t0;
  float out[16]; double sum = 0;
  for (int c = 0; c < CHAINS; ++c) {
    _mm512_storeu_ps(out, acc[c]);
    for (int l = 0; l < 16; ++l) sum += out[l];
  }
  return sum;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s fma512|fma256|dpbf16 ITERS VALUE\n", argv[0]); return 2; }
  long iters = atol(argv[2]); float v = (float)atof(argv[3]); double secs, sum;
  if (!strcmp(argv[1], "fma512")) sum = fma512(iters, v, &secs);
  else if (!strcmp(argv[1], "fma256")) sum = fma256(iters, v, &secs);
  else if (!strcmp(argv[1], "dpbf16")) sum = dpbf16(iters, v, &secs);
  else { fprintf(stderr, "unknown kernel %s\n", argv[1]); return 2; }
  printf("%.9f %.6f\n", secs, sum);
  return 0;
}
"""


class Kernel(NamedTuple):
  needs: tuple[str, ...]  # /proc/cpuinfo flags the kernel's instructions need
  lanes: int  # float32 lanes per register
  flop_per_lane: int  # per instruction
  dtype: str
  instruction: str
  chains: int  # independent accumulator registers, as in KERNEL_C


KERNELS = {
  "fma512": Kernel(("avx512f",), 16, 2, "float32", "AVX-512 FMA", 16),
  "fma256": Kernel(("avx2", "fma"), 8, 2, "float32", "AVX2 FMA", 12),
  "dpbf16": Kernel(
    ("avx512f", "avx512_bf16"), 16, 4, "bfloat16 acc. float32", "AVX512-BF16 vdpbf16ps", 16
  ),
}
VALUE = 0.375  # b of the FMA kernels, x of dpbf16 (exact in bfloat16)


def build(workdir: str, cc: str = "cc") -> str:
  """Compiles the kernels; returns the binary's path. Fails with the compiler's message."""
  src, exe = os.path.join(workdir, "fma_peak.c"), os.path.join(workdir, "fma_peak")
  with open(src, "w") as f:
    f.write(KERNEL_C)
  proc = subprocess.run([cc, "-O2", "-o", exe, src], capture_output=True, text=True)
  if proc.returncode != 0:
    sys.exit(
      f"Could not compile the FMA kernels with {cc!r} (a C compiler with x86 intrinsics, "
      f"gcc >= 10 or clang >= 11, is needed):\n{proc.stderr[-2000:]}"
    )
  return exe


def supported(flags: set[str]) -> list[str]:
  """The kernels whose instructions a CPU with these /proc/cpuinfo `flags` runs."""
  return [name for name, k in KERNELS.items() if all(f in flags for f in k.needs)]


def flop_per_round(kernel: str) -> int:
  """FLOPs of one round of the kernel's loop: every chain issues one instruction."""
  k = KERNELS[kernel]
  return k.chains * k.lanes * k.flop_per_lane


def expected_checksum(kernel: str) -> float:
  k = KERNELS[kernel]
  if kernel == "dpbf16":  # every lane keeps its start value c
    return k.lanes * sum(range(k.chains))
  return k.lanes * k.chains * 2 * VALUE  # every lane converged to the fixed point 2b


def start(exe: str, kernel: str, iters: int, core: int | None) -> subprocess.Popen:
  pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
  return subprocess.Popen(
    [exe, kernel, str(iters), repr(VALUE)], stdout=subprocess.PIPE, text=True, preexec_fn=pin
  )


def finish(proc: subprocess.Popen, kernel: str, iters: int) -> float:
  """GFLOP/s of one finished kernel process, after checking its checksum."""
  out, _ = proc.communicate()
  if proc.returncode != 0:
    raise RuntimeError(f"kernel {kernel} exited {proc.returncode}")
  secs, checksum = (float(v) for v in out.split())
  if abs(checksum - expected_checksum(kernel)) > 1e-6 * abs(expected_checksum(kernel)) + 1e-9:
    raise RuntimeError(
      f"kernel {kernel}: checksum {checksum} != {expected_checksum(kernel)}; "
      "the loop did not compute what it is credited with"
    )
  return iters * flop_per_round(kernel) / secs / 1e9


def rate(exe: str, kernel: str, cores: list[int], seconds: float, repeats: int) -> float:
  """Best over `repeats` of the summed GFLOP/s of one pinned kernel process per core, all at
  once; each runs about `seconds`."""
  iters = 1 << 16
  while True:  # calibrate on one core: rounds for ~`seconds`
    gflops = finish(start(exe, kernel, iters, cores[0]), kernel, iters)
    secs = iters * flop_per_round(kernel) / gflops / 1e9
    if secs > 0.05:
      iters = max(1, int(iters * seconds / secs))
      break
    iters *= 8
  best = 0.0
  for _ in range(repeats):
    procs = [start(exe, kernel, iters, core) for core in cores]
    best = max(best, sum(finish(p, kernel, iters) for p in procs))
  return best


def measure(seconds: float = 1.0, repeats: int = 3, cc: str = "cc") -> dict:
  """The FMA ceiling of every kernel this CPU runs: {kernel: {one_core, all_cores} GFLOP/s}."""
  cores = sorted(os.sched_getaffinity(0))
  results = {}
  with tempfile.TemporaryDirectory() as workdir:
    exe = build(workdir, cc)
    for kernel in supported(cpuinfo.flags()):
      k = KERNELS[kernel]
      results[kernel] = dict(
        dtype=k.dtype,
        instruction=k.instruction,
        flop_per_instruction=k.lanes * k.flop_per_lane,
        one_core=rate(exe, kernel, cores[:1], seconds, repeats),
        all_cores=rate(exe, kernel, cores, seconds, repeats),
        cores=len(cores),
      )
  return results


def ceiling(results: dict, dtype: str) -> float | None:
  """The highest all-core rate over the kernels of `dtype`, GFLOP/s."""
  rates = [r["all_cores"] for r in results.values() if r["dtype"] == dtype]
  return max(rates) if rates else None


def goal_rows(results: dict, vs_pytorch_files: list[str], goal: float = 1.5) -> list[dict]:
  """For each vs_pytorch.py result: each side's achieved GFLOP/s (XLA's count of the step's
  FLOPs, the same model on both sides) and `goal` x the peer's as a fraction of the ceiling."""
  rows = []
  for path in vs_pytorch_files:
    with open(path) as f:
      run = json.load(f)
    flops = run["ours"].get("flops_per_step")
    if not flops:
      raise ValueError(
        f"{path} has no ours.flops_per_step: rerun vs_pytorch.py (it records "
        "XLA's FLOP count of the step since 2026-12-06)"
      )
    dtype = run["args"]["dtype"]
    peak = ceiling(results, "bfloat16 acc. float32" if dtype == "bfloat16" else "float32")
    for mode in ("step", "loop"):
      ours_s, peer_s = run["ours"][f"{mode}_s"], run["peer"][f"{mode}_s"]
      need = goal * flops / peer_s / 1e9
      rows.append(
        dict(
          run=os.path.basename(path),
          backbone=run["args"]["backbone"],
          dtype=dtype,
          mode="step alone" if mode == "step" else "fed",
          gflop_per_step=flops / 1e9,
          ours_gflops=flops / ours_s / 1e9,
          peer_gflops=flops / peer_s / 1e9,
          goal_gflops=need,
          ceiling_gflops=peak,
          goal_of_ceiling=need / peak if peak else None,
          ratio=peer_s / ours_s,
        )
      )
  return rows


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seconds", type=float, default=1.0, help="length of each timed kernel run")
  p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
  p.add_argument("--cc", default="cc", help="C compiler")
  p.add_argument(
    "--vs_pytorch_json",
    nargs="*",
    default=[],
    help="vs_pytorch.py result files: print what the 1.5x goal needs of the ceiling",
  )
  p.add_argument("--json", default="/tmp/jaxssl_fma_peak.json")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  results = measure(args.seconds, args.repeats, args.cc)
  if not results:
    sys.exit("This CPU has neither AVX2+FMA nor AVX-512: no kernel here to measure it with.")
  print(
    f"FMA ceiling, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpuinfo.model()}, "
    f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()}\n"
  )
  print("| instruction | dtype | FLOP / instruction | 1 core GFLOP/s | all cores GFLOP/s |")
  print("|---|---|---|---|---|")
  for r in results.values():
    print(
      f"| {r['instruction']} | {r['dtype']} | {r['flop_per_instruction']} | "
      f"{r['one_core']:.1f} | {r['all_cores']:.1f} |"
    )
  rows = goal_rows(results, args.vs_pytorch_json)
  if rows:
    print(
      "\n| run | backbone | dtype | | GFLOP/step | ours GFLOP/s | peer GFLOP/s | ratio | "
      "1.5x peer needs GFLOP/s | of the ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
      of = f"{100 * r['goal_of_ceiling']:.0f}%" if r["goal_of_ceiling"] else "-"
      print(
        f"| {r['run']} | {r['backbone']} | {r['dtype']} | {r['mode']} | "
        f"{r['gflop_per_step']:.0f} | {r['ours_gflops']:.1f} | {r['peer_gflops']:.1f} | "
        f"{r['ratio']:.2f}x | {r['goal_gflops']:.1f} | {of} |"
      )
  with open(args.json, "w") as f:
    json.dump(
      dict(
        cpu=cpuinfo.model(),
        kernels=results,
        goal=rows,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      ),
      f,
      indent=1,
    )
  print(f"\nwrote {args.json}")


if __name__ == "__main__":
  main()
