r"""bfloat16 on XLA:CPU: forward + backward of the ViT-S/16 MLP GEMM, MLP block and attention.

  python benchmarks/bf16_dense.py [--batch=64] [--repeats=5]

Times, in one process, fastest of --repeats after a compile, the gradient (with respect to the
input and the kernel) of one [batch x 196 tokens, 384] x [384, 1536] product, of a whole
ViT-S/16 `MlpBlock` (Dense -> GELU -> Dense, biases) and of its `SelfAttention` layer (6 heads),
in

  * float32 with the CPU kernels (`jaxssl.kernels.cpu`: heads-first attention);
  * bfloat16 with the reference ops (`jaxssl.kernels.REFERENCE`, what TPU and GPU run:
    autodiff's dots with bf16 outputs, and weight gradients contracting the batch dimension,
    both of which XLA:CPU upcasts to a float32 GEMM);
  * bfloat16 with the CPU kernels (`jaxssl.kernels.cpu.matmul`: float32-accumulating bf16
    GEMMs in the form YNNPACK runs on AMX / AVX512-BF16, biases added in float32, attention's
    q, k, v copied heads-first so its batched dots are row-major): what `model.dtype='bfloat16'`
    uses on a CPU mesh.

Also prints whether the CPU reports AMX / AVX512-BF16, and for each case the element types of
the compiled dots (all 'bf16 x bf16' only in the last case).
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cpuinfo  # pylint: disable=g-import-not-at-top,wrong-import-position
from timing import min_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

WIDTH, MLP_DIM, HEADS, TOKENS = 384, 1536, 6, 196  # ViT-S/16 at 224px


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64, help="images (SimCLR: 32 x 2 views)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default="/tmp/jaxssl_bf16_dense.json")
  return p.parse_args(argv)


def main():
  args = parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxssl import kernels  # pylint: disable=g-import-not-at-top
  from jaxssl.kernels import cpu  # pylint: disable=g-import-not-at-top
  from jaxssl.kernels.cpu import xla_options  # pylint: disable=g-import-not-at-top
  from jaxssl.models import vit  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.batch, TOKENS, WIDTH)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((WIDTH, MLP_DIM)) * 0.05, jnp.float32)
  dims = (((2,), (0,)), ((), ()))
  gemm_flops = 3 * 2 * args.batch * TOKENS * WIDTH * MLP_DIM  # forward, dX, dW
  cases = [
    ("float32", jnp.float32, cpu.KERNELS),
    ("bfloat16, reference ops", jnp.bfloat16, kernels.REFERENCE),
    ("bfloat16, jaxssl.kernels.cpu", jnp.bfloat16, cpu.KERNELS),
  ]
  options = xla_options.compiler_options()  # what the trainer compiles with on CPU
  results = []
  for name, dtype, ops in cases:
    dot_general = ops.dot_general

    def gemm_loss(x, kernel, dtype=dtype, dot_general=dot_general):
      out = dot_general(x.astype(dtype), kernel.astype(dtype), dims)
      return jnp.sum(out.astype(jnp.float32) ** 2)

    gemm = jax.jit(jax.grad(gemm_loss, argnums=(0, 1)), compiler_options=options)

    # The trainer's own blocks, built with this case's kernels.
    compiled = {}
    for part, module in (
      ("mlp", vit.MlpBlock(mlp_dim=MLP_DIM, dtype=dtype, gelu_approximate=False, kernels=ops)),
      ("attention", vit.SelfAttention(num_heads=HEADS, dtype=dtype, kernels=ops)),
    ):
      params = module.init(jax.random.key(0), x[:2])
      grad = jax.jit(
        jax.grad(
          lambda p, x, m=module: jnp.sum(m.apply(p, x).astype(jnp.float32) ** 2), argnums=(0, 1)
        ),
        compiler_options=options,
      )
      compiled[part] = grad.lower(params, x).compile(), params
    jax.block_until_ready(gemm(x, kernel))
    gemm_s = min_seconds(lambda: jax.block_until_ready(gemm(x, kernel)), args.repeats)
    part_ms = {}
    for part, (fn, params) in compiled.items():
      jax.block_until_ready(fn(params, x))
      part_ms[part] = 1e3 * min_seconds(
        lambda: jax.block_until_ready(fn(params, x)),  # pylint: disable=cell-var-from-loop
        args.repeats,
      )
    types = sorted(
      {
        " x ".join(t)
        for t in xla_options.dot_operand_types(gemm.lower(x, kernel).compile().as_text())
      }
    )
    attention_types = sorted(
      {" x ".join(t) for t in xla_options.dot_operand_types(compiled["attention"][0].as_text())}
    )
    results.append(
      dict(
        case=name,
        gemm_ms=1e3 * gemm_s,
        gemm_gflops=gemm_flops / gemm_s / 1e9,
        block_ms=part_ms["mlp"],
        attention_ms=part_ms["attention"],
        gemm_dot_types=types,
        attention_dot_types=attention_types,
      )
    )
    print(
      f"{name}: GEMM {1e3 * gemm_s:.0f} ms, MLP block {part_ms['mlp']:.0f} ms, "
      f"attention {part_ms['attention']:.0f} ms",
      flush=True,
    )

  flags = cpuinfo.flags()
  print(
    f"\nViT-S/16 layers at {args.batch} images, forward + backward, fastest of {args.repeats}; "
    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} "
    f"x{len(os.sched_getaffinity(0))} cores, AMX {'yes' if 'amx_bf16' in flags else 'no'}, "
    f"AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}, jax {jax.__version__}\n"
  )
  print(
    "| case | [N*196, 384] x [384, 1536] GEMM (ms) | GFLOP/s | MlpBlock (ms) | "
    "SelfAttention (ms) | GEMM dot types | attention dot types |"
  )
  print("|---|---|---|---|---|---|---|")
  for r in results:
    print(
      f"| {r['case']} | {r['gemm_ms']:.0f} | {r['gemm_gflops']:.0f} | {r['block_ms']:.0f} | "
      f"{r['attention_ms']:.0f} | {', '.join(r['gemm_dot_types'])} | "
      f"{', '.join(r['attention_dot_types'])} |"
    )
  with open(args.json, "w") as f:
    json.dump(
      dict(
        args=vars(args),
        results=results,
        amx="amx_bf16" in flags,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      ),
      f,
      indent=1,
    )
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
