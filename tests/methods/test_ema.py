"""EMA teacher helpers: the update rule, the three momentum schedules, the schedule length."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config_lib
from jaxssl.methods import ema


def test_ema_update_matches_the_formula_leaf_by_leaf():
  rng = np.random.default_rng(0)
  teacher = {"a": rng.normal(size=(3, 4)), "b": {"c": rng.normal(size=(5,))}}
  student = jax.tree.map(lambda x: rng.normal(size=x.shape), teacher)
  out = ema.ema_update(jax.tree.map(jnp.float32, teacher), jax.tree.map(jnp.float32, student), 0.9)
  expected = jax.tree.map(lambda t, s: t * 0.9 + s * 0.1, teacher, student)  # float64
  for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert jax.tree.structure(out) == jax.tree.structure(teacher)
  # m = 1 keeps the teacher exactly, m = 0 copies the student exactly.
  t32, s32 = jax.tree.map(jnp.float32, teacher), jax.tree.map(jnp.float32, student)
  for got, want in zip(jax.tree.leaves(ema.ema_update(t32, s32, 1.0)), jax.tree.leaves(t32)):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(ema.ema_update(t32, s32, 0.0)), jax.tree.leaves(s32)):
    np.testing.assert_array_equal(got, want)


def test_ema_update_keeps_the_teacher_dtype_and_traces():
  teacher = {"w": jnp.ones((2,), jnp.bfloat16)}
  student = {"w": jnp.zeros((2,), jnp.float32)}
  out = jax.jit(ema.ema_update)(teacher, student, jnp.float32(0.5))
  assert out["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out["w"], np.float32), [0.5, 0.5])
  # m = 0.9995 is 1.0 in bfloat16: the blend must not round m to the teacher's dtype first.
  moved = ema.ema_update(
    {"w": jnp.zeros((2,), jnp.bfloat16)}, {"w": jnp.ones((2,), jnp.float32)}, 0.9995
  )
  assert moved["w"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(moved["w"], np.float32), [5e-4, 5e-4], rtol=1e-2)


def _cosine_reference(k, total, base):
  k = min(max(k, 0), total)
  return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


@pytest.mark.parametrize("base", [0.996, 0.99])
def test_cosine_momentum_closed_form(base):
  total = 1000
  assert float(ema.cosine_momentum(0, total, base)) == pytest.approx(base, abs=1e-7)
  assert float(ema.cosine_momentum(total // 2, total, base)) == pytest.approx(
    (1.0 + base) / 2.0, abs=1e-7
  )
  assert float(ema.cosine_momentum(total, total, base)) == pytest.approx(1.0, abs=1e-7)
  for k in (1, 137, 999, 1500):  # past the end it stays at 1
    assert float(ema.cosine_momentum(k, total, base)) == pytest.approx(
      _cosine_reference(k, total, base), abs=1e-7
    )
  # Traced step (as in post_update) gives the same numbers.
  traced = jax.jit(lambda k: ema.cosine_momentum(k, total, base))(jnp.int32(137))
  assert float(traced) == pytest.approx(_cosine_reference(137, total, base), abs=1e-7)


def test_linear_momentum_closed_form():
  total, base = 400, 0.996
  assert float(ema.linear_momentum(0, total, base)) == pytest.approx(base, abs=1e-7)
  assert float(ema.linear_momentum(200, total, base)) == pytest.approx((base + 1) / 2, abs=1e-7)
  assert float(ema.linear_momentum(400, total, base)) == pytest.approx(1.0, abs=1e-7)
  assert float(ema.linear_momentum(100, total, base)) == pytest.approx(
    base + (1 - base) * 0.25, abs=1e-7
  )
  assert float(ema.linear_momentum(800, total, base)) == pytest.approx(1.0, abs=1e-7)
  # I-JEPA allows another end value.
  assert float(ema.linear_momentum(200, total, 0.9, end=0.99)) == pytest.approx(0.945, abs=1e-7)


def test_annealed_momentum_is_linear_then_constant():
  anneal, base, end = 300, 0.999, 0.9999  # data2vec's base and end decays
  assert float(ema.annealed_momentum(0, anneal, base, end)) == pytest.approx(base, abs=1e-7)
  assert float(ema.annealed_momentum(150, anneal, base, end)) == pytest.approx(
    (base + end) / 2, abs=1e-7
  )
  assert float(ema.annealed_momentum(300, anneal, base, end)) == pytest.approx(end, abs=1e-7)
  assert float(ema.annealed_momentum(10_000, anneal, base, end)) == pytest.approx(end, abs=1e-7)


def test_schedules_reject_an_empty_run():
  with pytest.raises(ValueError, match="total_steps=0 must be >= 1"):
    ema.cosine_momentum(0, 0, 0.99)


def test_schedule_length_follows_the_trainers_duration():
  c = config_lib.base_config()
  c.data.name = "digits"  # 1,397 train examples (a constant: no data is read)
  c.batch_size = 100
  c.total_steps = 7
  assert ema.schedule_length(c) == 7
  c.total_steps = None
  c.total_epochs = 2.0
  assert ema.schedule_length(c) == math.ceil(2 * 1397 / 100) == config_lib.total_steps(c, 1397)
  c.total_epochs = None
  c.total_examples = 1050
  assert ema.schedule_length(c) == 11
  c.total_examples = None
  c.total_epochs = 1.0
  c.data.split = "validation"
  with pytest.raises(ValueError, match="'validation' is not a split of 'digits'"):
    ema.schedule_length(c)
