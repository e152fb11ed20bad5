"""MLP heads put on top of an encoder: projection heads and predictors.

SimCLR (Chen et al. 2020, sec. 2.1) maps representations h to z = g(h) with an MLP before the
contrastive loss; SimCLR v2 uses 3 layers, BYOL (Grill et al. 2020, sec. 3.3) and MoCo v3 use
Linear-BN-ReLU hidden layers, and BYOL's predictor q is the same MLP shape applied to the
projection. Hidden layers are Dense -> BN -> ReLU; the last layer is linear, optionally
followed by a BN without affine parameters (MoCo v3 / SimCLR's final BN).
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
    num_layers: number of Dense layers (1 = linear projection; SimCLR 2, SimCLR v2 3).
    use_bn: BatchNorm on hidden layers (their Dense then has no bias: BN's beta replaces it).
    final_bn: BatchNorm without scale/bias on the output (MoCo v3, SimCLR).
    dtype: compute dtype; parameters, BN statistics and the output are float32.

  BN statistics are in 'batch_stats' (apply with mutable=['batch_stats'] when train=True).
  """

  hidden_dim: int
  out_dim: int
  num_layers: int = 2
  use_bn: bool = True
  final_bn: bool = False
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

  def _batch_norm(self, train, affine, name):
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      use_scale=affine,
      use_bias=affine,
      name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
    )

  @nn.compact
  def __call__(self, x, *, train=False):
    """Maps x [..., D] to [..., out_dim] (BN statistics over all leading axes)."""
    if self.num_layers < 1:
      raise ValueError(f"ProjectionHead needs num_layers >= 1, got {self.num_layers}.")
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
        x = self._batch_norm(train, affine=True, name=f"bn_{i}")(x)
      x = nn.relu(x)
    last = self.num_layers - 1
    in_name, out_name = ("mlp", "embed") if last else ("embed", "mlp")
    x = self._dense(
      self.out_dim, in_name, out_name, use_bias=not self.final_bn, name=f"dense_{last}"
    )(x)
    if self.final_bn:
      x = self._batch_norm(train, affine=False, name=f"bn_{last}")(x)
    # float32 out, like the encoders: losses on normalized embeddings need the precision.
    return x.astype(jnp.float32)


# BYOL's predictor q_theta (Grill et al. 2020, sec. 3.3) is the same MLP as the projector:
# Linear(4096) -> BN -> ReLU -> Linear(256). One class, two names for readability at call sites.
PredictionHead = ProjectionHead
