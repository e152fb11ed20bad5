"""Vision Transformer encoder with MAE-style token dropping.

ViT of Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words") in the pre-LN form used by
big_vision and MAE: patchify with a strided conv, add a 2-D position embedding, optionally
keep only a subset of patch tokens (He et al. 2022, MAE sec. 3) or replace masked patches by a
learned [mask] token (BEiT / iBOT masked image modelling), optionally prepend a [cls] token, run `depth` blocks of x + MHSA(LN(x)); x + MLP(LN(x)), and finish with a LayerNorm.

The ops (Dense, attention, GELU) come from `kernels` (`jaxssl.kernels.Kernels`, the reference
Flax / JAX ops unless the builder picks a backend's; every choice has the same parameters).

Parameters carry logical axis names (resolved by jaxssl/parallel.py's rules) and activations are
constrained at block boundaries to ('batch', 'length', 'embed'); both are no-ops until a mesh and
logical axis rules are set, so the same module runs on one CPU or a pod.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.kernels import REFERENCE, Kernels

# Architecture table, big_vision style. Reference: Table 2 of Zhai et al. 2022 ("Scaling
# Vision Transformers", arXiv:2106.04560); 'mu' is big_vision's tiny test variant.
# name: (width, depth, mlp_dim, num_heads)
VARIANTS = {
  "mu": (144, 6, 576, 3),
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "M": (512, 12, 2048, 8),
  "B": (768, 12, 3072, 12),
  "L": (1024, 24, 4096, 16),
}
_ARCH_FIELDS = ("width", "depth", "mlp_dim", "num_heads", "patch_size")
POOLS = ("cls", "gap")
POSEMBS = ("sincos2d", "learn")
POSEMB_RESIZES = ("bilinear", "bicubic")

_LN_EPSILON = 1e-6  # As in big_vision and MAE (PyTorch default would be 1e-5).


def decode_variant(variant: str) -> dict[str, int]:
  """Parses 'S/16' into dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=16).

  The part after '/' is the square patch size; without it ('S') no patch_size key is returned.
  """
  name, slash, patch = variant.partition("/")
  if name not in VARIANTS:
    raise ValueError(
      f'Unknown ViT variant {variant!r}: the name before "/" must be one of '
      f'{sorted(VARIANTS)}, e.g. "S/16".'
    )
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  arch = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
  if slash:
    if not patch.isdigit() or int(patch) < 1:
      raise ValueError(
        f'ViT variant {variant!r}: the patch size after "/" must be a positive '
        'integer, e.g. "S/16".'
      )
    arch["patch_size"] = int(patch)
  return arch


def posemb_sincos_2d(grid_h: int, grid_w: int, width: int) -> jax.Array:
  """Fixed 2-D sin-cos position embedding, [grid_h * grid_w, width], row-major patch order.

  MoCo v3 (Chen et al. 2021, sec. 4) / big_vision form: with w = width // 4 frequencies
  omega_d = 10000^(-d / (w - 1)), d = 0..w-1, the patch at (row y, column x) gets
  [sin(x omega), cos(x omega), sin(y omega), cos(y omega)].
  """
  if width % 4 or width < 8:
    raise ValueError(
      f"sincos2d position embedding needs width divisible by 4 and >= 8, got "
      f"{width}; change the width or use posemb='learn'."
    )
  y, x = jnp.mgrid[:grid_h, :grid_w]
  num_freq = width // 4
  omega = 1.0 / (10_000.0 ** (jnp.arange(num_freq) / (num_freq - 1)))
  x = jnp.einsum("m,d->md", x.reshape(-1), omega)
  y = jnp.einsum("m,d->md", y.reshape(-1), omega)
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)


def layer_norm(dtype, name=None):
  return nn.LayerNorm(
    epsilon=_LN_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


class MlpBlock(nn.Module):
  """Transformer feed-forward block: Dense(mlp_dim) -> GELU -> Dense(width)."""

  mlp_dim: int
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32
  gelu_approximate: bool = True  # tanh GELU (big_vision); False: exact erf GELU (timm, DINO)
  kernels: Kernels = REFERENCE

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    # big_vision init: xavier-uniform kernels, near-zero (not exactly zero) biases.
    bias_init = nn.initializers.normal(stddev=1e-6)
    x = self.kernels.dense(
      self.mlp_dim,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(bias_init, ("mlp",)),
    )(x)
    x = self.kernels.gelu(x, approximate=self.gelu_approximate)
    x = nn.with_logical_constraint(x, ("batch", "length", "mlp"))
    x = nn.Dropout(rate=self.dropout)(x, deterministic=self.deterministic)
    return self.kernels.dense(
      width,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("mlp", "embed")),
      bias_init=nn.with_logical_partitioning(bias_init, ("embed",)),
    )(x)


class SelfAttention(nn.Module):
  """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, eq. 1).

  Own module rather than nn.MultiHeadDotProductAttention: DenseGeneral initializes its
  [embed, heads, kv] kernels in a flattened 2-D shape, which breaks the 3-name logical
  partitioning as soon as a mesh and axis rules are active. The key projection has no bias:
  it would add the same q.b to every logit of a query, which softmax ignores (its gradient is
  identically zero), so it is a dead parameter. The attention itself is `kernels.attention`
  (`jax.nn.dot_product_attention` on the reference path).
  """

  num_heads: int
  dtype: Any = jnp.float32
  # Causal (autoregressive) mask: query t attends to keys <= t only (GPT; CLIP's text tower).
  is_causal: bool = False
  kernels: Kernels = REFERENCE

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    # Xavier-uniform on the [embed, heads * kv] matrix the 3-D kernel stands for (big_vision).
    qkv_init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    out_init = nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
    # None on the reference path: products and bias adds in the compute dtype.
    accumulate = self.kernels.accumulate_dtype

    def project(name, use_bias):
      kernel = self.param(
        f"{name}_kernel",
        nn.with_logical_partitioning(qkv_init, ("embed", "heads", "kv")),
        (width, self.num_heads, head_dim),
        jnp.float32,
      )
      y = jnp.einsum(
        "btd,dhk->bthk",
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        preferred_element_type=accumulate,
        _dot_general=self.kernels.dot_general,
      )
      if use_bias:
        bias = self.param(
          f"{name}_bias",
          nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")),
          (self.num_heads, head_dim),
          jnp.float32,
        )
        y = y + bias.astype(y.dtype)
      y = y.astype(self.dtype)
      return nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))

    query, key, value = project("query", True), project("key", False), project("value", True)
    y = self.kernels.attention(query, key, value, is_causal=self.is_causal)
    out_kernel = self.param(
      "out_kernel",
      nn.with_logical_partitioning(out_init, ("heads", "kv", "embed")),
      (self.num_heads, head_dim, width),
      jnp.float32,
    )
    out_bias = self.param(
      "out_bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (width,),
      jnp.float32,
    )
    out = jnp.einsum(
      "bthk,hkd->btd",
      y,
      out_kernel.astype(self.dtype),
      preferred_element_type=accumulate,
      _dot_general=self.kernels.dot_general,
    )
    return (out + out_bias.astype(out.dtype)).astype(self.dtype)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  drop_path: float = 0.0  # stochastic depth: each residual branch dropped per example
  deterministic: bool = True
  dtype: Any = jnp.float32
  gelu_approximate: bool = True
  is_causal: bool = False  # see SelfAttention
  kernels: Kernels = REFERENCE

  def _drop_path(self, y):
    # timm's DropPath: a whole example's branch is zeroed with probability p, kept ones scaled
    # by 1 / (1 - p); one draw per example, broadcast over tokens and channels.
    if not self.drop_path:
      return y
    return nn.Dropout(rate=self.drop_path, broadcast_dims=(1, 2))(
      y, deterministic=self.deterministic
    )

  @nn.compact
  def __call__(self, x):
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    y = layer_norm(self.dtype)(x)
    y = SelfAttention(
      num_heads=self.num_heads, dtype=self.dtype, is_causal=self.is_causal, kernels=self.kernels
    )(y)
    y = nn.Dropout(rate=self.dropout)(y, deterministic=self.deterministic)
    x = x + self._drop_path(y)
    y = layer_norm(self.dtype)(x)
    y = MlpBlock(
      mlp_dim=self.mlp_dim,
      dropout=self.dropout,
      deterministic=self.deterministic,
      dtype=self.dtype,
      gelu_approximate=self.gelu_approximate,
      kernels=self.kernels,
    )(y)
    y = nn.Dropout(rate=self.dropout)(y, deterministic=self.deterministic)
    x = x + self._drop_path(y)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class ViT(nn.Module):
  """Vision Transformer encoder returning (pooled features, aux).

  Attributes:
    variant: 'S/16'-style string decoded by `decode_variant`; may be None when all of
      width, depth, mlp_dim, num_heads and patch_size are given.
    width, depth, mlp_dim, num_heads, patch_size: explicit overrides of the variant.
    pool: 'gap' (mean of final-normed patch tokens) or 'cls' (final-normed [cls] token).
    posemb: 'sincos2d' (fixed, exact for any grid) or 'learn' (learned on `posemb_grid`,
      bilinearly resized to other grids).
    posemb_grid: (rows, cols) patch grid of the learned embedding; None means the grid of the
      images seen at init (then kept: later calls read it from the stored parameter).
    posemb_resize: how a learned table is resized to another grid (multi-crop: DINO's local
      crops have a smaller grid than the global ones): 'bilinear', or 'bicubic' as DINO's
      `interpolate_pos_encoding`. The sincos2d embedding is computed for the grid exactly.
    mask_token: create a learned [mask] embedding (zeros at init, as iBOT's `masked_embed`) so
      that `token_mask` can be passed; off by default so plain encoders carry no dead parameter.
    dropout: dropout rate after the position embedding and inside every block.
    drop_path: stochastic depth rate of the last block; block i of L drops its residual branches
      with rate drop_path * i / (L - 1), as timm's `VisionTransformer(drop_path_rate=...)`
      (DINO, iBOT, MAE fine-tuning). Needs a 'dropout' rng when training.
    dtype: compute dtype; parameters are always float32. The final LayerNorm runs in float32
      so `out` and aux['tokens'] are float32.
    remat: rematerialize each block in the backward pass (memory for compute).
    gelu_approximate: tanh-approximated GELU (big_vision's default); False gives the exact erf
      GELU of PyTorch/timm checkpoints (DINO, DINOv2, MAE), needed to reproduce them exactly.
    kernels: the ops of every block (`jaxssl.kernels`); not architecture: the parameters are
      the same for every choice.
  """

  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  patch_size: int | tuple[int, int] | None = None
  pool: str = "gap"
  posemb: str = "sincos2d"
  posemb_grid: tuple[int, int] | None = None
  posemb_resize: str = "bilinear"
  mask_token: bool = False
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  gelu_approximate: bool = True
  kernels: Kernels = REFERENCE

  def arch(self) -> dict[str, Any]:
    """The resolved architecture: the variant's table entry with explicit fields on top."""
    arch = decode_variant(self.variant) if self.variant is not None else {}
    for field in _ARCH_FIELDS:
      if getattr(self, field) is not None:
        arch[field] = getattr(self, field)
    missing = [f for f in _ARCH_FIELDS if f not in arch]
    if missing:
      raise ValueError(
        f'ViT is missing {missing}: set variant (e.g. "S/16", which also sets '
        "the patch size) or give these fields explicitly."
      )
    patch = arch["patch_size"]
    arch["patch_size"] = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if arch["width"] % arch["num_heads"]:
      raise ValueError(
        f"ViT width {arch['width']} is not divisible by num_heads "
        f"{arch['num_heads']}; change one of them."
      )
    if self.pool not in POOLS:
      raise ValueError(f"Unknown ViT pool {self.pool!r}; use one of {POOLS}.")
    if self.posemb not in POSEMBS:
      raise ValueError(f"Unknown ViT posemb {self.posemb!r}; use one of {POSEMBS}.")
    if self.posemb_resize not in POSEMB_RESIZES:
      raise ValueError(
        f"Unknown ViT posemb_resize {self.posemb_resize!r}; use one of {POSEMB_RESIZES}."
      )
    return arch

  def _position_embedding(self, grid_h, grid_w, width):
    """[grid_h * grid_w, width] embedding for the current patch grid."""
    if self.posemb == "sincos2d":
      return posemb_sincos_2d(grid_h, grid_w, width)
    if self.posemb_grid is not None:
      base_grid = tuple(self.posemb_grid)
    elif self.has_variable("params", "pos_embedding"):
      # Applying at a new resolution: keep the grid the parameter was created with.
      base_grid = nn.unbox(self.get_variable("params", "pos_embedding")).shape[:2]
    else:
      base_grid = (grid_h, grid_w)
    table = self.param(
      "pos_embedding",
      nn.with_logical_partitioning(
        nn.initializers.normal(stddev=1 / np.sqrt(width)), (None, None, "embed")
      ),
      (*base_grid, width),
      jnp.float32,
    )
    if base_grid != (grid_h, grid_w):
      table = jax.image.resize(table, (grid_h, grid_w, width), method=self.posemb_resize)
    return table.reshape(grid_h * grid_w, width)

  @nn.compact
  def __call__(self, images, *, train=False, keep_indices=None, token_mask=None):
    """Encodes images [B, H, W, C] into (out [B, width], aux).

    Args:
      images: [B, H, W, C] with H and W divisible by the patch size.
      train: enables dropout (needs a 'dropout' rng when dropout > 0).
      keep_indices: optional int [B, K] indices (row-major, into the H/p * W/p patches) of the
        patch tokens to keep; the others are dropped after the position embedding is added and
        before the blocks, as in the MAE encoder.
      token_mask: optional [B, N] bool/float, 1 where a patch is masked: its patch embedding
        is replaced by the learned [mask] token before the position embedding is added
        (iBOT's `prepare_tokens`, Zhou et al. 2022 sec. 3; BEiT). Needs mask_token=True.
        Combines with keep_indices (masking happens first).

    Returns:
      out: pooled representation [B, width] (float32).
      aux: 'pre_logits' (== out), 'tokens' [B, K or N, width] final-normed patch tokens
        (no [cls]), 'blocks' tuple of each block's output [B, T, width] (T includes [cls] if
        pool == 'cls'), 'num_patches' N = (H/p) * (W/p), 'patch_grid' (H/p, W/p).
    """
    arch = self.arch()
    width, (patch_h, patch_w) = arch["width"], arch["patch_size"]
    if images.ndim != 4:
      raise ValueError(f"ViT expects images [B, H, W, C], got shape {images.shape}.")
    batch, height, img_width = images.shape[:3]
    if height % patch_h or img_width % patch_w:
      raise ValueError(
        f"Image size {(height, img_width)} is not divisible by the patch size "
        f"{(patch_h, patch_w)}; resize/crop the images or change patch_size."
      )

    x = nn.Conv(
      width,
      (patch_h, patch_w),
      strides=(patch_h, patch_w),
      padding="VALID",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="embedding",
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, "embed")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    )(images.astype(self.dtype))
    _, grid_h, grid_w, _ = x.shape
    num_patches = grid_h * grid_w
    x = x.reshape(batch, num_patches, width)
    if self.mask_token:
      mask_embedding = self.param(
        "mask_token",
        nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        (width,),
        jnp.float32,
      )
    if token_mask is not None:
      if not self.mask_token:
        raise ValueError(
          "token_mask was given but the ViT has no [mask] token; build it with "
          "mask_token=True (e.g. encoder.clone(mask_token=True))."
        )
      if token_mask.shape != (batch, num_patches):
        raise ValueError(
          f"token_mask must be [B={batch}, N={num_patches}] (one entry per "
          f"patch, row-major), got shape {token_mask.shape}."
        )
      # A select, not a blend: a masked patch keeps nothing of its pixels.
      x = jnp.where(token_mask.astype(bool)[:, :, None], mask_embedding.astype(x.dtype), x)
    # Position embeddings go on before dropping, so kept tokens remember where they came from.
    x = x + self._position_embedding(grid_h, grid_w, width).astype(x.dtype)[None]

    if keep_indices is not None:
      if keep_indices.ndim != 2 or keep_indices.shape[0] != batch:
        raise ValueError(
          f"keep_indices must be int [B={batch}, K], got shape {keep_indices.shape}."
        )
      x = jnp.take_along_axis(x, keep_indices[:, :, None].astype(jnp.int32), axis=1)
    num_tokens = x.shape[1]

    if self.pool == "cls":
      cls = self.param(
        "cls",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
        (1, 1, width),
        jnp.float32,
      )
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, width)), x], 1)
    x = nn.Dropout(rate=self.dropout)(x, deterministic=not train)

    block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    blocks = []
    for i in range(arch["depth"]):
      # Explicit names: the parameter tree is the same with and without remat.
      x = block_cls(
        mlp_dim=arch["mlp_dim"],
        num_heads=arch["num_heads"],
        dropout=self.dropout,
        drop_path=self.drop_path * i / max(arch["depth"] - 1, 1),
        deterministic=not train,
        dtype=self.dtype,
        gelu_approximate=self.gelu_approximate,
        kernels=self.kernels,
        name=f"block_{i}",
      )(x)
      blocks.append(x)

    x = layer_norm(jnp.float32, name="encoder_norm")(x.astype(jnp.float32))
    tokens = x[:, -num_tokens:]
    out = x[:, 0] if self.pool == "cls" else jnp.mean(tokens, axis=1)
    aux = dict(
      pre_logits=out,
      tokens=tokens,
      blocks=tuple(blocks),
      num_patches=num_patches,
      patch_grid=(grid_h, grid_w),
    )
    return out, aux
