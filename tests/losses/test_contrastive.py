"""Tests for jaxssl.losses.contrastive against float64 NumPy derivations."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
import numpy as np
import pytest

from jaxssl import losses


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax_row(row):
  m = row.max()
  return row - m - np.log(np.sum(np.exp(row - m)))


def _nt_xent_reference(z1, z2, temperature):
  """Loop over the 2N anchors exactly as SimCLR eq. 1 is written."""
  z = _normalize(np.concatenate([z1, z2]).astype(np.float64))
  n2 = len(z)
  n = n2 // 2
  total, hits = 0.0, 0
  for i in range(n2):
    j = (i + n) % n2
    others = [k for k in range(n2) if k != i]
    sims = np.array([z[i] @ z[k] for k in others]) / temperature
    pos = z[i] @ z[j] / temperature
    total += -(pos - np.log(np.sum(np.exp(sims))))
    hits += int(np.argmax(sims) == others.index(j))
  return total / n2, hits / n2


def _sharded(*arrays):
  """Places arrays on 8 simulated devices, batch axis split over 'data'."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  return [jax.device_put(a, sharding) for a in arrays]


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_reference(rng, temperature):
  z1 = rng.normal(size=(6, 5)).astype(np.float32)
  z2 = (z1 + 0.7 * rng.normal(size=(6, 5))).astype(np.float32)
  loss, metrics = losses.nt_xent(z1, z2, temperature=temperature)
  want_loss, want_acc = _nt_xent_reference(z1, z2, temperature)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["contrastive_acc"], want_acc)
  zn = _normalize(np.concatenate([z1, z2]).astype(np.float64))
  pos = np.sum(zn * np.roll(zn, 6, axis=0), axis=-1) / temperature
  np.testing.assert_allclose(metrics["logits_pos"], pos.mean(), rtol=1e-5)
  assert all(m.shape == () for m in metrics.values())


def test_nt_xent_invariances(rng):
  z1 = rng.normal(size=(8, 4)).astype(np.float32)
  z2 = rng.normal(size=(8, 4)).astype(np.float32)
  loss, _ = losses.nt_xent(z1, z2)
  perm = rng.permutation(8)
  scale = rng.uniform(0.1, 10.0, size=(8, 1)).astype(np.float32)
  for a, b in [
    (z1[perm], z2[perm]),  # jointly permuted batch
    (z2, z1),  # views swapped
    (z1 * scale, z2 * 3.0),
  ]:  # cosine ignores norms
    np.testing.assert_allclose(losses.nt_xent(a, b)[0], loss, rtol=1e-5)


