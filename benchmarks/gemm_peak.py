r"""Matrix-multiply rates of each side's kernels on this machine: XLA:CPU (jaxssl), torch (the peer).

  python benchmarks/gemm_peak.py --torch_python=/tmp/torchvenv/bin/python

The vs_pytorch.py ratio is bounded by what each side's GEMMs reach, since most of a SimCLR
step's FLOPs are matrix multiplies (ViT-S/16: all but attention's softmax, LayerNorm and GELU).
This script times, in one run, one after the other, each in its own process:

  * `jax.jit(jnp.matmul)` (XLA:CPU with jaxlib's default kernels: YNNPACK for dots);
  * `torch.matmul` in the peer's venv (MKL / oneDNN);
  * NumPy's `matmul` (its bundled OpenBLAS), a third reference,

on square 2048^2 and 4096^2 products and on the largest GEMM of the SimCLR ViT-S/16 step
(the MLP's first layer over 64 images x 196 tokens: [12544, 384] x [384, 1536]), in float32 and
bfloat16 (not NumPy; XLA also with float32 accumulation, the ratio then against torch's bf16,
which accumulates in float32 too), on every core and pinned to one core (per-core efficiency, without the
threading). Fastest of --repeats calls after a warm-up: a kernel's achievable rate.

The peer needs its own environment (as for vs_pytorch.py):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly timm
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import min_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

# (name, M, K, N): C[M, N] = A[M, K] B[K, N]
SHAPES = (
  ("2048^2", 2048, 2048, 2048),
  ("4096^2", 4096, 4096, 4096),
  ("ViT-S/16 MLP fc1", 64 * 196, 384, 1536),
)
# "bfloat16 acc. float32": bf16 operands, float32 accumulation and output (XLA's
# preferred_element_type). XLA:CPU runs only this bf16 form on AMX / AVX512-BF16 (its bf16-output
# dot is upcast to float32); torch's bf16 matmul accumulates in float32 anyway, so its
# "bfloat16" row is the comparable one.
DTYPES = ("float32", "bfloat16", "bfloat16 acc. float32")
SIDES = ("xla", "torch", "numpy")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--torch_python",
    default="/tmp/torchvenv/bin/python",
    help="python of the environment with torch (vs_pytorch.py's peer venv)",
  )
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument(
    "--side",
    choices=SIDES,
    default=None,
    help="time one side in this process (the parent runs each in its own)",
  )
  p.add_argument("--one_core", action="store_true", help="pin this process to one core")
  p.add_argument("--json", default="/tmp/jaxssl_gemm_peak.json")
  return p.parse_args(argv)


def time_side(side: str, repeats: int, one_core: bool) -> dict:
  """GFLOP/s of `side`'s matmul for every (shape, dtype) it supports, in this process."""
  if side == "xla":
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    matmuls = {
      "float32": jax.jit(jnp.matmul),
      "bfloat16": jax.jit(jnp.matmul),
      "bfloat16 acc. float32": jax.jit(
        lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)
      ),
    }

    def operands(m, k, n, dtype):
      operand_dtype = "float32" if dtype == "float32" else "bfloat16"
      return jnp.ones((m, k), operand_dtype), jnp.ones((k, n), operand_dtype), matmuls[dtype]

    def run(a, b, matmul):
      matmul(a, b).block_until_ready()

    version = f"jax {jax.__version__}"
  elif side == "torch":
    import torch  # pylint: disable=g-import-not-at-top

    if one_core:
      torch.set_num_threads(1)

    def operands(m, k, n, dtype):
      if dtype not in ("float32", "bfloat16"):
        return None
      return torch.ones(m, k, dtype=getattr(torch, dtype)), torch.ones(
        k, n, dtype=getattr(torch, dtype)
      )

    def run(a, b):
      torch.matmul(a, b)

    version = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
  else:
    import numpy as np  # pylint: disable=g-import-not-at-top

    def operands(m, k, n, dtype):
      if dtype != "float32":
        return None
      return np.ones((m, k), np.float32), np.ones((k, n), np.float32)

    def run(a, b):
      np.matmul(a, b)

    version = f"numpy {np.__version__}"
  rates = {}
  for name, m, k, n in SHAPES:
    for dtype in DTYPES:
      ops = operands(m, k, n, dtype)
      if ops is None:
        continue
      run(*ops)  # compile / warm up
      rates[f"{name} {dtype}"] = 2 * m * k * n / min_seconds(lambda: run(*ops), repeats) / 1e9
  return dict(version=version, gflops=rates)


def run_side_process(args, side: str, one_core: bool) -> dict | None:
  python = args.torch_python if side == "torch" else sys.executable
  env = dict(os.environ)
  if one_core:
    # OpenBLAS and MKL size their pools from these, XLA:CPU from the affinity mask.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
  command = [python, os.path.abspath(__file__), f"--side={side}", f"--repeats={args.repeats}"]
  command += ["--one_core"] if one_core else []
  try:
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
  except (FileNotFoundError, subprocess.CalledProcessError) as e:
    print(
      f"note: the {side} side did not run ({e}; {getattr(e, 'stderr', '')[-1500:]})",
      file=sys.stderr,
    )
    return None
  return json.loads(proc.stdout.split("GEMM_RESULT ", 1)[1].splitlines()[0])


def main():
  args = parse_args()
  if args.side is not None:
    if args.one_core:
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print("GEMM_RESULT " + json.dumps(time_side(args.side, args.repeats, args.one_core)))
    return
  results = {}
  for one_core in (False, True):
    for side in SIDES:
      r = run_side_process(args, side, one_core)
      if r is not None:
        results[(side, one_core)] = r
  cores = len(os.sched_getaffinity(0))
  print(
    f"\nGEMM GFLOP/s, fastest of {args.repeats}; "
    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
    f"{platform.processor() or 'cpu'} x{cores} cores"
  )
  for (side, one_core), r in results.items():
    print(f"  {side} ({'1 core' if one_core else f'{cores} cores'}): {r['version']}")
  columns = [(s, c) for c in (False, True) for s in SIDES if (s, c) in results]
  print(
    "\n| GEMM | "
    + " | ".join(f"{s}, {'1 core' if c else f'{cores} cores'}" for s, c in columns)
    + " | xla / torch |"
  )
  print("|---|" + "---|" * (len(columns) + 1))
  for name, *_ in SHAPES:
    for dtype in DTYPES:
      key = f"{name} {dtype}"
      cells = [results[col]["gflops"].get(key) for col in columns]
      xla, torch_ = (
        results.get((s, False), {}).get("gflops", {}).get(k)
        for s, k in (("xla", key), ("torch", key.replace(" acc. float32", "")))
      )
      ratio = f"{xla / torch_:.2f}" if xla and torch_ else "-"
      print(
        f"| {key} | "
        + " | ".join("-" if v is None else f"{v:.0f}" for v in cells)
        + f" | {ratio} |"
      )
  with open(args.json, "w") as f:
    json.dump(
      dict(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        cores=cores,
        results={f"{s}{'_1core' if c else ''}": r for (s, c), r in results.items()},
      ),
      f,
      indent=1,
    )
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
