"""Tests for jaxssl.losses.distillation against float64 NumPy derivations."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
import numpy as np
import pytest

from jaxssl import losses


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def _dino_reference(student, teacher, center, student_temp=0.1, teacher_temp=0.04):
  """The official DINOLoss.forward loop, in float64."""
  student, teacher = student.astype(np.float64), teacher.astype(np.float64)
  targets = _softmax((teacher - center) / teacher_temp)
  total, n_terms = 0.0, 0
  for it in range(len(teacher)):
    for i_s in range(len(student)):
      if i_s == it:
        continue
      ce = -np.sum(targets[it] * _log_softmax(student[i_s] / student_temp), -1)
      total += ce.mean()
      n_terms += 1
  return total / n_terms


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_byol_matches_reference_and_stops_target_gradients(rng):
  p1, p2, t1, t2 = (rng.normal(size=(5, 4)).astype(np.float32) for _ in range(4))
  loss, metrics = losses.byol(p1, p2, t1, t2)
  want = []
  for p, t in ((p1, t2), (p2, t1)):
    for n in range(5):
      a = p[n] / np.linalg.norm(p[n].astype(np.float64))
      b = t[n] / np.linalg.norm(t[n].astype(np.float64))
      want.append(np.sum((a - b) ** 2))  # eq. 2 as written
  np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)
  np.testing.assert_allclose(metrics["cosine"], 1 - np.mean(want) / 2, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda *a: losses.byol(*a)[0], argnums=(0, 1, 2, 3)))(p1, p2, t1, t2)
  assert np.any(grads[0] != 0) and np.any(grads[1] != 0)
  assert np.all(grads[2] == 0) and np.all(grads[3] == 0)
  with pytest.raises(ValueError, match="same shape"):
    losses.byol(p1, p2, t1, t2[:, :3])


def test_dino_matches_official_loop(rng):
  student = rng.normal(size=(4, 3, 6)).astype(np.float32)
  teacher = rng.normal(size=(2, 3, 6)).astype(np.float32)
  center = rng.normal(size=6).astype(np.float32) * 0.1
  for temps in ({}, {"student_temp": 0.2, "teacher_temp": 0.07}):
    loss, metrics = losses.dino(student, teacher, center, **temps)
    want = _dino_reference(student, teacher, center, **temps)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
  # Methods schedule the teacher temperature by step: it may be traced.
  scheduled = jax.jit(
    lambda tt: losses.dino(student, teacher, center, student_temp=0.2, teacher_temp=tt)[0]
  )
  np.testing.assert_allclose(scheduled(0.07), want, rtol=1e-5)
  targets = _softmax((teacher.astype(np.float64) - center) / 0.07)
  entropy = -np.sum(targets * np.log(targets), -1).mean()
  np.testing.assert_allclose(metrics["teacher_entropy"], entropy, rtol=1e-4)
  np.testing.assert_allclose(metrics["kl_teacher_student"], want - entropy, rtol=1e-4)
  np.testing.assert_allclose(metrics["batch_center"], teacher.mean((0, 1)), rtol=1e-6)
  assert metrics["batch_center"].shape == (6,)
  assert all(v.shape == () for k, v in metrics.items() if k != "batch_center")
  marginal = targets.mean((0, 1))
  np.testing.assert_allclose(
    metrics["teacher_marginal_entropy"], -np.sum(marginal * np.log(marginal)), rtol=1e-4
  )


def test_dino_softmax_shift_invariance(rng):
  student = rng.normal(size=(3, 4, 5)).astype(np.float32)
  teacher = rng.normal(size=(2, 4, 5)).astype(np.float32)
  center = np.zeros(5, np.float32)
  loss, _ = losses.dino(student, teacher, center)
  # A constant per row (per view and example) leaves every softmax unchanged;
  # so does a constant added to the whole center.
  shift_s = rng.normal(size=(3, 4, 1)).astype(np.float32)
  shift_t = rng.normal(size=(2, 4, 1)).astype(np.float32)
  np.testing.assert_allclose(
    losses.dino(student + shift_s, teacher + shift_t, center + 5.0)[0], loss, rtol=1e-5
  )
  # Permuting the batch jointly, or the prototype axis jointly, is harmless.
  perm = rng.permutation(4)
  np.testing.assert_allclose(
    losses.dino(student[:, perm], teacher[:, perm], center)[0], loss, rtol=1e-5
  )


def test_dino_gradients(rng):
  with jax.enable_x64(True):
    student = jnp.asarray(rng.normal(size=(3, 2, 4)))
    teacher = jnp.asarray(rng.normal(size=(2, 2, 4)))
    center = jnp.asarray(rng.normal(size=4))
    check_grads(
      jax.jit(lambda s: losses.dino(s, teacher, center)[0]), (student,), order=1, modes=("rev",)
    )
    grads = jax.jit(jax.grad(lambda s, t, c: losses.dino(s, t, c)[0], argnums=(1, 2)))(
      student, teacher, center
    )
    assert all(np.all(g == 0) for g in grads)  # teacher side is a target


def test_dino_sharded_over_batch_gives_the_same_value(rng):
  student = rng.normal(size=(4, 16, 8)).astype(np.float32)
  teacher = rng.normal(size=(2, 16, 8)).astype(np.float32)
  center = rng.normal(size=8).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = NamedSharding(mesh, P(None, "data"))
  fn = jax.jit(losses.dino)
  want, want_metrics = fn(student, teacher, center)
  got, got_metrics = fn(jax.device_put(student, batch), jax.device_put(teacher, batch), center)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for key in want_metrics:
    np.testing.assert_allclose(
      got_metrics[key], want_metrics[key], rtol=1e-6, atol=1e-6, err_msg=key
    )


def test_dino_shape_errors():
  with pytest.raises(ValueError, match=r"\[views, batch, K\]"):
    losses.dino(jnp.ones((4, 5)), jnp.ones((2, 5)), jnp.zeros(5))
  with pytest.raises(ValueError, match="teacher views"):
    losses.dino(jnp.ones((2, 3, 5)), jnp.ones((3, 3, 5)), jnp.zeros(5))
  with pytest.raises(ValueError, match="center must have shape"):
    losses.dino(jnp.ones((4, 3, 5)), jnp.ones((2, 3, 5)), jnp.zeros(4))


def test_dino_center_update():
  center = jnp.array([1.0, 2.0])
  new = losses.dino_center_update(center, jnp.array([3.0, -2.0]))
  np.testing.assert_allclose(new, [0.9 + 0.3, 1.8 - 0.2], rtol=1e-6)
  new = losses.dino_center_update(center, jnp.array([3.0, -2.0]), momentum=0.5)
  np.testing.assert_allclose(new, [2.0, 0.0])


def _sinkhorn_reference(logits, temp, n_iters):
  """DINOv2's sinkhorn_knopp_teacher, exp domain, float64."""
  q = np.exp(logits.astype(np.float64) / temp).T  # [K, B]
  k, b = q.shape
  q /= q.sum()
  for _ in range(n_iters):
    q /= q.sum(1, keepdims=True)
    q /= k
    q /= q.sum(0, keepdims=True)
    q /= b
  return (q * b).T


