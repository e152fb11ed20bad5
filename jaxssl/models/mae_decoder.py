"""The MAE decoder: reconstructs every patch's pixels from the encoded visible patches.

He et al. 2022, sec. 3 ("MAE decoder") and `forward_decoder` in the official `models_mae.py`:
the encoded visible tokens are linearly projected to the decoder width, one shared learned mask
token is appended for every removed patch, the full set is put back into patch order
(`ids_restore`), fixed 2-D sin-cos position embeddings are added to all tokens (mask tokens
learn nothing about location otherwise), then a few pre-LN transformer blocks, a LayerNorm and
a linear layer predict the p * p * C pixel values of each patch.

An encoder with a [cls] token (ViT pool='cls', as the official MAE) passes its final-normed
[cls] as `cls_token`: as `forward_decoder`, it goes through `decoder_embed`, stays first with a
zero position embedding (`decoder_pos_embed[:, 0]` is zeros), runs through the blocks as one
more attention key and is dropped from the prediction. A 'gap' encoder has none and only patch
tokens enter.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import vit
from jaxssl.kernels import REFERENCE, Kernels


class MAEDecoder(nn.Module):
  """Lightweight transformer decoder mapping kept tokens to per-patch pixel predictions.

  Attributes:
    decoder_width: token width inside the decoder (MAE: 512).
    decoder_depth: number of transformer blocks (MAE: 8; 0 is allowed, then only the
      per-token embed / norm / predict layers remain).
    decoder_heads: attention heads per block (MAE: 16).
    decoder_mlp_dim: MLP hidden width per block (MAE: 4 x width).
    patch_size: side p of the square patches whose pixels are predicted.
    channels: image channels C; the output has p * p * C values per patch, laid out as
      `jaxssl.losses.patchify`.
    gelu_approximate: tanh GELU in the blocks; False gives the exact erf GELU of the official
      timm blocks (MAE passes its encoder's setting).
    dtype: compute dtype; parameters and the output are float32.
  """

  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  decoder_mlp_dim: int
  patch_size: int
  channels: int
  gelu_approximate: bool = True
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE  # jaxssl.kernels; the parameters are the same for every choice

  def _dense(self, features, logical_names, name):
    # MAE initialises every nn.Linear with xavier-uniform and zero bias. A spec may name a
    # logical axis once only, so the other side of these kernels stays unannotated.
    return self.kernels.dense(
      features,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), logical_names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (logical_names[1],)),
    )

  @nn.compact
  def __call__(self, tokens, ids_restore, grid, cls_token=None):
    """Predicts pixels of all N patches.

    Args:
      tokens: [B, K, D_enc] encoded kept patch tokens, in the order of the encoder's
        keep_indices (the first K entries of the shuffle).
      ids_restore: int [B, N], the inverse of the shuffle (see jaxssl.data.masking).
      grid: (h, w) patch grid with h * w = N, for the position embedding.
      cls_token: optional [B, 1, D_enc] encoded [cls] token, carried through the blocks in
        front of the patch tokens and dropped from the output.

    Returns:
      [B, N, patch_size^2 * channels] float32 predictions, in row-major patch order.
    """
    if tokens.ndim != 3 or ids_restore.ndim != 2 or ids_restore.shape[0] != tokens.shape[0]:
      raise ValueError(
        f"MAEDecoder expects tokens [B, K, D] and ids_restore [B, N]; got "
        f"{tokens.shape} and {ids_restore.shape}."
      )
    batch, kept, _ = tokens.shape
    grid_h, grid_w = grid
    num_patches = ids_restore.shape[1]
    if grid_h * grid_w != num_patches or kept > num_patches:
      raise ValueError(
        f"ids_restore has N={num_patches} patches but grid={tuple(grid)} and "
        f"{kept} kept tokens; pass the encoder's patch_grid and masks made for "
        "this image and patch size."
      )
    if self.decoder_width % self.decoder_heads:
      raise ValueError(
        f"decoder_width={self.decoder_width} is not divisible by "
        f"decoder_heads={self.decoder_heads}; change one of them."
      )

    if cls_token is not None and cls_token.shape != (batch, 1, tokens.shape[-1]):
      raise ValueError(
        f"cls_token must be [B, 1, D] = {(batch, 1, tokens.shape[-1])}; got {cls_token.shape}."
      )
    embed = self._dense(self.decoder_width, ("embed", None), "decoder_embed")
    x = embed(tokens.astype(self.dtype))
    # MAE initialises the mask token with N(0, 0.02^2).
    mask_token = self.param(
      "mask_token",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, None, "embed")),
      (1, 1, self.decoder_width),
      jnp.float32,
    )
    mask_tokens = jnp.broadcast_to(
      mask_token.astype(x.dtype), (batch, num_patches - kept, self.decoder_width)
    )
    x = jnp.concatenate([x, mask_tokens], axis=1)  # shuffled order: kept first
    # Unshuffle: position n takes the token of patch n.
    x = jnp.take_along_axis(x, ids_restore[:, :, None].astype(jnp.int32), axis=1)
    x = x + vit.posemb_sincos_2d(grid_h, grid_w, self.decoder_width).astype(x.dtype)[None]
    if cls_token is not None:
      # The same decoder_embed; no position embedding (the official one is zero at slot 0).
      x = jnp.concatenate([embed(cls_token.astype(self.dtype)), x], axis=1)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    for i in range(self.decoder_depth):
      x = vit.EncoderBlock(
        mlp_dim=self.decoder_mlp_dim,
        num_heads=self.decoder_heads,
        dtype=self.dtype,
        gelu_approximate=self.gelu_approximate,
        kernels=self.kernels,
        name=f"decoder_block_{i}",
      )(x)
    if cls_token is not None:
      x = x[:, 1:]  # the [cls] output predicts no patch
    # The encoder's LayerNorm (same epsilon and annotations), in float32 like its final norm.
    x = vit.layer_norm(jnp.float32, name="decoder_norm")(x.astype(jnp.float32))
    pred = self._dense(self.patch_size**2 * self.channels, ("embed", None), "decoder_pred")(x)
    return pred.astype(jnp.float32)
