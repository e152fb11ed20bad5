"""2-D convolution whose backward pass can be computed as matrix multiplies (im2col + GEMM).

`Conv2D` holds the parameter of `flax.linen.Conv` (a 'kernel' [kh, kw, C_in, C_out], HWIO, the
same name, shape and init), so checkpoints move freely between the settings of `impl`; the
forward value is always XLA's convolution. What `impl` changes is how the gradients are
computed:

  'xla'        XLA's transposed convolutions (autodiff of `lax.conv_general_dilated`): the
               choice on TPU and GPU, whose compilers have tuned convolution kernels.
  'gemm_grad'  both gradients as matrix multiplies over the unfolded input (Chellapilla et al.
               2006, "High Performance Convolutional Neural Networks for Document Processing",
               sec. 3): with P = the kh * kw shifted, strided windows of the padded input
               stacked with the channels, [B * H' * W', kh * kw * C_in], and W the kernel as
               [kh * kw * C_in, C_out],
                 dW = P^T dY,    dX = col2im(dY W^T),
               col2im being the transpose of the unfolding (autodiff of its slices). dW is
               summed over chunks of the batch small enough for a chunk's P^T to stay in cache
               (`kernel_grad`).
  'gemm'       the forward too as that GEMM, conv = P W (its gradients are autodiff's: the
               GEMM's two products and the slices' transpose).
  'auto'       'gemm' where the kernel is larger than the unpadded input in a spatial
               dimension, 'gemm_grad' for other strided convolutions, 'xla' for the rest
               (decided at trace time from the shapes).

These are XLA:CPU kernels (`jaxssl.kernels.cpu`); TPU and GPU run the reference `nn.Conv`.

Why (docs/performance_cpu.md, "ResNet on CPU" and "Figures behind the CPU kernels' design
choices"): with XLA:CPU's convolutions kept out of YNNPACK (`jaxssl.kernels.cpu.xla_options`),
its stride-1 convolutions and their gradients are as fast as the GEMMs, but the input gradient of
a strided convolution and the kernel gradient of the 1x1/2 projections are slower than col2im
and the GEMM (benchmarks/conv_lowering.py prints each per ResNet-18 layer). The forward and its
residuals (x and the kernel) are unchanged, so activation memory is too.

A kernel larger than its input (a 3x3 conv on 2x2 or 1x1 feature maps: ResNet's last stage at
64px or 32px images with the ImageNet stem; a 7x7 stem on inputs under 7px) drops XLA:CPU's
convolution emitter to a path far slower than the same arithmetic as a GEMM
(benchmarks/conv_small_input.py), so 'auto' computes those as 'gemm'. The unfolded input there
is at most kh * kw times a feature map that is tiny, and the boundary is sharp: at input side =
kernel side XLA's emitter is as fast as the GEMM again.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.kernels.cpu import matmul

CONV_IMPLS = ("auto", "xla", "gemm_grad", "gemm")

# Bytes of input per chunk of `kernel_grad`: the chunk's P^T is kh * kw times that, built and
# consumed by one GEMM while it is still in cache (2 MiB: a core's L2 on the VM it was tuned on;
# docs/performance_cpu.md has the sweep).
KERNEL_GRAD_CHUNK_BYTES = 2 << 20


def resolve_impl(impl: str, strides=(1, 1), kernel_size=(1, 1), input_hw=None) -> str:
  """'xla', 'gemm_grad' or 'gemm' for `impl` (the module docstring says what 'auto' picks).

  `input_hw`: the unpadded input's (H, W); None counts as large.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"Unknown conv_impl {impl!r}; use one of {CONV_IMPLS}.")
  if impl != "auto":
    return impl
  if input_hw is not None and any(k > size for k, size in zip(kernel_size, input_hw)):
    return "gemm"
  return "gemm_grad" if max(strides) > 1 else "xla"