def test_sinkhorn_knopp_matches_dinov2(rng):
  logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
  for n_iters in (0, 1, 3):
    got = losses.sinkhorn_knopp(logits, teacher_temp=0.5, n_iters=n_iters)
    want = _sinkhorn_reference(logits.reshape(12, 5), 0.5, n_iters)
    np.testing.assert_allclose(got, want.reshape(2, 6, 5), rtol=1e-5, atol=1e-7)
  # Sharp temperature: exp(x / 0.04) would overflow float32 in the exp domain.
  sharp = losses.sinkhorn_knopp(logits * 10, teacher_temp=0.04, n_iters=50)
  assert np.all(np.isfinite(sharp))
  np.testing.assert_allclose(sharp.sum(-1), 1.0, rtol=1e-5)
  # Converged: each prototype receives an equal share of the 12 samples.
  balanced = losses.sinkhorn_knopp(logits, teacher_temp=0.5, n_iters=50)
  np.testing.assert_allclose(balanced.sum((0, 1)), 12 / 5, rtol=1e-4)
  grad = jax.jit(
    jax.grad(lambda x: jnp.sum(losses.sinkhorn_knopp(x, teacher_temp=0.1) * jnp.arange(5.0)))
  )(logits)
  assert np.all(grad == 0)


def test_dino_cross_entropy_with_sinkhorn_targets(rng):
  student = rng.normal(size=(3, 4, 5)).astype(np.float32)
  teacher = rng.normal(size=(2, 4, 5)).astype(np.float32)
  probs = losses.sinkhorn_knopp(teacher, teacher_temp=0.07)
  loss, _ = losses.dino_cross_entropy(student, probs)
  want = 0.0
  for it in range(2):
    for i_s in range(3):
      if it != i_s:
        want += (
          -np.sum(np.asarray(probs[it], np.float64) * _log_softmax(student[i_s] / 0.1), -1).mean()
          / 4
        )
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_koleo_matches_brute_force(rng):
  x = rng.normal(size=(7, 3)).astype(np.float32)
  loss, metrics = losses.koleo(x)
  xn = x.astype(np.float64) / np.linalg.norm(x, axis=-1, keepdims=True)
  dists = []
  for i in range(7):
    dists.append(min(np.linalg.norm(xn[i] - xn[j]) for j in range(7) if j != i))
  np.testing.assert_allclose(loss, -np.mean(np.log(np.array(dists) + 1e-8)), rtol=1e-5)
  np.testing.assert_allclose(metrics["nn_distance"], np.mean(dists), rtol=1e-5)
  # Scale invariance (features are normalised) and permutation invariance.
  np.testing.assert_allclose(losses.koleo(3.0 * x[::-1])[0], loss, rtol=1e-5)
  with jax.enable_x64(True):
    check_grads(
      jax.jit(lambda a: losses.koleo(a)[0]), (jnp.asarray(x, jnp.float64),), order=1, modes=("rev",)
    )


