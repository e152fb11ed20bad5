"""bfloat16 matrix multiplies that accumulate in float32 and stay on XLA:CPU's fast path.

Mixed precision (`model.dtype='bfloat16'`) makes every Dense layer a bf16 x bf16 -> bf16 dot.
On XLA:CPU (jaxlib 0.10, whose dots go to YNNPACK) such a dot runs on the AMX tiles or
AVX512-BF16 only when

  * it accumulates and returns float32 (`preferred_element_type=float32`); a bf16-output dot is
    upcast to float32 operands and runs as a float32 GEMM, and
  * its left operand contracts its minor (last) dimension. A weight gradient dW = x^T g contracts
    the batch (major) dimension of both operands, and XLA folds a plain `x.T` into the dot's
    dimension numbers, so every weight gradient autodiff writes is upcast too.

`dot_general` below is a drop-in for `lax.dot_general` (`jnp.einsum(..., _dot_general=...)`)
with the same result up to rounding: it flattens an eligible product to one [M, K] x [K, N]
GEMM whose forward and both gradients are float32-accumulating bf16 dots in the supported
form, with the transpose the weight gradient needs done as a real (materialised) copy. `Dense`
is `nn.Dense` with the same parameters that uses it and adds its bias in float32.
`benchmarks/bf16_dense.py` times both against float32 and autodiff's bf16
(docs/performance_cpu.md, "bfloat16").

`batched_matmul` does the same for attention's two batched products.

Anything else (float32 operands, batch dimensions in `dot_general`, mixed dtypes, an output
dtype other than the operands' or float32, an odd row count) goes to `lax.dot_general`
unchanged. These are XLA:CPU kernels (`jaxssl.kernels.cpu`): on GPUs and TPUs a bf16 dot already
accumulates in float32 in the matrix unit, and the extra transposes would cost memory bandwidth.
"""

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def is_low_precision(dtype) -> bool:
  """Whether `dtype` is a compute dtype these GEMMs handle (bfloat16, float16)."""
  return jnp.dtype(dtype) in LOW_PRECISION


def is_materializable(rows: int) -> bool:
  """Whether `materialized_transpose` can transpose a matrix of `rows` rows (even, >= 4)."""
  return rows % 2 == 0 and rows >= 4


def materialized_transpose(x: jax.Array) -> jax.Array:
  """x with its last two dimensions swapped, as a copy XLA cannot fold into the consuming dot.

  A plain transpose becomes a layout change that leaves the dot contracting a major dimension
  (upcast to float32 on XLA:CPU). Leading dimensions (a batch) stay in place.
  """
  return materialized_swapaxes(x, x.ndim - 2)


