"""Tests for jaxssl.losses.redundancy against float64 NumPy derivations."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
import numpy as np
import pytest

from jaxssl import losses


def _vicreg_reference(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
  """Bardes et al. 2022 eq. 6, term by term with explicit loops, with the official code's
  halved variance terms (`main_vicreg.py`: mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2).
  """
  z1, z2 = z1.astype(np.float64), z2.astype(np.float64)
  n, d = z1.shape
  invariance = np.sum((z1 - z2) ** 2) / (n * d)

  def variance(z):
    total = 0.0
    for j in range(d):
      col = z[:, j]
      var = np.sum((col - col.mean()) ** 2) / (n - 1)
      total += max(0.0, 1.0 - np.sqrt(var + 1e-4))
    return total / d

  def covariance(z):
    centered = z - z.mean(0)
    total = 0.0
    for i in range(d):
      for j in range(d):
        if i != j:
          total += (np.sum(centered[:, i] * centered[:, j]) / (n - 1)) ** 2
    return total / d

  var = variance(z1) / 2 + variance(z2) / 2
  cov = covariance(z1) + covariance(z2)
  loss = sim_coeff * invariance + std_coeff * var + cov_coeff * cov
  return loss, invariance, var, cov


def _barlow_twins_reference(z1, z2, lambda_=5e-3, eps=1e-5):
  """Zbontar et al. 2021 eq. 1; with eps=0 C_ij is the Pearson correlation.

  eps > 0 is the official code's BatchNorm (biased variance + eps).
  """
  z1, z2 = z1.astype(np.float64), z2.astype(np.float64)
  n, d = z1.shape
  on, off = 0.0, 0.0
  for i in range(d):
    for j in range(d):
      a = z1[:, i] - z1[:, i].mean()
      b = z2[:, j] - z2[:, j].mean()
      c = np.sum(a * b) / n / np.sqrt((np.sum(a * a) / n + eps) * (np.sum(b * b) / n + eps))
      if i == j:
        on += (1 - c) ** 2
      else:
        off += c**2
  return on + lambda_ * off, on, off


@pytest.fixture
def views():
  rng = np.random.default_rng(1)
  # Small per-dimension scales so some stds fall below 1 and the variance
  # hinge is active on part of the dimensions.
  scale = np.array([0.3, 0.6, 1.5, 2.0, 0.8])
  z1 = (rng.normal(size=(12, 5)) * scale).astype(np.float32)
  z2 = (z1 + 0.5 * rng.normal(size=(12, 5)) * scale).astype(np.float32)
  return z1, z2


def test_vicreg_matches_reference(views):
  z1, z2 = views
  loss, metrics = losses.vicreg(z1, z2)
  want, inv, var, cov = _vicreg_reference(z1, z2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  assert 0 < var  # the hinge is active: the test exercises that branch
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["invariance"], inv, rtol=1e-5)
  np.testing.assert_allclose(metrics["variance"], var, rtol=1e-5)
  np.testing.assert_allclose(metrics["covariance"], cov, rtol=1e-5)
  custom, _ = losses.vicreg(z1, z2, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)
  np.testing.assert_allclose(custom, _vicreg_reference(z1, z2, 1.0, 2.0, 3.0)[0], rtol=1e-5)


def test_vicreg_invariances(views):
  z1, z2 = views
  loss, _ = losses.vicreg(z1, z2)
  perm = np.random.default_rng(2).permutation(len(z1))
  np.testing.assert_allclose(losses.vicreg(z1[perm], z2[perm])[0], loss, rtol=1e-5)
  np.testing.assert_allclose(losses.vicreg(z2, z1)[0], loss, rtol=1e-5)
  # Shifting both views by the same vector changes no term.
  shift = np.float32(3.0)
  np.testing.assert_allclose(losses.vicreg(z1 + shift, z2 + shift)[0], loss, rtol=1e-5)


def test_vicreg_collapse_is_penalised():
  z = jnp.zeros((8, 4))
  loss, metrics = losses.vicreg(z, z)
  # Invariance 0, covariance 0, each branch's hinge = 1 - sqrt(1e-4) = 0.99, averaged over the
  # two branches (the official code's std_loss), not summed.
  np.testing.assert_allclose(metrics["variance"], 0.99, rtol=1e-6)
  np.testing.assert_allclose(loss, 25 * 0.99, rtol=1e-6)


def test_barlow_twins_matches_reference(views):
  z1, z2 = views
  loss, metrics = losses.barlow_twins(z1, z2)
  want, on, off = _barlow_twins_reference(z1, z2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["on_diagonal"], on, rtol=1e-5)
  np.testing.assert_allclose(metrics["off_diagonal"], off, rtol=1e-5)
  pearson, _ = losses.barlow_twins(z1, z2, lambda_=0.1, eps=0.0)
  np.testing.assert_allclose(pearson, _barlow_twins_reference(z1, z2, 0.1, eps=0.0)[0], rtol=1e-5)


def test_barlow_twins_invariances(views):
  z1, z2 = views
  loss, _ = losses.barlow_twins(z1, z2, eps=0.0)
  rng = np.random.default_rng(3)
  perm = rng.permutation(len(z1))
  np.testing.assert_allclose(losses.barlow_twins(z1[perm], z2[perm], eps=0.0)[0], loss, rtol=1e-5)
  np.testing.assert_allclose(losses.barlow_twins(z2, z1, eps=0.0)[0], loss, rtol=1e-5)
  # Correlation ignores per-dimension positive scale and shift.
  scale = rng.uniform(0.5, 4.0, size=5).astype(np.float32)
  shift = rng.normal(size=5).astype(np.float32)
  np.testing.assert_allclose(
    losses.barlow_twins(z1 * scale + shift, z2, eps=0.0)[0], loss, rtol=1e-4
  )


def test_barlow_twins_identical_decorrelated_views_have_zero_loss():
  # Orthogonal, centred columns make C exactly the identity. QR of a centred
  # matrix gives such columns: they span a space orthogonal to the ones vector.
  a = np.random.default_rng(4).normal(size=(16, 4))
  q, _ = np.linalg.qr(a - a.mean(0))
  z = (4.0 * q).astype(np.float32)
  loss, metrics = losses.barlow_twins(z, z, eps=0.0)
  np.testing.assert_allclose(metrics["mean_diagonal"], 1.0, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)


def test_gradients_match_finite_differences(views):
  with jax.enable_x64(True):
    z1, z2 = (jnp.asarray(v, jnp.float64)[:6, :4] for v in views)
    check_grads(jax.jit(lambda a, b: losses.vicreg(a, b)[0]), (z1, z2), order=1, modes=("rev",))
    check_grads(
      jax.jit(lambda a, b: losses.barlow_twins(a, b)[0]), (z1, z2), order=1, modes=("rev",)
    )


def test_sharded_inputs_give_the_same_value():
  rng = np.random.default_rng(5)
  z1 = rng.normal(size=(16, 6)).astype(np.float32)
  z2 = (z1 + 0.3 * rng.normal(size=(16, 6))).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  s1, s2 = (jax.device_put(z, NamedSharding(mesh, P("data"))) for z in (z1, z2))
  for fn in (losses.vicreg, losses.barlow_twins):
    want, want_metrics = jax.jit(fn)(z1, z2)
    got, got_metrics = jax.jit(fn)(s1, s2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for key in want_metrics:
      np.testing.assert_allclose(
        got_metrics[key], want_metrics[key], rtol=1e-6, atol=1e-6, err_msg=key
      )


def test_bf16_inputs_computed_in_float32(views):
  z1, z2 = (jnp.asarray(v, jnp.bfloat16) for v in views)
  for fn, ref in (
    (losses.vicreg, _vicreg_reference),
    (losses.barlow_twins, _barlow_twins_reference),
  ):
    loss, metrics = fn(z1, z2)
    assert loss.dtype == jnp.float32
    assert all(m.dtype == jnp.float32 for m in metrics.values())
    want = ref(np.asarray(z1, np.float64), np.asarray(z2, np.float64))[0]
    np.testing.assert_allclose(loss, want, rtol=1e-5)


@pytest.mark.parametrize("fn", [losses.vicreg, losses.barlow_twins])
def test_bad_shapes_raise(fn):
  with pytest.raises(ValueError, match="same shape"):
    fn(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="at least 2"):
    fn(jnp.ones((1, 3)), jnp.ones((1, 3)))
