"""Scaled dot-product attention in the heads-first layout XLA:CPU runs fast (a CPU kernel).

The reference, `jax.nn.dot_product_attention` over [batch, length, heads, head_dim], contracts
per head with the heads dimension in the middle; XLA:CPU then spends about as long moving data
as multiplying. Here q, k and v are transposed to [batch, heads, length, head_dim] so both
products batch over leading dimensions with nothing between them (benchmarks/attention_layout.py;
docs/performance_cpu.md, "Attention layout"). In bfloat16 the transposes are written out as
copies (`matmul.materialized_swapaxes`) and the products are float32-accumulating bf16 GEMMs
(`matmul.batched_matmul`): XLA would fold a plain transpose into the dots' layouts, and XLA:CPU
upcasts a bf16 dot whose operands are not row-major to a float32 GEMM.

Same values as the reference up to rounding: logits and softmax in float32, weights rounded to
the compute dtype before the second product, as `jax.nn.dot_product_attention` does.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.kernels.cpu import matmul


def _swap_heads(x: jax.Array, copy: bool) -> jax.Array:
  """x with dimensions 1 and 2 swapped: written out when `copy`, else a plain transpose."""
  return matmul.materialized_swapaxes(x, 1) if copy else jnp.swapaxes(x, 1, 2)


def heads_first_attention(query, key, value, *, is_causal: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(head_dim)) v, inputs and output [batch, length, heads, head_dim]."""
  dtype = query.dtype
  length, heads, head_dim = query.shape[1:]
  copy = (
    matmul.is_low_precision(dtype)
    and matmul.is_materializable(length)
    and matmul.is_materializable(heads)
  )
  q, k, v = (_swap_heads(a, copy) for a in (query, key, value))
  logits = matmul.batched_matmul(
    q, k, b_transposed=True, preferred_element_type=jnp.float32
  ) / np.sqrt(head_dim)
  if is_causal:
    causal = jnp.tril(jnp.ones((length, key.shape[1]), bool))
    logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return _swap_heads(matmul.batched_matmul(weights, v), copy)