def test_koleo_duplicate_points_have_finite_gradients():
  x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  loss, _ = losses.koleo(x)
  grad = jax.jit(jax.grad(lambda a: losses.koleo(a)[0]))(x)
  assert np.isfinite(loss) and np.all(np.isfinite(grad))
  with pytest.raises(ValueError, match="batch >= 2"):
    losses.koleo(jnp.ones((1, 3)))


def _koleo64(x):
  """DINOv2's KoLeoLoss on one set, in float64: -mean log(nearest-neighbour distance)."""
  xn = np.asarray(x, np.float64) / np.linalg.norm(x, axis=-1, keepdims=True)
  d = [min(np.linalg.norm(xn[i] - xn[j]) for j in range(len(x)) if j != i) for i in range(len(x))]
  return -np.mean(np.log(np.array(d) + 1e-8))


def test_koleo_per_group_is_the_mean_of_per_gpu_losses(rng):
  x = rng.normal(size=(12, 3)).astype(np.float32)
  # DINOv2: each GPU's koleo over its own images, then averaged over GPUs (groups of 4 here).
  want = np.mean([_koleo64(x[i : i + 4]) for i in range(0, 12, 4)])
  loss, _ = losses.koleo(x, group_size=4)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert abs(want - _koleo64(x)) > 1e-3  # the neighbours differ from the global batch's
  np.testing.assert_allclose(losses.koleo(x, group_size=12)[0], losses.koleo(x)[0], rtol=1e-6)
  for bad in (5, 1):
    with pytest.raises(ValueError, match="group_size"):
      losses.koleo(x, group_size=bad)


