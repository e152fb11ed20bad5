"""Text transformer (Flax Linen): BERT / GPT-2 encoder and the CLIP text tower.

Token embedding + position embedding (learned, GPT-2 / BERT; or fixed 1-D sin-cos, Vaswani et
al. 2017 sec. 3.5), `depth` pre-LN blocks shared with the ViT (vit.EncoderBlock: x + MHSA(LN(x)),
x + MLP(LN(x)); `causal=True` masks attention so position t sees positions <= t only, GPT),
a final LayerNorm (GPT-2 sec. 2.3), and an LM head that is either the transposed token
embedding (tied, Press & Wolf 2017; BERT and GPT-2) or its own [embed, vocab] matrix, with an
output bias (BERT) or without (GPT-2), optionally after BERT's head transform Dense -> GELU ->
LayerNorm (google-research/bert `run_pretraining.py::get_masked_lm_output`, l.245-264).

Block initialisation (`init_scheme`): 'big_vision' (the ViT's xavier-uniform kernels, near-zero
MLP biases) or 'gpt2': every block kernel ~ N(0, 0.02), the two residual output projections
(attention out, MLP out) ~ N(0, 0.02 / sqrt(2 depth)), zero biases (karpathy/nanoGPT
`model.py` `_init_weights` l.162-168 and `c_proj` l.142-145, the GPT-2 paper's scaled init).

Interface mirrors vit.ViT: `__call__(tokens) -> (pooled, aux)` with aux['tokens'] the final
normed features [B, T, D], aux['logits'] [B, T, V] (when lm_head) and aux['blocks']. The pooled
[B, D] vector is the text-tower output used by CLIP / SigLIP and by the eval job:
  'eos'  : features at the first `eos_id` token (CLIP's EOT pooling; with a causal mask it is the
           one position that has seen the whole text), the last position if there is none;
  'last' : features at the last position;
  'first': features at position 0 (BERT's [CLS]);
  'mean' : mean over positions that are not `pad_id` (all positions if pad_id is None).

Parameters carry the ViT's logical axis names ('vocab', 'embed', 'heads', 'kv', 'mlp', 'norm'),
so jaxssl/parallel.py's rules shard them the same way (FSDP on embed, tensor parallel on heads,
mlp and vocab).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.kernels import REFERENCE, Kernels
from jaxssl.models.vit import EncoderBlock, decode_variant, layer_norm

POOLS = ("eos", "last", "first", "mean")
POSEMBS = ("learn", "sincos1d")
INIT_SCHEMES = ("big_vision", "gpt2")
_GPT2_STD = 0.02
# The residual branch's output projections in vit.EncoderBlock, which GPT-2 scales by depth.
_RESIDUAL_OUT_KERNELS = ("SelfAttention_0/out_kernel", "MlpBlock_0/Dense_1/kernel")


def _gpt2_block_init(variables, key, depth: int):
  """A block's params with GPT-2's init: kernels ~ N(0, 0.02), residual output kernels
  ~ N(0, 0.02 / sqrt(2 depth)), biases 0; LayerNorms keep theirs. `variables` are the block's
  freshly initialised (possibly logically boxed) variables."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables, is_leaf=is_box)
  keys = jax.random.split(key, max(len(leaves), 1))
  redrawn = []
  for (path, leaf), leaf_key in zip(leaves, keys):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    value = leaf.unbox() if is_box(leaf) else leaf
    if "LayerNorm" in name:
      new = value
    elif name.endswith("kernel"):
      std = _GPT2_STD
      if name.endswith(_RESIDUAL_OUT_KERNELS):
        std /= np.sqrt(2.0 * depth)
      new = std * jax.random.normal(leaf_key, value.shape, value.dtype)
    elif name.endswith("bias"):
      new = jnp.zeros_like(value)
    else:
      raise ValueError(f"gpt2 init: no rule for block parameter {name!r}.")
    redrawn.append(leaf.replace_boxed(new) if is_box(leaf) else new)
  return jax.tree_util.tree_unflatten(treedef, redrawn)


