"""DINO method: loss against a float64 recomputation from the model outputs, stop-gradient on
the teacher, a deterministic teacher, the last-layer freeze (optimizer hold and the legacy
stop-gradient), teacher temperature / momentum / center schedules, encode on the teacher, the
imagenet preset, one train run with the eval handoff."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl import optim
from jaxssl.data import datasets
from jaxssl.methods import dino
from jaxssl.state import TrainState

STEPS_PER_EPOCH = math.ceil(1397 / 16)  # digits train split at the test preset's batch


def _config(arg="test"):
  return harness.load_config("dino", arg)


def multicrop_batch(n=8, seed=0, masks=False):
  """Random crops of the test presets' shapes: 2 global 8x8 and 2 local 4x4 (vit_test has
  2x2 patches, so 16 and 4 tokens)."""
  rng = np.random.default_rng(seed)
  batch = {
    "global_crops": jnp.asarray(rng.normal(size=(n, 2, 8, 8, 1)), jnp.float32),
    "local_crops": jnp.asarray(rng.normal(size=(n, 2, 4, 4, 1)), jnp.float32),
  }
  if masks:
    batch["masks"] = jnp.asarray(rng.random((n, 2, 16)) < 0.4, jnp.float32)
  return batch


def softmax64(x, axis=-1):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def dino_loss64(student, targets, student_temp=0.1):
  """Float64 DINO cross-entropy: mean over (teacher crop i, student crop j != i) of the batch
  mean of H(targets[i], softmax(student[j] / T_s))."""
  log_s = np.log(softmax64(np.asarray(student, np.float64) / student_temp))
  terms = [
    np.mean(-np.sum(targets[i] * log_s[j], -1))
    for i in range(targets.shape[0])
    for j in range(student.shape[0])
    if i != j
  ]
  return np.mean(terms)


def forward_logits(method, variables, batch, masks=None, patches=False):
  """Per-crop head outputs from direct model applications: ([V, B, K] logits, outputs of the
  global crops [G, B, ...])."""

  def run(crops, mask=None):
    out = [
      method.model.apply(
        {"params": variables},
        crops[:, v],
        train=True,
        token_mask=None if mask is None else mask[:, v],
        patches=patches,
      )
      for v in range(crops.shape[1])
    ]
    return out

  glob = run(batch["global_crops"], masks)
  local = run(batch["local_crops"]) if batch["local_crops"].shape[1] else []
  logits = np.stack([np.asarray(o["logits"]) for o in glob + local])
  return logits, glob


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = multicrop_batch()
  params, aux = harness.init_method(method, batch)
  return method, batch, params, aux


def test_registry_init_and_preset_schedules(setup):
  method, _, params, aux = setup
  assert methods.get("dino") is dino.Method
  assert set(params) == {"encoder", "head"}
  for t, s in zip(jax.tree.leaves(aux["teacher"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(t, s)  # the teacher starts as a copy of the student
  np.testing.assert_array_equal(aux["center"], np.zeros(64))
  # Epoch-valued schedules in steps, from the split size (88 steps per epoch).
  assert method.temp_warmup_steps == math.ceil(0.05 * 1397 / 16) == 5
  assert method.freeze_steps == 0  # no stop-gradient freeze: the optimizer holds the last layer
  assert method.hold_steps == math.ceil(0.03 * 1397 / 16) == 3
  assert dino.epochs_to_steps(method.config, 1.0) == STEPS_PER_EPOCH


def test_loss_center_and_monitors_equal_recomputation(setup):
  method, batch, params, aux = setup
  teacher = jax.tree.map(lambda x: x * 0.9 + 0.01, aux["teacher"])
  center = jnp.linspace(-0.3, 0.3, 64)
  aux = {**aux, "teacher": teacher, "center": center}
  step = 2
  loss, (metrics, new_aux) = jax.jit(method.loss_fn)(
    params, aux, batch, jax.random.PRNGKey(1), step
  )
  student, glob = forward_logits(method, params, batch)
  teacher_logits, _ = forward_logits(
    method, teacher, {**batch, "local_crops": batch["local_crops"][:, :0]}
  )
  temp = 0.04 + 0.03 * step / 5
  targets = softmax64((teacher_logits - np.asarray(center, np.float64)) / temp)
  np.testing.assert_allclose(float(loss), dino_loss64(student, targets), rtol=1e-5)
  # Eq. 4: c <- 0.9 c + 0.1 mean over crops and batch of the teacher logits.
  np.testing.assert_allclose(
    new_aux["center"],
    0.9 * np.asarray(center) + 0.1 * teacher_logits.mean((0, 1)),
    rtol=1e-5,
    atol=1e-7,
  )
  entropy = -np.mean(np.sum(targets * np.log(targets), -1))
  np.testing.assert_allclose(metrics["teacher_entropy"], entropy, rtol=1e-4)
  log_q = np.log(softmax64(np.asarray(center, np.float64) / temp))
  kl = np.mean(np.sum(targets * (np.log(targets) - log_q), -1))
  np.testing.assert_allclose(metrics["kl_teacher_center"], kl, rtol=1e-4)
  np.testing.assert_allclose(metrics["teacher_temp"], temp, rtol=1e-6)
  assert float(metrics["last_layer_frozen"]) == 1.0
  features = np.concatenate([np.asarray(o["features"]) for o in glob])
  np.testing.assert_allclose(
    metrics["embedding_std"],
    np.std(features / np.linalg.norm(features, axis=-1, keepdims=True), 0).mean(),
    rtol=1e-4,
  )
  for got, want in zip(jax.tree.leaves(new_aux["teacher"]), jax.tree.leaves(teacher)):
    np.testing.assert_array_equal(got, want)  # only post_update moves the teacher's weights


def test_teacher_gets_no_gradient_and_last_layer_freezes(setup):
  method, batch, params, aux = setup
  rng = jax.random.PRNGKey(1)

  def loss(p, teacher, step):
    return method.loss_fn(p, {**aux, "teacher": teacher}, batch, rng, step)[0]

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  tied_grad = jax.jit(jax.grad(lambda p, s: loss(p, p, s)))
  for step in (0, 3):
    fixed, grad_teacher = grad(params, params, step)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_teacher))
    # Tying the teacher to the student changes nothing.
    tied = tied_grad(params, step)
    for t, f in zip(jax.tree.leaves(tied), jax.tree.leaves(fixed)):
      np.testing.assert_allclose(t, f, rtol=1e-6, atol=1e-9)
    last = float(jnp.abs(fixed["head"]["last_layer_v"]).max())
    # freeze_last_layer_epochs (recorded runs, the test preset): steps 0..2 give the
    # prototypes no gradient.
    assert (last == 0.0) == (step < method.freeze_steps), (step, last)
    assert float(jnp.abs(fixed["head"]["dense_0"]["kernel"]).max()) > 0
    assert float(jnp.abs(fixed["encoder"]["embedding"]["kernel"]).max()) > 0


def _held_config(data_dir=None):
  """The test preset with DINO's freeze as the presets now set it: the optimizer hold."""
  config = _config()
  config.dino.freeze_last_layer_epochs = 0.0
  config.optim.frozen_until = ((r"last_layer_", 0.03),)
  if data_dir:
    config.data.data_dir = data_dir
  return config


