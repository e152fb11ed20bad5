"""The backend layer: the ops models are built with, picked once from the mesh's platform.

Model code (`jaxssl.models`) is the reference path: `nn.Dense`, `lax.conv_general_dilated`,
`nn.max_pool`, `jax.nn.dot_product_attention`, GELU in the compute dtype. Those are what TPU and
GPU run, and what every module uses unless it is given other ops. A `Kernels` is that set of
ops; each model module takes one as its `kernels` attribute (the way Flax's ResNet example takes
`conv: ModuleDef` and MaxText layers take a `dot_general` / an attention op) and passes it down.

`for_mesh(mesh)` picks the set for the platform of the devices a computation runs on
(`mesh.devices.flat[0].platform`), never `jax.default_backend()`: a step built for a TPU mesh, or
exported for TPU from a CPU host, is the reference program whatever the host is. Only XLA:CPU has
its own kernels (`jaxssl.kernels.cpu`; why each exists: docs/performance_cpu.md). The trainer
and the eval job call `for_mesh` once and hand the result to `methods.build`;
`compiler_options(mesh)` is the one hook `jax.jit` asks for compiler options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxssl.kernels import reference

ModuleDef = Any


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The ops a model is built with. Every implementation computes the same function with the
  same parameters (names, shapes, init), so checkpoints move freely between backends.

  Attributes:
    name: 'reference' or the backend ('cpu').
    dense: a `flax.linen.Dense`-compatible module (same constructor, the same 'kernel'/'bias').
    dot_general: `lax.dot_general`-compatible; the einsums of attention projections and LM
      heads use it (`jnp.einsum(..., _dot_general=...)`).
    accumulate_dtype: `preferred_element_type` of those einsums: None (the compute dtype) or
      float32 (the product kept in float32 for the bias add, then rounded once).
    attention: `(query, key, value, *, is_causal) -> out`, all [batch, length, heads, head_dim],
      softmax(q k^T / sqrt(head_dim)) v (`jax.nn.dot_product_attention`'s contract).
    gelu: `(x, *, approximate) -> gelu(x)` in x's dtype.
    conv: a bias-free `flax.linen.Conv`-compatible module (features, kernel_size, strides,
      padding, dtype, param_dtype, kernel_init; a 'kernel' [kh, kw, C_in, C_out]).
    max_pool: `(x, window_shape, strides, padding) -> y` over [B, H, W, C], -inf padding.
    compiler_options: `() -> dict` of `jax.jit` compiler options for this backend.
    host_advice: `() -> str | None`, one line the trainer logs when the host set-up slows this
      backend down (XLA:CPU under glibc malloc), else None.
  """

  name: str = "reference"
  dense: ModuleDef = reference.Dense
  dot_general: Callable[..., jax.Array] = reference.dot_general
  accumulate_dtype: Any = None
  attention: Callable[..., jax.Array] = reference.attention
  gelu: Callable[..., jax.Array] = reference.gelu
  conv: ModuleDef = reference.Conv
  max_pool: Callable[..., jax.Array] = reference.max_pool
  compiler_options: Callable[[], Mapping[str, str]] = dict
  host_advice: Callable[[], str | None] = lambda: None


REFERENCE = Kernels()


def for_platform(platform: str) -> Kernels:
  """The kernels for devices of `platform` ('cpu', 'gpu', 'cuda', 'rocm', 'tpu', ...).

  'cpu' gets `jaxssl.kernels.cpu.KERNELS`; every other platform the reference path.
  """
  if platform == "cpu":
    from jaxssl.kernels import cpu  # pylint: disable=g-import-not-at-top

    return cpu.KERNELS
  return REFERENCE


def platform(mesh: jax.sharding.Mesh) -> str:
  """The platform ('cpu', 'gpu', 'tpu', ...) of `mesh`'s devices (all of one platform)."""
  return mesh.devices.flat[0].platform


def for_mesh(mesh: jax.sharding.Mesh) -> Kernels:
  """The kernels for a computation on `mesh`'s devices."""
  return for_platform(platform(mesh))


def compiler_options(mesh: jax.sharding.Mesh) -> dict[str, str]:
  """`jax.jit(..., compiler_options=...)` for a computation on `mesh`'s devices."""
  return dict(for_mesh(mesh).compiler_options())
