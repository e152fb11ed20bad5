"""2-D convolution whose backward pass can be computed as matrix multiplies (im2col + GEMM).

`Conv2D` holds the parameter of `flax.linen.Conv` (a 'kernel' [kh, kw, C_in, C_out], HWIO, the
same name, shape and init), so checkpoints move freely between the settings of `impl`; the
forward value is always XLA's convolution. What `impl` changes is how the gradients are
computed:

  'xla'        XLA's transposed convolutions (autodiff of `lax.conv_general_dilated`): the
               choice on TPU and GPU, whose compilers have tuned convolution kernels.
  'gemm_grad'  the backward pass as two matrix multiplies over the unfolded input
               (Chellapilla et al. 2006, "High Performance Convolutional Neural Networks for
               Document Processing", sec. 3): with P = the kh * kw shifted, strided windows of
               the padded input concatenated on the channel axis, [B * H' * W', kh * kw * C_in],
               and W the kernel as [kh * kw * C_in, C_out],
                 dW = P^T dY,    dX = col2im(dY W^T),
               col2im being the transpose of the unfolding (autodiff of its slices). XLA:CPU's
               forward convolution is faster than the unfolded one, but its gradients of
               strided convolutions run well below these GEMMs (benchmarks/conv_lowering.py
               prints both per ResNet-18 layer; for stride 1 XLA's own are as fast or faster);
               the forward and its residuals (x and the kernel) are unchanged, so activation
               memory is too.
  'auto'       'gemm_grad' for strided convolutions on CPU, where it measured faster, 'xla'
               for the rest and on other backends (decided at trace time).
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ('auto', 'xla', 'gemm_grad')


def resolve_impl(impl: str, strides=(1, 1)) -> str:
  """'xla' or 'gemm_grad' for `impl` ('auto': gemm_grad for strided convolutions on CPU)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f'Unknown conv_impl {impl!r}; use one of {CONV_IMPLS}.')
  if impl == 'auto':
    # Measured per layer (benchmarks/conv_lowering.py): XLA:CPU's gradients of strided
    # convolutions run 1.3-1.6x below the GEMM ones, those of stride-1 convolutions do not.
    strided = max(strides) > 1
    return 'gemm_grad' if strided and jax.default_backend() == 'cpu' else 'xla'
  return impl


def conv_xla(x, kernel, strides, padding):
  """NHWC x HWIO cross-correlation, what flax.linen.Conv computes (no bias, no dilation)."""
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def unfold(x, kernel_size, strides, padding):
  """im2col: [B, H, W, C] -> [B, H', W', kh * kw * C], window (i, j) then channel.

  Row-major (i, j, c) is the order of a [kh, kw, C, O] kernel reshaped to [kh * kw * C, O],
  so `unfold(x) @ kernel.reshape(-1, O)` is the convolution.
  """
  kh, kw = kernel_size
  sh, sw = strides
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  batch, height, width, channels = x.shape
  h_out, w_out = (height - kh) // sh + 1, (width - kw) // sw + 1
  if h_out < 1 or w_out < 1:
    raise ValueError(f'conv kernel {tuple(kernel_size)} is larger than the padded input '
                     f'{(height, width)}.')
  windows = [jax.lax.slice(x, (0, i, j, 0),
                           (batch, i + sh * (h_out - 1) + 1, j + sw * (w_out - 1) + 1,
                            channels), (1, sh, sw, 1))
             for i in range(kh) for j in range(kw)]
  return windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_gemm_grad(x, kernel, strides, padding):
  """`conv_xla` with the backward pass as GEMMs over `unfold(x)` (module docstring)."""
  return conv_xla(x, kernel, strides, padding)


def _conv_gemm_grad_fwd(x, kernel, strides, padding):
  return conv_xla(x, kernel, strides, padding), (x, kernel)


def _conv_gemm_grad_bwd(strides, padding, residuals, grad_out):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  patches, unfold_vjp = jax.vjp(lambda v: unfold(v, (kh, kw), strides, padding), x)
  flat_kernel = kernel.reshape(kh * kw * c_in, c_out)
  # dW = P^T dY, contracting batch and both spatial axes in one dot.
  grad_kernel = jax.lax.dot_general(patches, grad_out, (((0, 1, 2), (0, 1, 2)), ((), ())))
  # dX = col2im(dY W^T): the transpose of the unfolding adds each window back in place.
  grad_x, = unfold_vjp(jax.lax.dot_general(grad_out, flat_kernel, (((3,), (1,)), ((), ()))))
  return grad_x, grad_kernel.reshape(kernel.shape).astype(kernel.dtype)


conv_gemm_grad.defvjp(_conv_gemm_grad_fwd, _conv_gemm_grad_bwd)


class Conv2D(nn.Module):
  """Bias-free 2-D convolution, NHWC, with the parameter of `flax.linen.Conv`.

  Attributes:
    features: C_out.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)) zero padding.
    impl: 'auto', 'xla' or 'gemm_grad': how the gradients are computed (module docstring).
    dtype: compute dtype (input and kernel are cast to it); param_dtype: the kernel's.
    kernel_init: initializer of the [kh, kw, C_in, C_out] kernel.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Any = ((0, 0), (0, 0))
  impl: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    impl = resolve_impl(self.impl, self.strides)
    kernel = self.param('kernel', self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), jnp.asarray(kernel, self.dtype)
    strides = tuple(self.strides)
    padding = tuple(tuple(p) for p in self.padding)
    if impl == 'gemm_grad':
      return conv_gemm_grad(x, kernel, strides, padding)
    return conv_xla(x, kernel, strides, padding)
