"""BYOL method: loss from the model outputs, stop-gradient on the target, EMA schedule,
asymmetric views, encode, one train run with the eval handoff."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.data import datasets
from jaxssl.methods import byol
from jaxssl.state import TrainState


def _config(arg="test"):
  return harness.load_config("byol", arg)


_batch = harness.random_views


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def _byol_loss64(p1, p2, t1, t2):
  """Independent float64 byol_experiment.py loss: repr_loss = regression_loss(p1, t2) +
  regression_loss(p2, t1), averaged over the batch, with helpers.py's regression_loss
  ||x/||x|| - y/||y||||^2 (each norm sqrt(max(||.||^2, 1e-12)))."""

  def normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.maximum(np.sum(x * x, -1, keepdims=True), 1e-12))

  def regression_loss(x, y):
    return np.sum((normalize(x) - normalize(y)) ** 2, -1)

  return np.mean(regression_loss(p1, t2) + regression_loss(p2, t1))


def test_registry_and_init_copies_encoder_and_projector_into_the_target(setup):
  method, _, params, aux = setup
  assert methods.get("byol") is byol.Method
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(aux["teacher"]) == {"encoder", "projector"}  # no predictor in the target
  for t, s in zip(jax.tree.leaves(aux["teacher"]), jax.tree.leaves(byol.target_part(params))):
    np.testing.assert_array_equal(t, s)
  assert set(aux["teacher_state"]["batch_stats"]) == {"projector"}  # vit_test has no BN


def test_loss_is_byol_of_online_predictions_and_target_projections(setup):
  method, batch, params, aux = setup
  # Make the target differ from the online network, as it does after training starts.
  teacher = jax.tree.map(lambda x: x * 0.9 + 0.01, aux["teacher"])
  aux = {**aux, "teacher": teacher}
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)

  def forward(variables, state, images, predict):
    out, updates = method.model.apply(
      {"params": variables, **state}, images, train=True, predict=predict, mutable=["batch_stats"]
    )
    return out, updates

  (_, p1), state = forward(params, aux["model_state"], batch["view1"], True)
  (_, p2), state = forward(params, state, batch["view2"], True)
  (t1, _), tstate = forward(teacher, aux["teacher_state"], batch["view1"], False)
  (t2, _), tstate = forward(teacher, tstate, batch["view2"], False)
  np.testing.assert_allclose(float(loss), _byol_loss64(p1, p2, t1, t2), rtol=1e-5)
  assert {"cosine", "teacher_momentum", "embedding_std", "rankme"} <= set(metrics)
  assert float(metrics["teacher_momentum"]) == pytest.approx(0.996, abs=1e-7)
  # Both networks' BatchNorm statistics advance, each from its own forward passes.
  for got, want in ((new_aux["model_state"], state), (new_aux["teacher_state"], tstate)):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-6)
  assert not np.allclose(
    jax.tree.leaves(new_aux["teacher_state"])[0], jax.tree.leaves(aux["teacher_state"])[0]
  )
  assert new_aux["teacher"] is teacher  # only post_update moves the target's weights


def test_directions_mean_halves_the_loss_and_unknown_values_fail(setup):
  """'mean' (runs recorded before the key existed) is losses.byol itself: half the official."""
  method, batch, params, aux = setup
  config = _config()
  config.byol.directions = "mean"
  args = (params, aux, batch, jax.random.PRNGKey(1), 0)
  np.testing.assert_allclose(
    float(methods.build(config).loss_fn(*args)[0]),
    0.5 * float(method.loss_fn(*args)[0]),
    rtol=1e-6,
  )
  config.byol.directions = "average"
  with pytest.raises(ValueError, match="directions='average'"):
    methods.build(config)


@pytest.mark.parametrize("arg", ["test", "fashion_mnist", "imagenet"])
def test_projector_and_predictor_outputs_have_no_bias(arg):
  # utils/networks.py MLP: Linear(hidden, bias) -> BN -> ReLU -> Linear(out, with_bias=False),
  # no final BN, for both the projector and the predictor.
  config = _config(arg)
  model = byol.build_online_network(config, config.byol.predictor)
  size = config.data.image_size
  images = jnp.zeros((2, size, size, 3 if arg == "imagenet" else 1))
  # Shapes only: initialising a ResNet-50 would be slow.
  variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), images))
  for part in ("projector", "predictor"):
    params = variables["params"][part]
    assert set(params) == {"dense_0", "bn_0", "dense_1"}, (arg, part)
    assert set(params["dense_1"]) == {"kernel"}, (arg, part)
    assert set(variables["batch_stats"][part]) == {"bn_0"}, (arg, part)


def test_imagenet_preset_is_the_official_1000_epoch_run():
  recipe = _config("imagenet")
  # main_loop.py pretrain_epochs=1000, batch 4096; configs/byol.py 1000-epoch presets.
  assert recipe.total_epochs == 1000.0 and recipe.batch_size == 4096
  assert recipe.optim.base_lr == 0.2 and recipe.optim.weight_decay == 1.5e-6
  assert recipe.byol.base_momentum == 0.996
  assert recipe.optim.warmup_steps == 10 * 1281167 // 4096 == 3127  # schedules.py
  assert recipe.byol.directions == "sum"


def test_target_branch_is_stop_gradiented(setup):
  method, batch, params, aux = setup
  rng = jax.random.PRNGKey(1)

  def loss(p, teacher):
    return method.loss_fn(p, {**aux, "teacher": teacher}, batch, rng, 0)[0]

  # Through the target's weights: exactly zero, even with the target equal to the student.
  fixed, grad_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, byol.target_part(params))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_teacher))
  # Tying the target to the online weights changes nothing: no gradient flows via the target.
  tied = jax.jit(jax.grad(lambda p: loss(p, byol.target_part(p))))(params)
  for t, f in zip(jax.tree.leaves(tied), jax.tree.leaves(fixed)):
    np.testing.assert_allclose(t, f, rtol=1e-6, atol=1e-9)
  flat = jax.tree_util.tree_flatten_with_path(fixed)[0]
  for path, g in flat:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  for part in ("encoder", "projector", "predictor"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(fixed[part])) > 0, part


@pytest.mark.parametrize("step", [0, 3, 6])
def test_post_update_moves_the_target_by_the_cosine_schedule(setup, step):
  method, _, params, aux = setup
  teacher = jax.tree.map(lambda x: x + 1.0, aux["teacher"])
  state = TrainState(
    step=jnp.int32(step + 1),
    params=params,
    opt_state=None,
    aux={**aux, "teacher": teacher},
    rng=None,
  )
  new = method.post_update(state)
  total = 6  # the test preset's total_steps
  m = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2  # 0.996, 0.998, 1.0
  assert m == pytest.approx({0: 0.996, 3: 0.998, 6: 1.0}[step])
  for got, t, s in zip(
    jax.tree.leaves(new.aux["teacher"]),
    jax.tree.leaves(teacher),
    jax.tree.leaves(byol.target_part(params)),
  ):
    want = np.asarray(t, np.float64) * m + np.asarray(s, np.float64) * (1 - m)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert new.params is params and new.aux["model_state"] is aux["model_state"]


def test_encode_uses_the_online_encoder(setup):
  method, batch, params, aux = setup
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)  # vit_test width
  direct, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["view1"])
  np.testing.assert_allclose(feats, direct, rtol=1e-6)
  # The target's weights play no part.
  other = {**aux, "teacher": jax.tree.map(jnp.zeros_like, aux["teacher"])}
  np.testing.assert_array_equal(feats, method.encode(params, other, batch["view1"]))


def test_views_are_asymmetric_and_bad_pairs_fail(data_dir):
  config = _config()
  info = datasets.get_info("digits", data_dir)
  views = byol.two_view_transform(config, info)
  assert (views.augment1.blur_prob, views.augment2.blur_prob) == (1.0, 0.1)
  assert (views.augment1.solarize_prob, views.augment2.solarize_prob) == (0.0, 0.2)
  example = datasets.get_source("digits", "train", data_dir)[0]
  out = views.random_map(example, np.random.default_rng(0))
  assert out["view1"].shape == out["view2"].shape == (8, 8, 1)
  assert out["view1"].dtype == np.float32
  config.unlock()
  config.augment.blur_prob = (1.0, 0.1, 0.5)
  with pytest.raises(ValueError, match=r"blur_prob=\(1.0, 0.1, 0.5\) must be one probability"):
    byol.two_view_transform(config, info)


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "byol")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  # Step 6 is update k = 5 of K = 6.
  assert logged["train/teacher_momentum"] == pytest.approx(
    1 - 0.004 * (math.cos(math.pi * 5 / 6) + 1) / 2, abs=1e-7
  )
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
