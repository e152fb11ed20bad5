"""Max pooling over [B, H, W, C] that XLA:CPU runs fast in both directions (a CPU kernel).

The reference `nn.max_pool` is XLA's reduce-window, whose gradient is a select-and-scatter.
This computes the same maximum separably from strided slices: the max over a kh x kw window is
the max over kh rows of the max over kw columns, each an elementwise `jnp.maximum` of shifted
strided slices that XLA fuses into one loop, and whose gradient is a chain of selects instead
of a scatter. On XLA:CPU reduce-window fuses its producer into each window read and the scatter
needs a zero fill, several times slower in the ResNet stem (docs/performance_cpu.md, "ResNet
on CPU"; benchmarks/conv_lowering.py prints the comparison).

The values are identical. The gradients differ only where a window holds several equal
maxima: select-and-scatter sends the whole cotangent to the first of them, `jnp.maximum`
splits it equally between them (both are valid subgradients and conserve the cotangent's sum;
after a ReLU the tied values are the zeros, whose ReLU gradient is 0 either way).
"""

import functools

import jax.numpy as jnp

from jaxssl.kernels.cpu import conv


def _max_along(x, axis, window, stride):
  """Max over `window` consecutive elements of the (padded) axis, every `stride`."""
  out = (x.shape[axis] - window) // stride + 1
  if out < 1:
    raise ValueError(
      f"max_pool window {window} is larger than the padded input {x.shape[axis]} on axis {axis}."
    )
  taps = [conv.strided_window(x, (axis, offset, stride, out)) for offset in range(window)]
  return functools.reduce(jnp.maximum, taps)


def max_pool(x, window_shape, strides, padding):
  """Max over kh x kw windows of x [B, H, W, C] every (sh, sw), the padding being -inf.

  Args:
    x: [B, H, W, C], a floating dtype.
    window_shape: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)), padded with -inf (never the maximum).
  Returns:
    [B, H', W', C], H' = (H + top + bottom - kh) // sh + 1, likewise W'.
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool expects [B, H, W, C], got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"max_pool pads with -inf and needs a floating dtype, got {x.dtype}.")
  padding = tuple(tuple(p) for p in padding)
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)), constant_values=-jnp.inf)
  x = _max_along(x, 2, window_shape[1], strides[1])
  return _max_along(x, 1, window_shape[0], strides[0])
