"""The reference ops: plain Flax / JAX, what TPU and GPU run and what a reader sees first.

Each is the function a `jaxssl.kernels.Kernels` field names; a backend's kernels compute the
same values with the same parameters.
"""

import functools

import flax.linen as nn
import jax
from jax import lax

Dense = nn.Dense
dot_general = lax.dot_general
# Bias-free: every convolution in the models is followed by a normalization.
Conv = functools.partial(nn.Conv, use_bias=False)


def attention(query, key, value, *, is_causal: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(head_dim)) v over [batch, length, heads, head_dim] (Vaswani et al.
  2017, eq. 1): `jax.nn.dot_product_attention`, whose logits and softmax are float32 for
  bfloat16 inputs."""
  return jax.nn.dot_product_attention(query, key, value, is_causal=is_causal)


def gelu(x, *, approximate: bool = True) -> jax.Array:
  """GELU in x's dtype (Hendrycks & Gimpel 2016; tanh form when `approximate`)."""
  return nn.gelu(x, approximate=approximate)


def max_pool(x, window_shape, strides, padding) -> jax.Array:
  """`nn.max_pool` (XLA reduce-window) over [B, H, W, C], padded with -inf."""
  return nn.max_pool(
    x, tuple(window_shape), strides=tuple(strides), padding=tuple(tuple(p) for p in padding)
  )
