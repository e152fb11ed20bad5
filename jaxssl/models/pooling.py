"""Max pooling over [B, H, W, C] that XLA:CPU runs fast in both directions.

`max_pool(..., impl='auto')` is `flax.linen.max_pool` ('reduce_window': XLA's reduce-window,
whose gradient is a select-and-scatter) on TPU and GPU, and on CPU the same maximum computed
separably from strided slices ('slices'): the max over a kh x kw window is the max over kh rows
of the max over kw columns, each an elementwise `jnp.maximum` of shifted strided slices that
XLA fuses into one loop, and whose gradient is a chain of selects instead of a scatter.

Why: in the ResNet-18 step at batch 64 XLA:CPU's reduce-window took ~200 ms for the stem's
3x3/2 pool of a [64, 112, 112, 64] activation (it fuses the BN + ReLU producer into each of
the 9 window reads) and its select-and-scatter gradient another ~40 ms plus the scatter's
zero fill; standalone, forward + backward ran 411 ms with reduce-window and 88 ms with slices
(benchmarks/conv_lowering.py prints the comparison).

The values are identical. The gradients differ only where a window holds several equal
maxima: select-and-scatter sends the whole cotangent to the first of them, `jnp.maximum`
splits it equally between them (both are valid subgradients and conserve the cotangent's sum;
after a ReLU the tied values are the zeros, whose ReLU gradient is 0 either way).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import conv

POOL_IMPLS = ("auto", "reduce_window", "slices")


def resolve_impl(impl: str) -> str:
  """'reduce_window' or 'slices' for `impl` ('auto': 'slices' on CPU)."""
  if impl not in POOL_IMPLS:
    raise ValueError(f"Unknown pool_impl {impl!r}; use one of {POOL_IMPLS}.")
  if impl == "auto":
    return "slices" if jax.default_backend() == "cpu" else "reduce_window"
  return impl


def _max_along(x, axis, window, stride):
  """Max over `window` consecutive elements of the (padded) axis, every `stride`."""
  out = (x.shape[axis] - window) // stride + 1
  if out < 1:
    raise ValueError(
      f"max_pool window {window} is larger than the padded input {x.shape[axis]} on axis {axis}."
    )
  taps = [conv.strided_window(x, (axis, offset, stride, out)) for offset in range(window)]
  return functools.reduce(jnp.maximum, taps)


def max_pool(x, window_shape, strides, padding, impl: str = "auto"):
  """Max over kh x kw windows of x [B, H, W, C] every (sh, sw), the padding being -inf.

  Args:
    x: [B, H, W, C], a floating dtype.
    window_shape: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)), padded with -inf (never the maximum).
    impl: 'auto', 'reduce_window' or 'slices' (module docstring).
  Returns:
    [B, H', W', C], H' = (H + top + bottom - kh) // sh + 1, likewise W'.
  """
  impl = resolve_impl(impl)
  if x.ndim != 4:
    raise ValueError(f"max_pool expects [B, H, W, C], got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"max_pool pads with -inf and needs a floating dtype, got {x.dtype}.")
  padding = tuple(tuple(p) for p in padding)
  if impl == "reduce_window":
    return nn.max_pool(x, tuple(window_shape), strides=tuple(strides), padding=padding)
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)), constant_values=-jnp.inf)
  x = _max_along(x, 2, window_shape[1], strides[1])
  return _max_along(x, 1, window_shape[0], strides[0])