def materialized_swapaxes(x: jax.Array, axis: int) -> jax.Array:
  """x with dimensions `axis` and `axis + 1` swapped, written out as a copy.

  XLA folds a plain transpose into its neighbours' layouts, and XLA:CPU upcasts a bf16 dot
  whose operand or output is not row-major (its YNNPACK dots need row-major). Splitting the
  swapped rows and merging them back after the transpose is not expressible as a layout of x,
  so layout assignment writes the transposed array out.
  """
  shape = x.shape
  rows = shape[axis]
  if not is_materializable(rows):
    raise ValueError(
      f"materialized_swapaxes needs an even row count of at least 4, got "
      f"{rows} rows (dimension {axis} of {shape})."
    )
  # At least two row groups: a split into one group is a bitcast XLA folds away again.
  split = next(c for c in (16, 8, 4, 2) if rows % c == 0 and rows // c > 1)
  x = x.reshape(shape[:axis] + (rows // split, split) + shape[axis + 1 :])
  perm = list(range(axis)) + [axis + 2, axis, axis + 1] + list(range(axis + 3, x.ndim))
  return x.transpose(perm).reshape(shape[:axis] + (shape[axis + 1], rows) + shape[axis + 2 :])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul_f32_accumulate(
  a: jax.Array, b: jax.Array, b_transposed: bool, out_dtype=None
) -> jax.Array:
  """a @ b (a [..., M, K]; b [..., K, N], or [..., N, K] when b_transposed) accumulated in float32.

  Leading dimensions, the same on both, are a batch (attention's [batch, heads]). Returned in
  `out_dtype` (default: a's dtype). Gradients are computed the same way, from the cotangent
  rounded to a's dtype, and returned in the operands' dtypes; they transpose an operand or the
  cotangent over its M rows, so M must be even and at least 4
  (`is_materializable`).
  """
  return _batched_dot(a, b, _k_dim(b, b_transposed)).astype(out_dtype or a.dtype)


def _k_dim(b, b_transposed):
  """The dimension of b ([..., K, N], or [..., N, K] when b_transposed) that holds K."""
  return b.ndim - (1 if b_transposed else 2)


def _batched_dot(a, b, b_contracting, preferred_element_type=jnp.float32):
  """a's last dim contracted with b's dim `b_contracting`; leading dims (all but 2) batched."""
  batch = tuple(range(a.ndim - 2))
  return lax.dot_general(
    a,
    b,
    (((a.ndim - 1,), (b_contracting,)), (batch, batch)),
    preferred_element_type=preferred_element_type,
  )


def _accumulates_in_float32(lhs, rhs, preferred_element_type) -> bool:
  """Whether lhs . rhs can be a float32-accumulating low-precision dot returning the type asked.

  Both operands of one low-precision dtype, and an output in that dtype or float32.
  """
  dtype = jnp.result_type(lhs)
  return (
    dtype in LOW_PRECISION
    and jnp.result_type(rhs) == dtype
    and preferred_element_type in (None, dtype, jnp.float32)
  )


def _matmul_fwd(a, b, b_transposed, out_dtype):
  return matmul_f32_accumulate(a, b, b_transposed, out_dtype), (a, b)


def _matmul_bwd(b_transposed, out_dtype, residuals, grad):
  del out_dtype
  a, b = residuals
  grad = grad.astype(a.dtype)
  # dA = g B^T: contracts g's minor dim with B's N dim (minor of [K, N], major of [N, K]).
  grad_a = _batched_dot(grad, b, _k_dim(b, not b_transposed))  # b's N dim
  # dB = A^T g ([K, N]), or g^T A for B stored [N, K]: a plain transpose of the [K, N] result
  # would become the dot's output layout, which YNNPACK rejects (then XLA:CPU's fallback dot
  # fails: "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32").
  rows = a.ndim - 2  # M, contracted by dB
  grad_b = (
    _batched_dot(materialized_transpose(grad), a, rows)
    if b_transposed
    else _batched_dot(materialized_transpose(a), grad, rows)
  )
  return grad_a.astype(a.dtype), grad_b.astype(b.dtype)


matmul_f32_accumulate.defvjp(_matmul_fwd, _matmul_bwd)


def batched_matmul(
  a: jax.Array, b: jax.Array, b_transposed: bool = False, preferred_element_type=None
) -> jax.Array:
  """a @ b over leading batch dims (b [..., K, N], or [..., N, K] when b_transposed).

  Attention's two products ([batch, heads, q, k] x [batch, heads, s, k]^T and weights x
  values). With low-precision operands and an even row count M it is `matmul_f32_accumulate`
  (forward and gradients as float32-accumulating bf16 dots); otherwise `lax.dot_general`, so
  float32 computes exactly what an einsum would.
  """
  if is_materializable(a.shape[-2]) and _accumulates_in_float32(a, b, preferred_element_type):
    return matmul_f32_accumulate(a, b, b_transposed, preferred_element_type)
  return _batched_dot(a, b, _k_dim(b, b_transposed), preferred_element_type)


def _is_trailing(dims: Sequence[int], ndim: int) -> bool:
  return tuple(dims) == tuple(range(ndim - len(dims), ndim))


def _is_leading(dims: Sequence[int]) -> bool:
  return tuple(dims) == tuple(range(len(dims)))


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
  """`lax.dot_general`, computed by `matmul_f32_accumulate` where the product allows it.

  Eligible: both operands of one low-precision dtype, no batch dimensions, an output in that
  dtype or float32 (`preferred_element_type`), and even row counts where a transpose is taken.
  The result has lax.dot_general's shape and dtype: [lhs free dims..., rhs free dims...].
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  lhs_contract, rhs_contract = tuple(lhs_contract), tuple(rhs_contract)
  eligible = (
    _accumulates_in_float32(lhs, rhs, preferred_element_type)
    and not lhs_batch
    and not rhs_batch
    and not kwargs.get("out_sharding")
    and [lhs.shape[i] for i in lhs_contract] == [rhs.shape[j] for j in rhs_contract]
  )
  # Anything this GEMM form does not cover goes to lax.dot_general unchanged.
  unchanged = functools.partial(
    lax.dot_general,
    lhs,
    rhs,
    dimension_numbers,
    precision=precision,
    preferred_element_type=preferred_element_type,
    **kwargs,
  )
  if not eligible:  # including shape errors, which lax.dot_general reports
    return unchanged()
  # The GEMM's [M, K] side should be an operand that contracts its trailing dims (no
  # transpose); if both or neither do, the larger one (the activations), so the weight
  # gradient is the one computed through a transpose and the input gradient comes out directly.
  lhs_trailing = _is_trailing(lhs_contract, lhs.ndim)
  rhs_trailing = _is_trailing(rhs_contract, rhs.ndim)
  if lhs_trailing != rhs_trailing:
    swap = rhs_trailing
  else:
    swap = rhs.size > lhs.size
  a, b, a_contract, b_contract = (
    (rhs, lhs, rhs_contract, lhs_contract) if swap else (lhs, rhs, lhs_contract, rhs_contract)
  )
  if not _transposes_are_materializable(a, a_contract):
    return unchanged()
  out = _as_gemm(a, b, a_contract, b_contract, preferred_element_type)
  if not swap:
    return out
  n_rhs_free, n_lhs_free = rhs.ndim - len(rhs_contract), lhs.ndim - len(lhs_contract)
  return jnp.transpose(
    out, tuple(range(n_rhs_free, n_rhs_free + n_lhs_free)) + tuple(range(n_rhs_free))
  )


def _transposes_are_materializable(a, a_contract) -> bool:
  """Whether every transpose the GEMM and its gradient take can be materialized.

  The gradient transposes the [M, K] side (M rows); a side contracting its leading dims is
  transposed in the forward too (K rows). With an odd count, or under 4 rows, XLA might fold
  the transpose into the dot, so such products keep lax.dot_general (slower in bf16 on CPU,
  never wrong).
  """
  m = math.prod(a.shape[i] for i in range(a.ndim) if i not in a_contract)
  k = math.prod(a.shape[i] for i in a_contract)
  return is_materializable(m) and (is_materializable(k) or not _is_leading(a_contract))


def _as_gemm(a, b, a_contract, b_contract, out_dtype):
  """a . b contracting a_contract with b_contract, as one 2-D GEMM: [a free..., b free...]."""
  n_contract = len(a_contract)
  a_free = [i for i in range(a.ndim) if i not in a_contract]
  a_free_shape = tuple(a.shape[i] for i in a_free)
  k = math.prod(a.shape[i] for i in a_contract)
  m = math.prod(a_free_shape)
  if _is_trailing(a_contract, a.ndim):
    a = a.reshape(m, k)
  elif _is_leading(a_contract):
    # A transpose XLA would fold into the dot, leaving it contracting a's major dim, which
    # YNNPACK rejects and XLA:CPU's fallback dot cannot run in bf16 -> f32.
    a = materialized_transpose(a.reshape(k, m))
  else:  # interleaved: the reshape after the transpose is not a layout change of a
    a = jnp.transpose(a, a_free + list(a_contract)).reshape(m, k)
  # b as [K, N] (contracting its leading dims) or, without a copy, as [N, K] (trailing dims).
  b_transposed = _is_trailing(b_contract, b.ndim)
  if not b_transposed and not _is_leading(b_contract):
    b = jnp.transpose(b, list(b_contract) + [j for j in range(b.ndim) if j not in b_contract])
  b_free_shape = b.shape[: b.ndim - n_contract] if b_transposed else b.shape[n_contract:]
  n = math.prod(b_free_shape)
  out = matmul_f32_accumulate(
    a, b.reshape((n, k) if b_transposed else (k, n)), b_transposed, out_dtype
  )
  return out.reshape(tuple(a_free_shape) + b_free_shape)


class Dense(nn.Dense):
  """`nn.Dense` with the same parameters (and class name, so the same module names), whose
  bf16 form runs through `dot_general`.

  There the bias is added to the float32 product before its one rounding to bf16: XLA:CPU's
  bf16 elementwise code (the bias add and its gradient's reduction) is slower than its float32
  code (docs/performance_cpu.md, "bfloat16"). Other dtypes, and a `dot_general` /
  `dot_general_cls` given to the layer, compute exactly what `nn.Dense` does.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel = self.param(
      "kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features), self.param_dtype
    )
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    dims = (((inputs.ndim - 1,), (0,)), ((), ()))
    dtype = inputs.dtype
    # A dot the caller chose (nn.Dense's dot_general / dot_general_cls) is used as nn.Dense would.
    chosen = self.dot_general_cls() if self.dot_general_cls is not None else self.dot_general
    if chosen is not None or not is_low_precision(dtype):
      out = (chosen or lax.dot_general)(inputs, kernel, dims, precision=self.precision)
      return out if bias is None else out + bias
    out = dot_general(
      inputs, kernel, dims, precision=self.precision, preferred_element_type=jnp.float32
    )
    if bias is not None:
      out = out + bias.astype(jnp.float32)
    return out.astype(dtype)
