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
    np.testing.assert_allclose(losses.rankme(z.astype(np.float32)), r, rtol=1e-4)
  # Invariant to scale and to rotations of the embedding space.
  z = rng.normal(size=(32, 8)).astype(np.float32)
  rot, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  np.testing.assert_allclose(
    losses.rankme(5.0 * z @ rot.astype(np.float32)), losses.rankme(z), rtol=1e-4
  )


def test_monitors_pass_no_gradient_and_check_shapes():
  z = jnp.arange(12.0).reshape(4, 3)
  grad = jax.jit(jax.grad(lambda x: losses.rankme(x) + losses.embedding_std(x)))(z)
  assert np.all(grad == 0)
  with pytest.raises(ValueError, match="batch >= 2"):
    losses.rankme(jnp.ones((1, 3)))
  with pytest.raises(ValueError, match=r"\[batch, dim\]"):
    losses.embedding_std(jnp.ones((4, 3, 2)))


def _rankme_float64(z, eps=1e-7):
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = s / s.sum() + eps
  return np.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("shape", [(256, 64), (48, 96), (512, 128)])
@pytest.mark.parametrize("spectrum", ["isotropic", "power_law", "collapsed_to_8"])
def test_rankme_gram_path_matches_float64_svd(rng, shape, spectrum):
  n, d = shape
  k = min(n, d)
  u, _ = np.linalg.qr(rng.normal(size=(n, k)))
  v, _ = np.linalg.qr(rng.normal(size=(d, k)))
  if spectrum == "isotropic":
    s = rng.uniform(0.5, 1.5, size=k)
  elif spectrum == "power_law":  # Heavy tail as in trained SSL embeddings: s_k ~ k^-1.
    s = 1.0 / np.arange(1, k + 1)
  else:  # Dimensional collapse: 8 directions with signal, the rest exactly zero.
    s = np.concatenate([np.linspace(1.0, 0.1, 8), np.zeros(k - 8)])
  z = (u * s) @ v.T
  got = losses.rankme(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(got, _rankme_float64(z), rtol=2e-4)
