"""SimSiam loss against a float64 NumPy eq. 1-2, and its stop-gradient on the projections."""

import jax
import numpy as np
import pytest

from jaxssl import losses


def _simsiam64(p1, p2, z1, z2):
  def d(p, z):  # eq. 1, per example
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return -np.sum(p * z, -1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)

  return np.mean(d(p1, z2) / 2 + d(p2, z1) / 2)  # eq. 2


def test_simsiam_matches_reference_and_stops_projection_gradients():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4))
  loss, metrics = losses.simsiam(p1, p2, z1, z2)
  want = _simsiam64(p1, p2, z1, z2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["cosine"]), -want, rtol=1e-5)
  # Identical prediction and target directions reach the minimum -1.
  assert float(losses.simsiam(p1, p2, 3 * p2, 0.5 * p1)[0]) == pytest.approx(-1.0, abs=1e-6)
  grads = jax.grad(lambda *a: losses.simsiam(*a)[0], argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert np.any(grads[0] != 0) and np.any(grads[1] != 0)
  assert np.all(grads[2] == 0) and np.all(grads[3] == 0)  # stopgrad(z), eq. 2
  # Gradient w.r.t. p1 in float64: d/dp [-p.z/(|p||z|)] / 2 / N.
  a, b = np.asarray(p1, np.float64), np.asarray(z2, np.float64)
  na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
  cos = np.sum(a * b, -1, keepdims=True) / na / nb
  want_grad = -(b / (na * nb) - cos * a / na**2) / 2 / len(a)
  np.testing.assert_allclose(grads[0], want_grad, rtol=1e-4, atol=1e-7)