def test_optimizer_holds_the_last_layer_as_pytorch(setup):
  """optim.frozen_until of the test preset (3 steps): V is not updated, not decayed and its
  AdamW state waits; at release its first step is a fresh AdamW step 1 (m_hat = g, v_hat =
  g^2) at the global step's learning rate, as torch.optim.AdamW after `p.grad = None`."""
  _, _, params, _ = setup
  config = _held_config()
  schedule, tx = optim.build(config, 6, 1397)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  p = params
  for step in range(4):
    # Small gradients: the preset's global clip at 3.0 leaves them as they are.
    g = jax.tree.map(lambda x: jnp.asarray(1e-3 * rng.normal(size=x.shape), x.dtype), p)
    updates, state = tx.update(g, state, p)
    new = jax.tree.map(lambda a, u: a + u, p, updates)
    v, gv = np.asarray(p["head"]["last_layer_v"], np.float64), np.asarray(g["head"]["last_layer_v"])
    if step < 3:  # held: not even weight decay moves it
      np.testing.assert_array_equal(new["head"]["last_layer_v"], p["head"]["last_layer_v"])
    else:  # Adam's moments and count untouched by the 3 held steps
      lr, wd = float(schedule(step)), config.optim.weight_decay
      want = v - lr * (gv / (np.abs(gv) + 1e-8) + wd * v)
      np.testing.assert_allclose(new["head"]["last_layer_v"], want, rtol=1e-5, atol=1e-9)
    if step:  # the rest trains from the first step with a non-zero (warmup) learning rate
      assert not np.array_equal(new["head"]["dense_0"]["kernel"], p["head"]["dense_0"]["kernel"])
    p = new


