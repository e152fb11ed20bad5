"""MoCo v3 method: symmetric InfoNCE of queries against momentum keys, heads, stop-gradient,
momentum schedule, encode, one train run with the eval handoff."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.methods import byol
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("moco_v3", arg)


_batch = harness.random_views


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def _ctr64(q, k, temperature):
  """Independent float64 MoCo v3 `contrastive_loss`: 2T x CE(q.k^T / T, arange)."""
  q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  k = k / np.linalg.norm(k, axis=-1, keepdims=True)
  logits = q @ k.T / temperature
  logits -= logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.mean(np.diag(log_probs)) * 2 * temperature


def test_heads_follow_the_paper(setup):
  method, _, params, aux = setup
  assert methods.get("moco_v3").__name__ == "Method"
  assert method.temperature == 0.2 and method.base_momentum == 0.99
  # Projector: 3 Dense layers, BN on the hidden ones, a final BN without scale/bias.
  assert set(params["projector"]) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2"}
  assert set(aux["model_state"]["batch_stats"]["projector"]) == {"bn_0", "bn_1", "bn_2"}
  assert params["projector"]["dense_2"]["kernel"].shape == (32, 16)
  assert set(params["projector"]["dense_2"]) == {"kernel"}
  # Predictor: 2 layers back to the projection size, ending like the projector in a bias-free
  # Dense and a BN without affine (builder.py `_build_mlp(2, dim, mlp_dim, dim)`, last_bn=True);
  # no predictor in the momentum encoder.
  assert set(params["predictor"]) == {"dense_0", "bn_0", "dense_1"}
  assert set(params["predictor"]["dense_1"]) == {"kernel"}
  assert set(aux["model_state"]["batch_stats"]["predictor"]) == {"bn_0", "bn_1"}
  assert params["predictor"]["dense_1"]["kernel"].shape == (32, 16)
  assert set(aux["teacher"]) == {"encoder", "projector"}


def test_loss_is_symmetric_info_nce_of_queries_and_momentum_keys(setup):
  method, batch, params, aux = setup
  teacher = jax.tree.map(lambda x: x * 0.9 + 0.01, aux["teacher"])
  aux = {**aux, "teacher": teacher}
  loss, (metrics, _) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)

  def forward(variables, state, images, predict):
    return method.model.apply(
      {"params": variables, **state}, images, train=True, predict=predict, mutable=["batch_stats"]
    )

  (_, q1), state = forward(params, aux["model_state"], batch["view1"], True)
  (_, q2), _ = forward(params, state, batch["view2"], True)
  (k1, _), tstate = forward(teacher, aux["teacher_state"], batch["view1"], False)
  (k2, _), _ = forward(teacher, tstate, batch["view2"], False)
  want = _ctr64(q1, k2, 0.2) + _ctr64(q2, k1, 0.2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert {"contrastive_acc", "logits_pos", "teacher_momentum", "embedding_std", "rankme"} <= set(
    metrics
  )
  assert 0.0 <= float(metrics["contrastive_acc"]) <= 1.0
  assert float(metrics["teacher_momentum"]) == pytest.approx(0.99, abs=1e-7)


def test_keys_are_stop_gradiented(setup):
  method, batch, params, aux = setup
  rng = jax.random.PRNGKey(1)

  def loss(p, teacher):
    return method.loss_fn(p, {**aux, "teacher": teacher}, batch, rng, 0)[0]

  fixed, grad_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, byol.target_part(params))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_teacher))
  tied = jax.jit(jax.grad(lambda p: loss(p, byol.target_part(p))))(params)
  for t, f in zip(jax.tree.leaves(tied), jax.tree.leaves(fixed)):
    np.testing.assert_allclose(t, f, rtol=1e-6, atol=1e-9)
  for path, g in jax.tree_util.tree_flatten_with_path(fixed)[0]:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  for part in ("encoder", "projector", "predictor"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(fixed[part])) > 0, part


@pytest.mark.parametrize("step", [0, 2])
def test_post_update_moves_the_momentum_encoder_by_the_cosine_schedule(setup, step):
  method, _, params, aux = setup
  teacher = jax.tree.map(lambda x: x - 0.5, aux["teacher"])
  state = TrainState(
    step=jnp.int32(step + 1),
    params=params,
    opt_state=None,
    aux={**aux, "teacher": teacher},
    rng=None,
  )
  new = method.post_update(state)
  m = 1 - (1 - 0.99) * (math.cos(math.pi * step / 6) + 1) / 2  # adjust_moco_momentum, K = 6
  assert m == pytest.approx({0: 0.99, 2: 0.9925}[step])
  for got, t, s in zip(
    jax.tree.leaves(new.aux["teacher"]),
    jax.tree.leaves(teacher),
    jax.tree.leaves(byol.target_part(params)),
  ):
    want = np.asarray(t, np.float64) * m + np.asarray(s, np.float64) * (1 - m)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_encode_uses_the_base_encoder(setup):
  method, batch, params, aux = setup
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)
  direct, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["view1"])
  np.testing.assert_allclose(feats, direct, rtol=1e-6)


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "moco_v3")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert {"train/contrastive_acc", "train/rankme"} <= set(logged)
  feats, _ = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and np.all(np.isfinite(feats))


def test_imagenet_recipe_freezes_exactly_the_patch_projection_and_reads_cls(setup):
  _, _, params, _ = setup
  recipe = _config("imagenet")
  assert recipe.model.pool == "cls"
  from jaxssl import optim  # pylint: disable=g-import-not-at-top

  mask = optim.frozen_mask(recipe.optim.frozen, params)
  frozen = {jax.tree_util.keystr(p) for p, f in jax.tree_util.tree_leaves_with_path(mask) if f}
  assert frozen == {"['encoder']['embedding']['bias']", "['encoder']['embedding']['kernel']"}
  recipe.optim.warmup_steps = 0
  tx = optim.make_optimizer(recipe.optim, optim.make_schedule(recipe.optim, 256, 10))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(
    float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates["encoder"]["embedding"])
  )
  rest = {k: v for k, v in updates["encoder"].items() if k != "embedding"}
  assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(rest))


def test_imagenet_recipe_is_vit_small_with_12_heads_and_exact_gelu():
  recipe = _config("imagenet")
  # vits.py vit_small: embed 384, depth 12, num_heads=12 (head dim 32); timm's nn.GELU (erf).
  assert recipe.model.num_heads == 12 and recipe.model.gelu_approximate is False
  assert recipe.moco_v3.predictor.final_bn is True
  assert recipe.optim.warmup_steps == 40 * (1281167 // 4096) == 12_480  # drop_last=True
  from jaxssl import models  # pylint: disable=g-import-not-at-top

  encoder = models.build_encoder(recipe.model)
  images = jnp.zeros((1, 224, 224, 3))
  params = nn.unbox(jax.eval_shape(encoder.init, jax.random.key(0), images))["params"]
  shapes = {
    jax.tree_util.keystr(p): leaf.shape
    for p, leaf in jax.tree_util.tree_leaves_with_path(params)
    if jax.tree_util.keystr(p).endswith("['query_kernel']")
  }
  assert len(shapes) == 12 and set(shapes.values()) == {(384, 12, 32)}
