"""DINO projection head (Caron et al. 2021, sec. 3.1 and appendix; the official `DINOHead`).

  x -> Linear(hidden) -> GELU -> Linear(hidden) -> GELU -> Linear(bottleneck)
    -> L2 normalise -> weight-normalised Linear(bottleneck -> K prototypes, no bias).

The last layer is `torch.nn.utils.weight_norm`: W = g * V / ||V|| with one norm per prototype
(output unit). DINO's `norm_last_layer=True` fixes g to 1, so the logits are cosines between
the L2-normalised bottleneck and the normalised prototypes; with `norm_last_layer=False` g is a
learned per-prototype scale initialised to 1. Because only V's direction matters, weight decay
on V does not change the head's function.

Initialisation as the official code: truncated normal (std 0.02) MLP kernels and zero biases;
the last layer keeps PyTorch's default Linear init (kaiming-uniform, bound 1 / sqrt(fan_in)).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.kernels import REFERENCE, Kernels

_NORM_EPS = 1e-12  # F.normalize's eps


def _l2_normalize(x, axis):
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, _NORM_EPS)


def _torch_linear_init(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear's default weight init for a [fan_in, fan_out] kernel."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class DINOHead(nn.Module):
  """DINO head: MLP to a bottleneck, L2 normalisation, weight-normalised prototype layer.

  Attributes:
    out_dim: K, the number of prototypes (65536 for ViT-S/16 in the paper).
    hidden_dim: width of the hidden layers (2048).
    bottleneck_dim: width before the L2 normalisation (256).
    num_layers: Linear layers before the bottleneck normalisation, including the bottleneck
      projection (3; 1 means a single Linear to the bottleneck).
    norm_last_layer: fix the weight norm's g to 1 (True in DINO's defaults).
    dtype: compute dtype of the MLP; the normalisation and the logits are float32.

  Returns logits [..., out_dim] (float32) for x [..., D].
  """

  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  norm_last_layer: bool = True
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE  # jaxssl.kernels; the parameters are the same for every choice

  def _dense(self, features, axes, name):
    return self.kernels.dense(
      features,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.truncated_normal(stddev=0.02), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
    )

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train  # No BatchNorm or dropout (DINO's use_bn_in_head=False default).
    if self.num_layers < 1:
      raise ValueError(f"DINOHead needs num_layers >= 1, got {self.num_layers}.")
    x = x.astype(self.dtype)
    # Logical names as ProjectionHead: input 'embed', hidden 'mlp', middle layers
    # ('mlp', None) because a name may appear only once per spec.
    for i in range(self.num_layers - 1):
      axes = ("embed", "mlp") if i == 0 else ("mlp", None)
      x = self.kernels.gelu(self._dense(self.hidden_dim, axes, f"dense_{i}")(x), approximate=False)
    last = self.num_layers - 1
    x = self._dense(
      self.bottleneck_dim, ("mlp", "embed") if last else ("embed", "mlp"), f"dense_{last}"
    )(x)
    x = _l2_normalize(x.astype(jnp.float32), -1)
    direction = self.param(
      "last_layer_v",
      nn.with_logical_partitioning(_torch_linear_init, (None, "vocab")),
      (self.bottleneck_dim, self.out_dim),
      jnp.float32,
    )
    kernel = _l2_normalize(direction, 0)  # one unit-norm column per prototype
    if not self.norm_last_layer:
      scale = self.param(
        "last_layer_g",
        nn.with_logical_partitioning(nn.initializers.ones, ("vocab",)),
        (self.out_dim,),
        jnp.float32,
      )
      kernel = kernel * scale
    return x @ kernel
