"""max_pool: the separable strided-slice max equals flax's reduce-window max in value, and in
gradient wherever the maxima are unique; at ties it splits the cotangent instead of routing it
to one element, conserving its sum."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.kernels import reference
from jaxssl.kernels.cpu import pooling

# (window, stride, padding, side): ResNet's 3x3/2 stem pool, odd sides, no padding, 2x2/2, and
# a non-square window with unequal strides.
CASES = [
  ((3, 3), (2, 2), ((1, 1), (1, 1)), 12),
  ((3, 3), (2, 2), ((1, 1), (1, 1)), 11),
  ((2, 2), (2, 2), ((0, 0), (0, 0)), 8),
  ((3, 2), (1, 2), ((1, 1), (0, 1)), 7),
]


@pytest.mark.parametrize("window, strides, padding, side", CASES)
def test_values_and_unique_max_gradients_equal_flax_max_pool(window, strides, padding, side):
  rng = np.random.default_rng(side)
  x = jnp.asarray(rng.normal(size=(2, side, side + 1, 3)), jnp.float32)  # ties have measure 0

  slices = lambda v: pooling.max_pool(v, window, strides, padding)
  reduce_window = lambda v: reference.max_pool(v, window, strides, padding)

  want = nn.max_pool(x, window, strides=strides, padding=padding)
  np.testing.assert_array_equal(slices(x), want)
  np.testing.assert_array_equal(reduce_window(x), want)
  cotangent = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  (grad_flax,) = jax.vjp(reduce_window, x)[1](cotangent)
  (grad_slices,) = jax.vjp(slices, x)[1](cotangent)
  np.testing.assert_allclose(grad_slices, grad_flax, rtol=0, atol=1e-6)


def test_tied_maxima_split_the_cotangent_and_conserve_its_sum():
  x = jnp.zeros((1, 4, 4, 1))  # every window is all ties, as after a ReLU of negatives
  pool = lambda v: pooling.max_pool(v, (2, 2), (2, 2), ((0, 0), (0, 0)))
  (grad,) = jax.vjp(pool, x)[1](jnp.ones((1, 2, 2, 1)))
  np.testing.assert_allclose(grad, np.full((1, 4, 4, 1), 0.25))  # 1 / 4 of each window's 1
  assert float(jnp.sum(grad)) == pytest.approx(4.0)


def test_bad_input_fails_clearly():
  with pytest.raises(ValueError, match="needs a floating dtype"):
    pooling.max_pool(jnp.zeros((1, 4, 4, 1), jnp.int32), (2, 2), (2, 2), ((0, 0), (0, 0)))
  with pytest.raises(ValueError, match=r"expects \[B, H, W, C\]"):
    pooling.max_pool(jnp.zeros((4, 4, 1)), (2, 2), (2, 2), ((0, 0), (0, 0)))
  with pytest.raises(ValueError, match="window 5 is larger than the padded input 4"):
    pooling.max_pool(jnp.zeros((1, 4, 4, 1)), (5, 5), (1, 1), ((0, 0), (0, 0)))
