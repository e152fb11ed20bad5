"""XLA:CPU kernels: the same functions as the reference ops, in the forms XLA:CPU runs fast.

Each exists because the reference form measured slower on XLA:CPU (docs/performance_cpu.md has
the figures and the commands): bf16 GEMMs that accumulate in float32 (`matmul`), GEMM gradients
of strided convolutions (`conv`), a strided-slice max-pool (`pooling`), heads-first attention
(`attention`), GELU in float32 (XLA:CPU's bf16 elementwise code is slower than its float32
code), the compiler options of the jitted steps (`xla_options`) and the host-allocator check
(`host_malloc`). `jaxssl.kernels.for_mesh` picks `KERNELS` for a mesh of CPU devices only.
"""

import jax
import jax.numpy as jnp

from jaxssl.kernels import Kernels
from jaxssl.kernels import reference
from jaxssl.kernels.cpu import attention
from jaxssl.kernels.cpu import conv
from jaxssl.kernels.cpu import host_malloc
from jaxssl.kernels.cpu import matmul
from jaxssl.kernels.cpu import pooling
from jaxssl.kernels.cpu import xla_options


def gelu_float32(x, *, approximate: bool = True) -> jax.Array:
  """GELU computed in float32 and returned in x's dtype."""
  return reference.gelu(x.astype(jnp.float32), approximate=approximate).astype(x.dtype)


KERNELS = Kernels(
  name="cpu",
  dense=matmul.Dense,
  dot_general=matmul.dot_general,
  accumulate_dtype=jnp.float32,
  attention=attention.heads_first_attention,
  gelu=gelu_float32,
  conv=conv.Conv2D,
  max_pool=pooling.max_pool,
  compiler_options=xla_options.compiler_options,
  host_advice=host_malloc.advice,
)
