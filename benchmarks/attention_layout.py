r"""Self-attention on XLA:CPU: which tensor layout of q, k, v runs fastest (forward + backward).

  python benchmarks/attention_layout.py                    # ViT-S/16 at 224px, batch 64
  python benchmarks/attention_layout.py --batch_size=16

Why this exists: in the ViT-S/16 comparison with the PyTorch peer (benchmarks/vs_pytorch.py)
XLA runs the ViT's GEMMs near its matmul peak, but attention's batched small matmuls at 8-20%
of it. This times one attention layer (projections, scores, softmax, weighted sum, output
projection) and its gradients with respect to the input and all four kernels, for:
  * `dot_product_attention`: `jaxssl.models.vit.SelfAttention(impl='dot_product_attention')`
    (the default off CPU), q/k/v as [batch, tokens, heads, head_dim] into
    `jax.nn.dot_product_attention`;
  * `tokens_first`: the same layout with the scores and softmax written out;
  * `heads_first`: the projections write [batch, heads, tokens, head_dim] directly, so both
    attention matmuls batch over leading dimensions with no transpose between them
    (`SelfAttention(impl='heads_first')`, the default on CPU since this measured fastest).
It checks that all three compute the same value and gradients, then prints milliseconds
(fastest of N calls).
"""
import argparse
import os
import sys

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position


def dot_product_attention(x, wq, wk, wv, wo):
  q, k, v = (jnp.einsum("btd,dhk->bthk", x, w) for w in (wq, wk, wv))
  return jnp.einsum("bthk,hkd->btd", jax.nn.dot_product_attention(q, k, v), wo)


def tokens_first(x, wq, wk, wv, wo):
  q, k, v = (jnp.einsum("btd,dhk->bthk", x, w) for w in (wq, wk, wv))
  scores = jnp.einsum("bqhk,bshk->bhqs", q / np.sqrt(q.shape[-1]), k)
  y = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(scores, axis=-1), v)
  return jnp.einsum("bthk,hkd->btd", y, wo)


def heads_first(x, wq, wk, wv, wo):
  q, k, v = (jnp.einsum("btd,dhk->bhtk", x, w) for w in (wq, wk, wv))
  scores = jnp.einsum("bhqk,bhsk->bhqs", q / np.sqrt(q.shape[-1]), k)
  y = jnp.einsum("bhqs,bhsk->bhqk", jax.nn.softmax(scores, axis=-1), v)
  return jnp.einsum("bhtk,hkd->btd", y, wo)


VARIANTS = {"dot_product_attention": dot_product_attention, "tokens_first": tokens_first,
            "heads_first": heads_first}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=64, help="SimCLR: 32 images x 2 views")
  parser.add_argument("--tokens", type=int, default=196)
  parser.add_argument("--heads", type=int, default=6)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  width = args.heads * args.head_dim
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batch_size, args.tokens, width)), jnp.float32)
  qkv = [jnp.asarray(rng.normal(size=(width, args.heads, args.head_dim)) / np.sqrt(width),
                     jnp.float32) for _ in range(3)]
  wo = jnp.asarray(rng.normal(size=(args.heads, args.head_dim, width)) / np.sqrt(width),
                   jnp.float32)
  inputs = (x, *qkv, wo)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}; batch {args.batch_size}, "
        f"{args.tokens} tokens, {args.heads} heads x {args.head_dim}; fastest of "
        f"{args.repeats} calls")
  print("| layout | forward ms | forward + backward ms |\n|---|---|---|")
  reference = None
  for name, attention in VARIANTS.items():
    forward = jax.jit(attention)
    grads = jax.jit(jax.value_and_grad(lambda *a, f=attention: jnp.sum(f(*a) ** 2),
                                       argnums=tuple(range(5))))
    out = jax.block_until_ready(grads(*inputs))
    reference = out if reference is None else reference
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(reference)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))
    jax.block_until_ready(forward(*inputs))
    fwd = timing.min_seconds(lambda: jax.block_until_ready(forward(*inputs)), args.repeats)
    both = timing.min_seconds(lambda: jax.block_until_ready(grads(*inputs)), args.repeats)
    print(f"| {name} | {fwd * 1e3:.1f} | {both * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
  main()
