"""MLP heads put on top of an encoder: projection heads and predictors.

SimCLR (Chen et al. 2020, sec. 2.1) maps representations h to z = g(h) with an MLP before the
contrastive loss; SimCLR v2 uses 3 layers, BYOL (Grill et al. 2020, sec. 3.3) and MoCo v3 use
Linear-BN-ReLU hidden layers, and BYOL's predictor q is the same MLP shape applied to the
projection. Hidden layers are Dense -> BN -> ReLU; the last layer is linear, optionally
followed by a BN without offset: without scale either in MoCo v3 and SimSiam
(`BatchNorm1d(affine=False)`), with a learned scale in SimCLR's TF2 code (`model.py`
`LinearLayer(use_bias=False, use_bn=True)` -> `BatchNormRelu(center=False, scale=True)`).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.kernels import REFERENCE, Kernels


class ProjectionHead(nn.Module):
  """MLP: (num_layers - 1) x [Dense(hidden_dim) -> BN -> ReLU] then Dense(out_dim) [-> BN].

  Attributes:
    hidden_dim: width of the hidden layers.
    out_dim: output width.
    num_layers: number of Dense layers (1 = linear projection; SimCLR v1 2, SimCLR v2 3).
    use_bn: BatchNorm on hidden layers (their Dense then has no bias: BN's beta replaces it).
    final_bn: BatchNorm without offset on the output (MoCo v3, SimSiam, SimCLR).
    final_bias: bias of the last Dense; None (the default) means "only without final_bn".
      BYOL's projector and predictor have none (`networks.py` MLP, `with_bias=False`).
    final_bn_scale: the final BN has a learned scale (SimCLR's TF2 head); False: no affine
      parameters at all (MoCo v3, SimSiam).
    dtype: compute dtype; parameters, BN statistics and the output are float32.

  BN statistics are in 'batch_stats' (apply with mutable=['batch_stats'] when train=True).
  """

  hidden_dim: int
  out_dim: int
  num_layers: int = 2
  use_bn: bool = True
  final_bn: bool = False
  final_bias: bool | None = None
  final_bn_scale: bool = False
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE  # jaxssl.kernels; the parameters are the same for every choice

  def _dense(self, features, in_name, out_name, use_bias, name):
    # Logical names of layers inside the MLP: the input side of the first layer is the
    # encoder width ('embed'); hidden units are 'mlp'; the output is treated as 'embed'.
    # Middle layers are ('mlp', None): flax rejects a name used twice in one spec.
    return self.kernels.dense(
      features,
      use_bias=use_bias,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (in_name, out_name)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_name,)),
    )

  def _batch_norm(self, train, name, *, scale, offset):
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      use_scale=scale,
      use_bias=offset,
      name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
    )

  @nn.compact
  def __call__(self, x, *, train=False):
    """Maps x [..., D] to [..., out_dim] (BN statistics over all leading axes)."""
    if self.num_layers < 1:
      raise ValueError(f"ProjectionHead needs num_layers >= 1, got {self.num_layers}.")
    if self.final_bn_scale and not self.final_bn:
      raise ValueError("ProjectionHead: final_bn_scale=True needs final_bn=True.")
    x = x.astype(self.dtype)
    for i in range(self.num_layers - 1):
      x = self._dense(
        self.hidden_dim,
        "embed" if i == 0 else "mlp",
        "mlp" if i == 0 else None,
        use_bias=not self.use_bn,
        name=f"dense_{i}",
      )(x)
      if self.use_bn:
        x = self._batch_norm(train, f"bn_{i}", scale=True, offset=True)(x)
      x = nn.relu(x)
    last = self.num_layers - 1
    in_name, out_name = ("mlp", "embed") if last else ("embed", "mlp")
    final_bias = not self.final_bn if self.final_bias is None else self.final_bias
    x = self._dense(self.out_dim, in_name, out_name, use_bias=final_bias, name=f"dense_{last}")(x)
    if self.final_bn:
      x = self._batch_norm(train, f"bn_{last}", scale=self.final_bn_scale, offset=False)(x)
    # float32 out, like the encoders: losses on normalized embeddings need the precision.
    return x.astype(jnp.float32)


# BYOL's predictor q_theta (Grill et al. 2020, sec. 3.3) is the same MLP as the projector:
# Linear(4096) -> BN -> ReLU -> Linear(256). One class, two names for readability at call sites.
PredictionHead = ProjectionHead
