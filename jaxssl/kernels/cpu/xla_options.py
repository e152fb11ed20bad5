"""XLA:CPU compiler options for jaxssl's jitted steps: convolutions kept out of YNNPACK.

jaxlib 0.10 hands dots, reductions and convolutions to YNNPACK by default (the DebugOptions
field `xla_cpu_experimental_ynn_fusion_type`). Its convolutions measured slower than XLA:CPU's
own convolution emitter on every ResNet-18 layer, forward and both gradients, about 2x on the
whole ResNet-18 step (benchmarks/conv_lowering.py; docs/performance_cpu.md, "ResNet on CPU").
Its dots and reductions stay in YNNPACK, where they are fast.

`compiler_options()` is `jaxssl.kernels.cpu.KERNELS.compiler_options`, what `jax.jit` gets for a
CPU mesh through `jaxssl.kernels.compiler_options(mesh)`: the option, or nothing when the user's
XLA_FLAGS already set the field (their choice wins) or the installed jaxlib does not know the
option (a warning is logged once).
"""

import functools
import os
import re

from absl import logging
import jax
import jax.numpy as jnp

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib 0.10.2's default YNN fusion types less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
# Compiler options take the whole list of enum names (XLA_FLAGS's '-individual_convolution'
# form is rejected there), so a later jaxlib adding a default type would need it added here.
YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
CPU_OPTIONS = {YNN_FUSION_TYPE: YNN_WITHOUT_CONVOLUTIONS}


@functools.cache
def supported() -> bool:
  """Whether this jaxlib's CPU compiler accepts CPU_OPTIONS (one tiny compile, cached)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(
      jnp.zeros((), jnp.float32)
    ).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning(
      "XLA:CPU option %s=%s not accepted by jax %s (%s): convolutions stay in "
      "YNNPACK, which measured up to 2x slower for ResNet training.",
      YNN_FUSION_TYPE,
      YNN_WITHOUT_CONVOLUTIONS,
      jax.__version__,
      str(e).splitlines()[0],
    )
    return False
  return True


def compiler_options() -> dict[str, str]:
  """`jax.jit` compiler options for computations on XLA:CPU."""
  if YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
    return {}
  return dict(CPU_OPTIONS) if supported() else {}


def dot_operand_types(hlo_text: str) -> list[tuple[str, str]]:
  """(lhs, rhs) element types ('bf16', 'f32', ...) of every dot in compiled HLO text.

  Dots inside fusions count too; their operands are the fused computation's parameters. Shows
  whether a bf16 dot kept bf16 operands or XLA upcast it to a float32 GEMM (jaxssl.kernels.cpu.matmul).
  """
  types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo_text))
  for name, dtype in re.findall(r"\(?%?([\w.\-]+): (\w+)\[", hlo_text):  # computation params
    types.setdefault(name, dtype)
  return [
    (types[a], types[b]) for a, b in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo_text)
  ]