def test_the_held_last_layer_gets_its_gradient_and_both_freezes_do_not_mix(setup):
  """With optim.frozen_until the loss leaves the prototypes' gradient alone (the optimizer
  holds them); the stop-gradient form stays for recorded runs, never with the hold."""
  _, batch, params, aux = setup
  method = methods.build(_held_config())
  assert (method.freeze_steps, method.hold_steps) == (0, 3)
  grad = jax.jit(jax.grad(lambda p, s: method.loss_fn(p, aux, batch, jax.random.PRNGKey(1), s)[0]))
  assert float(jnp.abs(grad(params, 0)["head"]["last_layer_v"]).max()) > 0
  _, (metrics, _) = jax.jit(method.loss_fn)(params, aux, batch, jax.random.PRNGKey(1), 2)
  assert float(metrics["last_layer_frozen"]) == 1.0
  config = _held_config()
  config.dino.freeze_last_layer_epochs = 0.03
  with pytest.raises(ValueError, match="freeze_last_layer_epochs=0.03 and optim.frozen_until"):
    methods.build(config)


def test_teacher_never_drops_paths():
  """With drop path 0.5 the student's outputs depend on the rng, the teacher's do not: they
  equal the deterministic forward (DINO builds its teacher without drop_path_rate)."""
  config = _config()
  config.unlock()
  config.model.drop_path = 0.5
  method = methods.build(config)
  batch = multicrop_batch()
  params, aux = harness.init_method(method, batch)
  keys = jax.random.PRNGKey(3), jax.random.PRNGKey(4)
  teacher = [method.teacher_forward(aux, batch, k)[0]["logits"] for k in keys]
  np.testing.assert_array_equal(teacher[0], teacher[1])
  deterministic = method.model.apply(
    {"params": aux["teacher"]}, dino.views_first(batch["global_crops"]), train=False
  )
  np.testing.assert_allclose(teacher[0], deterministic["logits"], rtol=1e-6, atol=1e-6)
  student = [method.student_forward(params, {}, batch, k)[0] for k in keys]
  assert not np.allclose(student[0], student[1])
  assert method.model.encoder.drop_path == 0.5  # the student keeps it


@pytest.mark.parametrize("step, temp", [(0, 0.04), (1, 0.046), (4, 0.064), (5, 0.07), (50, 0.07)])
def test_teacher_temperature_warmup(setup, step, temp):
  method = setup[0]
  assert float(method.teacher_temp(step)) == pytest.approx(temp, abs=1e-7)


@pytest.mark.parametrize("step", [0, 3, 6])
def test_post_update_moves_the_teacher_by_the_cosine_schedule(setup, step):
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
  m = 1 - (1 - 0.996) * (math.cos(math.pi * step / 6) + 1) / 2
  assert m == pytest.approx({0: 0.996, 3: 0.998, 6: 1.0}[step])
  for got, t, s in zip(
    jax.tree.leaves(new.aux["teacher"]), jax.tree.leaves(teacher), jax.tree.leaves(params)
  ):
    want = np.asarray(t, np.float64) * m + np.asarray(s, np.float64) * (1 - m)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert new.params is params and new.aux["center"] is aux["center"]


def test_encode_uses_the_teacher_backbone(setup):
  method, batch, params, aux = setup
  images = batch["global_crops"][:, 0]
  teacher = jax.tree.map(lambda x: x * 1.1 + 0.02, aux["teacher"])
  feats = method.encode(params, {**aux, "teacher": teacher}, images)
  assert feats.shape == (8, 32)  # vit_test width
  direct, _ = method.model.encoder.apply({"params": teacher["encoder"]}, images)
  np.testing.assert_allclose(feats, direct, rtol=1e-6)
  student, _ = method.model.encoder.apply({"params": params["encoder"]}, images)
  assert not np.allclose(feats, student)