def _sinkhorn64(logits, temp, iters=3):
  """DINOv2's sinkhorn_knopp_teacher on [B, K] samples, in float64."""
  q = np.exp(np.asarray(logits, np.float64) / temp).T  # [K, B]
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(1, keepdims=True)
    q /= k
    q /= q.sum(0, keepdims=True)
    q /= b
  return (q * b).T


def test_sinkhorn_knopp_on_the_masked_samples_only(rng):
  logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # [V, B, N, K]
  mask = rng.random(size=(2, 3, 4)) < 0.4
  probs = np.asarray(losses.sinkhorn_knopp(logits, teacher_temp=0.1, mask=mask))
  # DINOv2's ibot_patch_loss: Sinkhorn-Knopp over the masked patches gathered together.
  want = _sinkhorn64(logits[mask], 0.1)
  np.testing.assert_allclose(probs[mask], want, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)  # other rows: finite distributions
  np.testing.assert_allclose(
    losses.sinkhorn_knopp(logits, teacher_temp=0.1, mask=np.ones(mask.shape, bool)),
    losses.sinkhorn_knopp(logits, teacher_temp=0.1),
    rtol=1e-5,
  )
  none = losses.sinkhorn_knopp(logits, teacher_temp=0.1, mask=np.zeros(mask.shape, bool))
  assert np.all(np.isfinite(none))
  with pytest.raises(ValueError, match="mask must be"):
    losses.sinkhorn_knopp(logits, teacher_temp=0.1, mask=mask[..., :3])


def test_ibot_patch_loss_matches_reference(rng):
  student = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # [V, B, N, K]
  teacher = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  mask = rng.random(size=(2, 3, 4)) < 0.5
  mask[0, 0] = False  # an image with nothing masked
  mask[1, 2] = True
  center = rng.normal(size=5).astype(np.float32) * 0.1
  loss, metrics = losses.ibot_patch_loss(student, teacher, mask, center)
  targets = _softmax((teacher.astype(np.float64) - center) / 0.04)
  log_probs = _log_softmax(student.astype(np.float64) / 0.1)
  per_image = []
  for v in range(2):
    for b in range(3):
      terms = [-np.sum(targets[v, b, n] * log_probs[v, b, n]) for n in range(4) if mask[v, b, n]]
      per_image.append(np.sum(terms) / max(len(terms), 1))
  np.testing.assert_allclose(loss, np.mean(per_image), rtol=1e-5)
  np.testing.assert_allclose(metrics["mask_ratio"], mask.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["batch_center"], teacher.mean((0, 1, 2)), rtol=1e-5, atol=1e-7)


def test_ibot_only_masked_patches_count_and_teacher_gets_no_gradient(rng):
  student = rng.normal(size=(3, 4, 5)).astype(np.float32)  # [B, N, K]
  teacher = rng.normal(size=(3, 4, 5)).astype(np.float32)
  mask = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], bool)
  center = np.zeros(5, np.float32)
  loss, _ = losses.ibot_patch_loss(student, teacher, mask, center)
  changed = np.where(
    mask[..., None], student, student + 7 * rng.normal(size=student.shape).astype(np.float32)
  )
  np.testing.assert_allclose(
    losses.ibot_patch_loss(changed, teacher, mask, center)[0], loss, rtol=1e-6
  )
  grads = jax.jit(
    jax.grad(lambda s, t: losses.ibot_patch_loss(s, t, mask, center)[0], argnums=(0, 1))
  )(student, teacher)
  assert np.all(grads[0][~mask] == 0) and np.any(grads[0][mask] != 0)
  assert np.all(grads[1] == 0)
  with pytest.raises(ValueError, match="mask must be"):
    losses.ibot_patch_loss(student, teacher, mask[:, :3], center)
