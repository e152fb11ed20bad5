"""Tests for jaxssl.losses.reconstruction (MAE loss, patchify)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_patchify_matches_mae_layout(rng):
  images = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)
  patches = np.asarray(losses.patchify(images, 4))
  assert patches.shape == (2, 6, 48)
  for b in range(2):
    for i in range(2):
      for j in range(3):
        block = images[b, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, :]
        np.testing.assert_array_equal(patches[b, 3 * i + j], block.reshape(-1))
  # The official MAE code on NCHW: einsum('nchpwq->nhwpqc').
  nchw = images.transpose(0, 3, 1, 2).reshape(2, 3, 2, 4, 3, 4)
  official = np.einsum("nchpwq->nhwpqc", nchw).reshape(2, 6, 48)
  np.testing.assert_array_equal(patches, official)


def test_unpatchify_inverts_patchify(rng):
  square = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(losses.unpatchify(losses.patchify(square, 2), 2), square)
  wide = rng.normal(size=(1, 4, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(losses.unpatchify(losses.patchify(wide, 2), 2, grid=(2, 4)), wide)
  with pytest.raises(ValueError, match="square grid"):
    losses.unpatchify(losses.patchify(wide, 2), 2)
  with pytest.raises(ValueError, match="not divisible"):
    losses.patchify(wide, 3)
  with pytest.raises(ValueError, match="channels"):
    losses.patchify(wide[..., 0], 2)


def _mae_reference(pred, target, mask, norm_pix):
  pred, target = pred.astype(np.float64), target.astype(np.float64)
  total, count = 0.0, 0
  for b in range(pred.shape[0]):
    for n in range(pred.shape[1]):
      if not mask[b, n]:
        continue
      t = target[b, n]
      if norm_pix:
        t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
      total += np.mean((pred[b, n] - t) ** 2)
      count += 1
  return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_matches_reference(rng, norm_pix):
  pred = rng.normal(size=(3, 6, 12)).astype(np.float32)
  target = (rng.normal(size=(3, 6, 12)) * 2 + 1).astype(np.float32)
  mask = rng.random(size=(3, 6)) < 0.75
  loss, metrics = losses.mae(pred, target, mask, norm_pix=norm_pix)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, _mae_reference(pred, target, mask, norm_pix), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["mse_visible"], _mae_reference(pred, target, ~mask, norm_pix), rtol=1e-5
  )
  np.testing.assert_allclose(metrics["mask_ratio"], mask.mean(), rtol=1e-6)


def test_mae_averages_over_masked_patches_only(rng):
  pred = rng.normal(size=(2, 8, 4)).astype(np.float32)
  target = rng.normal(size=(2, 8, 4)).astype(np.float32)
  mask = np.zeros((2, 8), bool)
  mask[0, :6] = True
  mask[1, 2] = True
  loss, _ = losses.mae(pred, target, mask)
  changed = np.where(mask[..., None], pred, 100.0).astype(np.float32)
  np.testing.assert_allclose(losses.mae(changed, target, mask)[0], loss, rtol=1e-6)
  grad = jax.jit(jax.grad(lambda p: losses.mae(p, target, mask)[0]))(pred)
  assert np.all(grad[~mask] == 0) and np.all(np.any(grad[mask] != 0, -1))
  # norm_pix: the target's per-patch offset and scale do not matter.
  np.testing.assert_allclose(losses.mae(pred, 3.0 * target - 2.0, mask)[0], loss, rtol=1e-4)


def test_mae_empty_mask_and_bf16(rng):
  pred = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.bfloat16)
  target = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.bfloat16)
  loss, metrics = losses.mae(pred, target, jnp.zeros((2, 4), bool))
  assert loss.dtype == jnp.float32 and float(loss) == 0.0
  assert metrics["mse_visible"] > 0


def test_mae_shape_errors():
  with pytest.raises(ValueError, match="pred and target"):
    losses.mae(jnp.ones((2, 4, 3)), jnp.ones((2, 4, 2)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="mask must be"):
    losses.mae(jnp.ones((2, 4, 3)), jnp.ones((2, 4, 3)), jnp.ones((2, 3)))
