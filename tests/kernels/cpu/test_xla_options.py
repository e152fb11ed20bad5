"""xla_options: the compiler options take convolutions out of YNNPACK and leave its dots there,
only for a CPU mesh and only when the user's XLA_FLAGS do not choose for themselves."""

import jax
import jax.numpy as jnp

from jaxssl import kernels
from jaxssl.kernels.cpu import xla_options


def _conv_then_dot(x, kernel, weights):
  y = jax.lax.conv_general_dilated(
    x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return y.reshape(y.shape[0], -1) @ weights


def _optimized_hlo(options):
  # Channels enough for XLA to hand the convolution to YNNPACK by default (it keeps tiny ones).
  args = (jnp.zeros((2, 16, 16, 64)), jnp.zeros((3, 3, 64, 64)), jnp.zeros((16 * 16 * 64, 8)))
  return jax.jit(_conv_then_dot, compiler_options=options).lower(*args).compile().as_text()


def _ynn_fusions(hlo):
  """{fused computation of each YNNPACK fusion: whether it holds a convolution}."""
  computations, name = {}, None
  for line in hlo.splitlines():
    if line.startswith("%") and line.endswith("{"):  # a computation's header
      name = line.split(" ")[0][1:]
      computations[name] = ""
    elif name is not None:
      computations[name] += line + "\n"
      if line == "}":
        name = None
  names = {
    line.split("calls=%")[1].split(",")[0]
    for line in hlo.splitlines()
    if "__ynn_fusion" in line and "calls=%" in line
  }
  return {name: "convolution(" in computations[name] for name in names}


def test_options_keep_convolutions_out_of_ynnpack_and_dots_in_it(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  options = xla_options.compiler_options()
  assert options == {xla_options.YNN_FUSION_TYPE: xla_options.YNN_WITHOUT_CONVOLUTIONS}
  with_options = _optimized_hlo(options)
  assert "convolution(" in with_options  # XLA's own convolution, outside any YNN fusion
  fusions = _ynn_fusions(with_options)
  assert fusions and not any(fusions.values()), fusions  # a YNN fusion remains: the dot
  # jaxlib's default, what the options are there to change (if this fails, a new jaxlib
  # changed its default YNN fusion types: re-measure and update YNN_WITHOUT_CONVOLUTIONS).
  assert any(_ynn_fusions(_optimized_hlo(None)).values())


def test_options_only_on_cpu_and_never_over_the_users_xla_flags(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  for platform in ("gpu", "cuda", "rocm", "tpu"):
    assert kernels.for_platform(platform).compiler_options() == {}
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  assert kernels.compiler_options(mesh) == xla_options.CPU_OPTIONS
  monkeypatch.setenv(
    "XLA_FLAGS",
    f"--xla_force_host_platform_device_count=8 --{xla_options.YNN_FUSION_TYPE}=+individual_convolution",
  )
  assert xla_options.compiler_options() == {}
  assert kernels.compiler_options(mesh) == {}


def test_an_option_the_jaxlib_rejects_falls_back_to_none(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(xla_options, "CPU_OPTIONS", {xla_options.YNN_FUSION_TYPE: "NO_SUCH_TYPE"})
  xla_options.supported.cache_clear()
  try:
    assert not xla_options.supported()
    assert xla_options.compiler_options() == {}
  finally:
    xla_options.supported.cache_clear()


def test_dot_operand_types_reads_fused_and_top_level_dots():
  # Abridged from a compiled bf16 weight gradient that XLA upcast: a convert fusion feeding a
  # fused float32 dot, and a top-level bf16 dot.
  text = """
%fused_computation (param_0: f32[384,12544], param_1.2: f32[12544,1536]) -> f32[384,1536] {
  %param_0 = f32[384,12544]{1,0} parameter(0)
  %param_1.2 = f32[12544,1536]{1,0} parameter(1)
  ROOT %dot_general.0 = f32[384,1536]{1,0} dot(%param_0, %param_1.2), lhs_contracting_dims={1}
}
ENTRY %main (x.1: bf16[12544,384], w.1: bf16[384,1536]) -> f32[12544,1536] {
  %x.1 = bf16[12544,384]{1,0} parameter(0)
  %w.1 = bf16[384,1536]{1,0} parameter(1)
  ROOT %dot.3 = f32[12544,1536]{1,0} dot(%x.1, %w.1), lhs_contracting_dims={1}
}
"""
  assert xla_options.dot_operand_types(text) == [("f32", "f32"), ("bf16", "bf16")]
