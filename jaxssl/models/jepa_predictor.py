"""I-JEPA's narrow ViT predictor (Assran et al. 2023, sec. 3 "Prediction", appendix A).

Given the context encoder's output tokens and, for each target block, the positions to predict,
the predictor runs a narrow transformer over [context tokens ; mask tokens] and returns its
outputs at the mask tokens, projected back to the encoder width. As the official
`VisionTransformerPredictor`:
  * context tokens are projected to the predictor width and get the (fixed) sin-cos position
    embedding of their patches;
  * every target position gets one shared learned mask token plus its position embedding;
  * each target block is predicted in its own pass (the context is repeated per block, so
    blocks never attend to each other's mask tokens);
  * pre-LN blocks (`vit.EncoderBlock`), a final LayerNorm and a linear map to the encoder width.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import vit
from jaxssl.kernels import REFERENCE, Kernels


def _dense(features, in_name, out_name, dtype, kernels, name):
  return kernels.dense(
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (in_name, out_name)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_name,)),
  )


class JEPAPredictor(nn.Module):
  """Narrow ViT predictor.

  Attributes:
    width, depth, num_heads, mlp_dim: the predictor transformer (the paper: 384 wide,
      12 blocks for ViT-H/14, i.e. narrower than the encoder).
    out_width: the encoder width the predictions are mapped back to.
    gelu_approximate: tanh GELU in the blocks; False gives the exact erf GELU of the official
      predictor (I-JEPA passes its encoder's setting).
    dtype: compute dtype; parameters and the output are float32.
  """

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  out_width: int
  gelu_approximate: bool = True
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE  # jaxssl.kernels; the parameters are the same for every choice

  @nn.compact
  def __call__(self, context_tokens, context_indices, target_indices, patch_grid):
    """Predicts the target blocks' representations.

    Args:
      context_tokens: [B, K, D] context-encoder outputs at the context patches.
      context_indices: int [B, K] their row-major patch indices.
      target_indices: int [B, T, M] patch indices of T target blocks of M patches each.
      patch_grid: (rows, cols) of the image's patch grid.

    Returns:
      [B, T, M, out_width] float32 predictions, one per target patch.
    """
    batch, num_context, _ = context_tokens.shape
    if target_indices.ndim != 3 or target_indices.shape[0] != batch:
      raise ValueError(
        f"target_indices must be int [B={batch}, blocks, patches], got shape "
        f"{target_indices.shape}."
      )
    if context_indices.shape != (batch, num_context):
      raise ValueError(
        f"context_indices must be [B, K] = {(batch, num_context)} (one index "
        f"per context token), got {context_indices.shape}."
      )
    _, num_blocks, block_len = target_indices.shape
    posemb = vit.posemb_sincos_2d(*patch_grid, self.width)  # [N, width], fixed
    x = _dense(self.width, "embed", None, self.dtype, self.kernels, "embed")(context_tokens)
    x = x + jnp.take(posemb, context_indices, axis=0).astype(x.dtype)
    mask_token = self.param(
      "mask_token",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None,)),
      (self.width,),
      jnp.float32,
    )
    queries = mask_token + jnp.take(posemb, target_indices, axis=0)  # [B, T, M, width]
    # One pass per target block: [B * T, K + M, width].
    x = jnp.repeat(x, num_blocks, axis=0)
    queries = queries.reshape(batch * num_blocks, block_len, self.width).astype(x.dtype)
    x = jnp.concatenate([x, queries], axis=1)
    for i in range(self.depth):
      x = vit.EncoderBlock(
        mlp_dim=self.mlp_dim,
        num_heads=self.num_heads,
        dtype=self.dtype,
        gelu_approximate=self.gelu_approximate,
        kernels=self.kernels,
        name=f"block_{i}",
      )(x)
    x = vit.layer_norm(self.dtype, name="predictor_norm")(x[:, num_context:])
    x = _dense(self.out_width, None, "embed", self.dtype, self.kernels, "proj")(x)
    return x.astype(jnp.float32).reshape(batch, num_blocks, block_len, self.out_width)