def test_nt_xent_collapsed_embeddings_give_log_of_candidates():
  # All views identical: every candidate is equally likely, loss = log(2N-1),
  # and masking the diagonal must not produce NaN gradients.
  z = jnp.ones((4, 3))
  loss, metrics = losses.nt_xent(z, z)
  np.testing.assert_allclose(loss, np.log(7), rtol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], np.log(7), rtol=1e-5)
  grads = jax.jit(jax.grad(lambda a, b: losses.nt_xent(a, b)[0], argnums=(0, 1)))(z, z)
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_nt_xent_bf16_inputs_computed_in_float32(rng):
  z1 = jnp.asarray(rng.normal(size=(6, 5)), jnp.bfloat16)
  z2 = jnp.asarray(rng.normal(size=(6, 5)), jnp.bfloat16)
  loss, metrics = losses.nt_xent(z1, z2)
  assert loss.dtype == jnp.float32
  assert all(m.dtype == jnp.float32 for m in metrics.values())
  want, _ = _nt_xent_reference(np.asarray(z1, np.float64), np.asarray(z2, np.float64), 0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_gradients_match_finite_differences(rng):
  with jax.enable_x64(True):
    z1 = jnp.asarray(rng.normal(size=(4, 3)))
    z2 = jnp.asarray(rng.normal(size=(4, 3)))
    check_grads(
      jax.jit(lambda a, b: losses.nt_xent(a, b, temperature=0.5)[0]),
      (z1, z2),
      order=1,
      modes=("rev",),
    )
    check_grads(jax.jit(lambda a, b: losses.info_nce(a, b)[0]), (z1, z2), order=1, modes=("rev",))
    check_grads(
      jax.jit(lambda a, b, s: losses.clip(a, b, s)[0]),
      (z1, z2, jnp.asarray(3.0)),
      order=1,
      modes=("rev",),
    )
    check_grads(
      jax.jit(lambda a, b, t, c: losses.siglip(a, b, t, c)[0]),
      (z1, z2, jnp.asarray(2.0), jnp.asarray(-1.0)),
      order=1,
      modes=("rev",),
    )


def test_sharded_inputs_give_the_same_value(rng):
  z1 = rng.normal(size=(16, 8)).astype(np.float32)
  z2 = rng.normal(size=(16, 8)).astype(np.float32)
  fns = {
    "nt_xent": lambda a, b: losses.nt_xent(a, b),
    "info_nce": lambda a, b: losses.info_nce(a, b),
    "clip": lambda a, b: losses.clip(a, b, jnp.float32(10.0)),
    "siglip": lambda a, b: losses.siglip(a, b, jnp.float32(10.0), jnp.float32(-10.0)),
  }
  s1, s2 = _sharded(z1, z2)
  assert len(s1.sharding.device_set) == 8
  for name, fn in fns.items():
    want, want_metrics = jax.jit(fn)(z1, z2)
    got, got_metrics = jax.jit(fn)(s1, s2)
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
    for key in want_metrics:
      np.testing.assert_allclose(
        got_metrics[key], want_metrics[key], rtol=1e-6, atol=1e-6, err_msg=key
      )


def test_info_nce_matches_reference(rng):
  q = rng.normal(size=(5, 4)).astype(np.float32)
  k = rng.normal(size=(5, 4)).astype(np.float32)
  temperature = 0.2
  loss, metrics = losses.info_nce(q, k, temperature=temperature)
  logits = _normalize(q.astype(np.float64)) @ _normalize(k.astype(np.float64)).T / temperature
  ce = np.mean([-_log_softmax_row(logits[i])[i] for i in range(5)])
  np.testing.assert_allclose(loss, 2 * temperature * ce, rtol=1e-5)
  np.testing.assert_allclose(
    metrics["contrastive_acc"], np.mean(np.argmax(logits, 1) == np.arange(5))
  )


def test_clip_matches_reference_and_is_symmetric(rng):
  img = rng.normal(size=(5, 4)).astype(np.float32)
  txt = rng.normal(size=(5, 4)).astype(np.float32)
  scale = 14.3
  loss, metrics = losses.clip(img, txt, jnp.float32(scale))
  logits = scale * _normalize(img.astype(np.float64)) @ _normalize(txt.astype(np.float64)).T
  i2t = np.mean([-_log_softmax_row(logits[i])[i] for i in range(5)])
  t2i = np.mean([-_log_softmax_row(logits[:, j])[j] for j in range(5)])
  np.testing.assert_allclose(loss, (i2t + t2i) / 2, rtol=1e-5)
  np.testing.assert_allclose(losses.clip(txt, img, jnp.float32(scale))[0], loss, rtol=1e-5)
  np.testing.assert_allclose(
    metrics["img_to_txt_acc"], np.mean(np.argmax(logits, 1) == np.arange(5))
  )
  np.testing.assert_allclose(
    metrics["txt_to_img_acc"], np.mean(np.argmax(logits, 0) == np.arange(5))
  )


def test_siglip_equals_pairwise_double_loop(rng):
  img = rng.normal(size=(5, 4)).astype(np.float32)
  txt = rng.normal(size=(5, 4)).astype(np.float32)
  t, b = 10.0, -10.0
  loss, metrics = losses.siglip(img, txt, jnp.float32(t), jnp.float32(b))
  zi = _normalize(img.astype(np.float64))
  zt = _normalize(txt.astype(np.float64))
  total = 0.0
  for i in range(5):
    for j in range(5):
      label = 1.0 if i == j else -1.0
      logit = t * zi[i] @ zt[j] + b
      total += np.log1p(np.exp(-label * logit))  # -log sigmoid(label*logit)
  np.testing.assert_allclose(loss, total / 5, rtol=1e-5)
  np.testing.assert_allclose(metrics["logits_pos"], np.mean(t * np.sum(zi * zt, -1) + b), rtol=1e-5)


@pytest.mark.parametrize(
  "fn",
  [
    lambda a, b: losses.nt_xent(a, b),
    lambda a, b: losses.info_nce(a, b),
    lambda a, b: losses.clip(a, b, 1.0),
    lambda a, b: losses.siglip(a, b, 1.0, 0.0),
  ],
)
def test_mismatched_shapes_raise(fn):
  with pytest.raises(ValueError, match="same shape"):
    fn(jnp.ones((4, 3)), jnp.ones((5, 3)))
  with pytest.raises(ValueError, match=r"\[batch, dim\]"):
    fn(jnp.ones((4, 3, 2)), jnp.ones((4, 3, 2)))
  with pytest.raises(ValueError, match="at least 2"):
    fn(jnp.ones((1, 3)), jnp.ones((1, 3)))


def test_scalar_temperature_required():
  with pytest.raises(ValueError, match="scalar"):
    losses.clip(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((2,)))
  with pytest.raises(ValueError, match="scalars"):
    losses.siglip(jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0, jnp.ones((4,)))
