"""Tests for jaxssl.losses.monitoring (collapse monitors)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_embedding_std_matches_reference_and_detects_collapse(rng):
  z = rng.normal(size=(64, 16)).astype(np.float32)
  zn = z.astype(np.float64) / np.linalg.norm(z, axis=-1, keepdims=True)
  got = losses.embedding_std(z)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, zn.std(0).mean(), rtol=1e-5)
  # Isotropic Gaussian directions: about 1 / sqrt(D).
  assert abs(float(got) * 4.0 - 1.0) < 0.1
  collapsed = np.tile(z[:1], (64, 1)) * rng.uniform(1, 2, size=(64, 1))
  np.testing.assert_allclose(losses.embedding_std(collapsed), 0.0, atol=1e-6)


def test_rankme_matches_reference(rng):
  z = rng.normal(size=(20, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1, 0.01])
  got = losses.rankme(z.astype(np.float32))
  s = np.linalg.svd(z, compute_uv=False)
  p = s / s.sum() + 1e-7
  np.testing.assert_allclose(got, np.exp(-np.sum(p * np.log(p))), rtol=1e-5)


def test_rankme_counts_equal_directions(rng):
  q, _ = np.linalg.qr(rng.normal(size=(32, 8)))
  for r in (1, 3, 8):
    # r orthonormal columns (r singular values 1, the rest 0): rank r.
    z = q[:, :r] @ np.eye(r, 8)
    np.testing.assert_allclose(losses.rankme(z.astype(np.float32)), r,
                               rtol=1e-4)
  # Invariant to scale and to rotations of the embedding space.
  z = rng.normal(size=(32, 8)).astype(np.float32)
  rot, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  np.testing.assert_allclose(losses.rankme(5.0 * z @ rot.astype(np.float32)),
                             losses.rankme(z), rtol=1e-4)


def test_monitors_pass_no_gradient_and_check_shapes():
  z = jnp.arange(12.0).reshape(4, 3)
  grad = jax.jit(jax.grad(
      lambda x: losses.rankme(x) + losses.embedding_std(x)))(z)
  assert np.all(grad == 0)
  with pytest.raises(ValueError, match="batch >= 2"):
    losses.rankme(jnp.ones((1, 3)))
  with pytest.raises(ValueError, match=r"\[batch, dim\]"):
    losses.embedding_std(jnp.ones((4, 3, 2)))
