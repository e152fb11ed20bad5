r"""Self-attention on XLA:CPU: which tensor layout of q, k, v runs fastest (forward + backward).

  python benchmarks/attention_layout.py                    # ViT-S/16 at 224px, batch 64
  python benchmarks/attention_layout.py --batch_size=16

Why this exists: in the ViT-S/16 comparison with the PyTorch peer (benchmarks/vs_pytorch.py)
XLA runs the ViT's GEMMs near its matmul peak, but attention's batched small matmuls at 8-20%
of it. This times one `jaxssl.models.vit.SelfAttention` layer (projections, scores, softmax,
weighted sum, output projection) and its gradients with respect to the input and all
parameters, with each kernel set's attention (`jaxssl.kernels`):
  * `reference` (what TPU and GPU run): q/k/v as [batch, tokens, heads, head_dim] into
    `jax.nn.dot_product_attention`;
  * `cpu` (what a CPU mesh gets, since it measured fastest here): q, k, v transposed to
    [batch, heads, tokens, head_dim], so both attention matmuls batch over leading dimensions
    with no transpose between them (`jaxssl.kernels.cpu.attention`).
It checks that both compute the same value and gradients, then prints milliseconds (fastest
of N calls).
"""

import argparse
import os
import sys

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import kernels  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.kernels import cpu  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.models import vit  # pylint: disable=g-import-not-at-top,wrong-import-position

IMPLS = {"reference": kernels.REFERENCE, "cpu": cpu.KERNELS}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=64, help="SimCLR: 32 images x 2 views")
  parser.add_argument("--tokens", type=int, default=196)
  parser.add_argument("--heads", type=int, default=6)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  width = args.heads * args.head_dim
  x = jax.random.normal(jax.random.key(0), (args.batch_size, args.tokens, width))
  params = nn.unbox(vit.SelfAttention(num_heads=args.heads).init(jax.random.key(1), x[:1]))
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}; batch {args.batch_size}, "
    f"{args.tokens} tokens, {args.heads} heads x {args.head_dim}; fastest of "
    f"{args.repeats} calls"
  )
  print("| kernels | forward ms | forward + backward ms |\n|---|---|---|")
  reference = None
  for impl, ops in IMPLS.items():
    attention = vit.SelfAttention(num_heads=args.heads, kernels=ops)
    forward = jax.jit(attention.apply)
    grads = jax.jit(
      jax.value_and_grad(lambda p, x, a=attention: jnp.sum(a.apply(p, x) ** 2), argnums=(0, 1))
    )
    out = jax.block_until_ready(grads(params, x))
    reference = out if reference is None else reference
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(reference)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))
    jax.block_until_ready(forward(params, x))
    fwd = timing.min_seconds(lambda: jax.block_until_ready(forward(params, x)), args.repeats)
    both = timing.min_seconds(lambda: jax.block_until_ready(grads(params, x)), args.repeats)
    print(f"| {impl} | {fwd * 1e3:.1f} | {both * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
  main()