def posemb_sincos_1d(length: int, width: int) -> jax.Array:
  """Fixed sinusoidal position embedding (Vaswani et al. 2017, sec. 3.5), [length, width].

  PE[p, 2i] = sin(p / 10000^(2i / width)), PE[p, 2i + 1] = cos(p / 10000^(2i / width)).
  """
  if width % 2:
    raise ValueError(
      f"sincos1d position embedding needs an even width, got {width}; change "
      "the width or use posemb='learn'."
    )
  pos = np.arange(length, dtype=np.float64)[:, None]
  inv_freq = 1.0 / (10_000.0 ** (np.arange(0, width, 2, dtype=np.float64) / width))
  table = np.zeros((length, width))
  table[:, 0::2] = np.sin(pos * inv_freq)
  table[:, 1::2] = np.cos(pos * inv_freq)
  return jnp.asarray(table, jnp.float32)


class Transformer(nn.Module):
  """Token-sequence transformer; see the module docstring.

  Attributes:
    vocab_size: number of token ids (the tokenizer's `vocab_size`).
    max_len: longest sequence the position embedding covers.
    variant: ViT size name ('mu', 'Ti', 'S', 'M', 'B', 'L', ...) giving width / depth / mlp_dim
      / num_heads; any of those four given explicitly overrides the variant.
    causal: autoregressive attention mask (GPT, CLIP text); False is bidirectional (BERT).
    posemb: 'learn' (GPT-2 / BERT) or 'sincos1d'.
    tie_embeddings: LM head = token embedding transposed; False gives a separate head matrix.
    lm_head: compute aux['logits']; off for a pure text tower (CLIP) so it holds no dead head.
    head_bias: a [vocab] output bias on the logits (BERT's `output_bias`); GPT-2 has none.
    lm_transform: BERT's MLM head transform, LayerNorm(GELU(Dense_width(x))), between the final
      features and the tied decoder; aux['tokens'] and the pooled output stay before it.
    init_scheme: block initialisation, one of INIT_SCHEMES (module docstring).
    pool: how the pooled [B, D] output is read off, one of POOLS.
    eos_id / pad_id: token ids used by pool='eos' / pool='mean'.
  """

  vocab_size: int
  max_len: int
  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  causal: bool = False
  posemb: str = "learn"
  tie_embeddings: bool = True
  lm_head: bool = True
  pool: str = "last"
  eos_id: int | None = None
  pad_id: int | None = None
  dropout: float = 0.0
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE  # jaxssl.kernels; the parameters are the same for every choice
  remat: bool = False
  gelu_approximate: bool = True
  head_bias: bool = True
  lm_transform: bool = False
  init_scheme: str = "big_vision"

  @property
  def arch(self) -> dict[str, int]:
    arch = decode_variant(self.variant) if self.variant else {}
    for key in ("width", "depth", "mlp_dim", "num_heads"):
      if getattr(self, key) is not None:
        arch[key] = getattr(self, key)
    missing = [k for k in ("width", "depth", "mlp_dim", "num_heads") if k not in arch]
    if missing:
      raise ValueError(f'Transformer needs a variant (e.g. "S") or explicit {missing}.')
    if arch["width"] % arch["num_heads"]:
      raise ValueError(f"width {arch['width']} is not divisible by num_heads {arch['num_heads']}.")
    return arch

  def _check(self, tokens):
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, length] integer ids, got shape {tokens.shape}.")
    if tokens.shape[1] > self.max_len:
      raise ValueError(
        f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}; "
        "raise model max_len or shorten the sequences."
      )
    if self.pool not in POOLS:
      raise ValueError(f"Unknown pool {self.pool!r}; choose one of {POOLS}.")
    if self.posemb not in POSEMBS:
      raise ValueError(f"Unknown posemb {self.posemb!r}; choose one of {POSEMBS}.")
    if self.pool == "eos" and self.eos_id is None:
      raise ValueError("pool='eos' needs eos_id (the tokenizer's end-of-sequence id).")
    if self.init_scheme not in INIT_SCHEMES:
      raise ValueError(f"Unknown init_scheme {self.init_scheme!r}; choose one of {INIT_SCHEMES}.")

  def _pool(self, x, tokens):
    length = tokens.shape[1]
    if self.pool == "first":
      return x[:, 0]
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "eos":
      is_eos = tokens == self.eos_id
      index = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), length - 1)
      return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
    weights = (
      jnp.ones(tokens.shape, x.dtype)
      if self.pad_id is None
      else (tokens != self.pad_id).astype(x.dtype)
    )
    return jnp.einsum("btd,bt->bd", x, weights) / jnp.maximum(
      jnp.sum(weights, axis=1, keepdims=True), 1.0
    )

  @nn.compact
  def __call__(self, tokens, *, train=False):
    tokens = jnp.asarray(tokens)
    self._check(tokens)
    arch = self.arch
    width, length = arch["width"], tokens.shape[1]
    embedding = self.param(
      "token_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
      (self.vocab_size, width),
      jnp.float32,
    )
    x = jnp.take(embedding, tokens, axis=0).astype(self.dtype)
    if self.posemb == "learn":
      positions = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.01), (None, "embed")),
        (self.max_len, width),
        jnp.float32,
      )
      x = x + positions[:length].astype(self.dtype)
    else:
      x = x + posemb_sincos_1d(length, width).astype(self.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = nn.Dropout(rate=self.dropout)(x, deterministic=not train)

    block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    # GPT-2 init: the blocks (vit.EncoderBlock) create their params with the ViT's initialisers,
    # and on init they are redrawn on the way out (keys from this module's 'params' stream).
    redraw = self.init_scheme == "gpt2" and self.is_initializing()
    blocks_key = self.make_rng("params") if redraw else None
    blocks = []
    for i in range(arch["depth"]):
      cls = block_cls
      if redraw:
        cls = nn.map_variables(
          EncoderBlock,
          "params",
          trans_out_fn=functools.partial(
            _gpt2_block_init, key=jax.random.fold_in(blocks_key, i), depth=arch["depth"]
          ),
          init=True,
          mutable=True,
        )
        cls = nn.remat(cls) if self.remat else cls
      x = cls(
        mlp_dim=arch["mlp_dim"],
        num_heads=arch["num_heads"],
        dropout=self.dropout,
        deterministic=not train,
        dtype=self.dtype,
        gelu_approximate=self.gelu_approximate,
        is_causal=self.causal,
        kernels=self.kernels,
        name=f"block_{i}",
      )(x)
      blocks.append(x)
    x = layer_norm(jnp.float32, name="encoder_norm")(x.astype(jnp.float32))
    aux = dict(tokens=x, blocks=tuple(blocks))
    if self.lm_head:
      if self.tie_embeddings:
        head = embedding
      else:
        head = self.param(
          "head_kernel",
          nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
          (self.vocab_size, width),
          jnp.float32,
        )
      h = x
      if self.lm_transform:
        # BERT's `transform` scope: dense(hidden, gelu, truncated_normal(0.02)), layer_norm.
        h = self.kernels.dense(
          width,
          dtype=self.dtype,
          param_dtype=jnp.float32,
          kernel_init=nn.with_logical_partitioning(
            nn.initializers.truncated_normal(stddev=0.02), ("embed", "mlp")
          ),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
          name="lm_transform",
        )(x.astype(self.dtype))
        h = self.kernels.gelu(h, approximate=self.gelu_approximate)
        h = layer_norm(jnp.float32, name="lm_transform_norm")(h.astype(jnp.float32))
      logits = jnp.einsum(
        "btd,vd->btv",
        h.astype(self.dtype),
        head.astype(self.dtype),
        _dot_general=self.kernels.dot_general,
      ).astype(jnp.float32)
      if self.head_bias:
        logits = logits + self.param(
          "head_bias",
          nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
          (self.vocab_size,),
          jnp.float32,
        )
      aux["logits"] = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return self._pool(x, tokens), aux