def test_transform_makes_the_preset_crops(data_dir):
  method = methods.build(_config())
  info = datasets.get_info("digits", data_dir)
  transform = method.train_transform(info)
  example = datasets.get_source("digits", "train", data_dir)[0]
  out = transform.random_map(example, np.random.default_rng(0))
  assert out["global_crops"].shape == (2, 8, 8, 1)
  assert out["local_crops"].shape == (2, 4, 4, 1)
  assert "masks" not in out


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_fashion_mnist_preset_keeps_the_start_that_does_not_collapse(name):
  # With the paper's 0.04 -> 0.07 warmup this preset's teacher went uniform (entropy ~ln K)
  # within 100 steps of a short run (docs/results.md "Method zoo"); a constant 0.04 did not.
  section = harness.load_config(name, "fashion_mnist")[name]
  assert section.warmup_teacher_temp == section.teacher_temp == 0.04
  # DINO's 1-epoch last-layer freeze, by the optimizer; the legacy stop-gradient off.
  assert tuple(harness.load_config(name, "fashion_mnist").optim.frozen_until) == (
    (r"last_layer_", 1.0),
  )
  assert section.freeze_last_layer_epochs == 0.0
  method = methods.build(harness.load_config(name, "fashion_mnist"))
  assert float(method.teacher_temp(0)) == float(method.teacher_temp(10_000)) == pytest.approx(0.04)


def test_imagenet_preset_is_the_readme_full_command():
  """README "Full command" ViT-S/16 run on main_dino.py's defaults."""
  c = _config("imagenet")
  assert c.total_epochs == 300.0 and c.batch_size == 1024 and not c.head.norm_last_layer
  assert c.optim.grad_clip_mode == "per_tensor" and c.optim.grad_clip_norm == 3.0
  assert c.optim.weight_decay == 0.04 and c.optim.weight_decay_end == 0.4
  assert c.model.drop_path == 0.1
  assert c.optim.end_lr_factor * optim.peak_learning_rate(c.optim, 1024) == pytest.approx(1e-6)
  assert tuple(c.optim.frozen_until) == ((r"last_layer_", 1.0),)


def test_frozen_until_matches_every_last_layer_and_nothing_else():
  """DINO cancels every parameter with "last_layer" in its name: V and a trained g, of every
  head (iBOT / DINOv2's patch head too)."""
  config = harness.load_config("ibot", "test_dinov2")
  config.head.norm_last_layer = False
  method = methods.build(config)
  params, _ = harness.init_method(method, multicrop_batch(masks=True))
  names = jax.tree.leaves(optim._path_names(params))  # pylint: disable=protected-access
  ((pattern, _),) = harness.load_config("ibot", "dinov2").optim.frozen_until
  held = sorted(n for n in names if re.search(pattern, n))
  assert held == [f"{h}/last_layer_{p}" for h in ("head", "patch_head") for p in ("g", "v")]


def test_local_size_must_fit_the_patch_size():
  # Fashion-MNIST's 14px local crops do not tile into mu/4's 4x4 patches.
  with pytest.raises(ValueError, match=r"crops.local_size=14 is not a multiple .* patch size 4"):
    _config("fashion_mnist,vit_mu4")


def test_training_with_the_optimizer_hold(tmp_path, data_dir):
  logged, rows = harness.train_test_preset(_held_config(), str(tmp_path / "held"), data_dir)
  assert rows[0]["train/last_layer_frozen"] == 1.0 and logged["train/last_layer_frozen"] == 0.0


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "dino")
  logged, rows = harness.train_test_preset(_config(), workdir, data_dir)
  # Step 6 is update k = 5: warmup over (5 steps) done, last layer no longer frozen.
  assert logged["train/teacher_temp"] == pytest.approx(0.07, abs=1e-7)
  assert logged["train/last_layer_frozen"] == 0.0
  assert logged["train/teacher_momentum"] == pytest.approx(
    1 - 0.004 * (math.cos(math.pi * 5 / 6) + 1) / 2, abs=1e-7
  )
  assert rows[0]["train/last_layer_frozen"] == 1.0
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