def conv_xla(x, kernel, strides, padding):
  """NHWC x HWIO cross-correlation, what flax.linen.Conv computes (no bias, no dilation)."""
  return jax.lax.conv_general_dilated(
    x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _output_size(padded_hw, kernel_size, strides):
  """(H', W') of a convolution over a padded input of spatial size `padded_hw`."""
  out = tuple((size - k) // s + 1 for size, k, s in zip(padded_hw, kernel_size, strides))
  if min(out) < 1:
    raise ValueError(
      f"conv kernel {tuple(kernel_size)} is larger than the padded input {tuple(padded_hw)}."
    )
  return out


def strided_window(x, *taps):
  """One kernel tap as a single slice: per (axis, offset, stride, out) in `taps`, the `out`
  elements of `x` along `axis` from `offset` every `stride` (also max-pool's taps)."""
  start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
  for axis, offset, stride, out in taps:
    start[axis], limit[axis], step[axis] = offset, offset + stride * (out - 1) + 1, stride
  return jax.lax.slice(x, start, limit, step)


def unfold(x, kernel_size, strides, padding):
  """im2col: [B, H, W, C] -> [B, H', W', kh * kw * C], window (i, j) then channel.

  Row-major (i, j, c) is the order of a [kh, kw, C, O] kernel reshaped to [kh * kw * C, O],
  so `unfold(x) @ kernel.reshape(-1, O)` is the convolution.
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  h_out, w_out = _output_size(x.shape[1:3], kernel_size, strides)
  windows = [
    strided_window(x, (1, i, sh, h_out), (2, j, sw, w_out)) for i in range(kh) for j in range(kw)
  ]
  return windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)


def unfold_transposed(x, kernel_size, strides, padding):
  """P^T of `unfold`: [B, H, W, C] -> [kh * kw * C, B * H' * W'].

  Built from the channels-first input, windows along W stacked and then along H (measured
  faster than one stack of kh * kw windows or than `unfold`'s channel concatenation), so that
  the GEMM P^T dY reads both operands in the layout a matmul wants (faster than contracting
  `unfold`'s P over its leading axes; docs/performance_cpu.md).
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(
    jnp.transpose(x, (3, 0, 1, 2)), ((0, 0), (0, 0), tuple(padding[0]), tuple(padding[1]))
  )
  h_out, w_out = _output_size(x.shape[2:4], kernel_size, strides)
  # [C, B, Hp, Wp] -> [kw, C, B, Hp, W'] -> [kh, kw, C, B, H', W'].
  cols = jnp.stack([strided_window(x, (3, j, sw, w_out)) for j in range(kw)])
  rows = jnp.stack([strided_window(cols, (3, i, sh, h_out)) for i in range(kh)])
  return rows.reshape(kh * kw * x.shape[0], -1)


def batch_chunk(batch: int, image_bytes: int, budget: int = KERNEL_GRAD_CHUNK_BYTES) -> int:
  """The largest divisor of `batch` whose images fit in `budget` bytes (at least 1)."""
  return max(
    d for d in range(1, batch + 1) if batch % d == 0 and (d == 1 or d * image_bytes <= budget)
  )


def kernel_grad(x, grad_out, kernel_size, strides, padding, chunk=None):
  """dW = P^T dY of the convolution of `x` ([B, H, W, C_in]), as [kh, kw, C_in, C_out].

  The sum over the batch runs in a loop over `chunk` images at a time (default: `batch_chunk`
  of KERNEL_GRAD_CHUNK_BYTES), each chunk's P^T built and multiplied while in cache, into an
  accumulator of at least float32. Chunk j holds images j, j + n, j + 2n, ... (n = B / chunk)
  so that a batch sharded in contiguous blocks over devices keeps each device's images on it.
  """
  batch, c_in, c_out = x.shape[0], x.shape[-1], grad_out.shape[-1]
  if chunk is None:
    chunk = batch_chunk(batch, x[0].size * x.dtype.itemsize)
  if batch % chunk:
    raise ValueError(f"kernel_grad chunk {chunk} does not divide the batch {batch}.")
  steps = batch // chunk
  accumulator = jnp.promote_types(x.dtype, jnp.float32)  # float32, or float64 under x64
  # The transposition to channels first happens per chunk, in cache (once for the whole batch
  # before the loop measured slower; docs/performance_cpu.md).
  xs = x.reshape(chunk, steps, *x.shape[1:])
  grads = grad_out.reshape(chunk, steps, *grad_out.shape[1:])

  def add_chunk(j, total):
    x_chunk = jax.lax.dynamic_index_in_dim(xs, j, axis=1, keepdims=False)
    g_chunk = jax.lax.dynamic_index_in_dim(grads, j, axis=1, keepdims=False)
    patches_t = unfold_transposed(x_chunk, kernel_size, strides, padding)
    return total + jnp.matmul(
      patches_t, g_chunk.reshape(-1, c_out), preferred_element_type=accumulator
    )

  rows = kernel_size[0] * kernel_size[1] * c_in
  total = jax.lax.fori_loop(0, steps, add_chunk, jnp.zeros((rows, c_out), accumulator))
  return total.reshape(*kernel_size, c_in, c_out)


def conv_gemm(x, kernel, strides, padding):
  """`conv_xla` as one GEMM over the unfolded input, P W, in x's dtype (a bf16 product
  accumulates in float32: `matmul.dot_general`).

  Differentiated by autodiff: dW = P^T dY and dP = dY W^T, folded back by the slices' transpose.
  """
  kh, kw, c_in, c_out = kernel.shape
  patches = unfold(x, (kh, kw), strides, padding)
  return matmul.dot_general(
    patches, kernel.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ()))
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_gemm_grad(x, kernel, strides, padding):
  """`conv_xla` with both gradients as GEMMs over the unfolded input (module docstring)."""
  return conv_xla(x, kernel, strides, padding)


def _conv_gemm_grad_fwd(x, kernel, strides, padding):
  return conv_xla(x, kernel, strides, padding), (x, kernel)


def input_grad(x_shape, kernel, grad_out, strides, padding):
  """dX = col2im(dY W^T) of the convolution of an input of `x_shape`: the transpose of the
  unfolding (autodiff of its slices) adds each window's share back in place."""
  kh, kw, c_in, c_out = kernel.shape
  _, unfold_vjp = jax.vjp(
    lambda v: unfold(v, (kh, kw), strides, padding), jnp.zeros(x_shape, grad_out.dtype)
  )
  flat_kernel = kernel.reshape(kh * kw * c_in, c_out)
  (grad_x,) = unfold_vjp(jax.lax.dot_general(grad_out, flat_kernel, (((3,), (1,)), ((), ()))))
  return grad_x


def _conv_gemm_grad_bwd(strides, padding, residuals, grad_out):
  x, kernel = residuals
  grad_kernel = kernel_grad(x, grad_out, kernel.shape[:2], strides, padding)
  grad_x = input_grad(x.shape, kernel, grad_out, strides, padding)
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


conv_gemm_grad.defvjp(_conv_gemm_grad_fwd, _conv_gemm_grad_bwd)


class Conv2D(nn.Module):
  """Bias-free 2-D convolution, NHWC, with the parameter of `flax.linen.Conv` and the fields
  the models give `Kernels.conv` (a drop-in for `nn.Conv(use_bias=False)`).

  Attributes:
    features: C_out.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)) zero padding.
    impl: 'auto', 'xla', 'gemm_grad' or 'gemm': how the convolution and its gradients are
      computed (module docstring).
    dtype: compute dtype (input and kernel are cast to it); param_dtype: the kernel's.
    kernel_init: initializer of the [kh, kw, C_in, C_out] kernel.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Any = ((0, 0), (0, 0))
  impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    impl = resolve_impl(self.impl, self.strides, self.kernel_size, x.shape[1:3])
    kernel = self.param(
      "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), self.param_dtype
    )
    x, kernel = x.astype(self.dtype), jnp.asarray(kernel, self.dtype)
    strides = tuple(self.strides)
    padding = tuple(tuple(p) for p in self.padding)
    if impl == "gemm":
      return conv_gemm(x, kernel, strides, padding)
    if impl == "gemm_grad":
      return conv_gemm_grad(x, kernel, strides, padding)
    return conv_xla(x, kernel, strides, padding)
