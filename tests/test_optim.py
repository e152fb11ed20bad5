"""Optimizers and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config_lib
from jaxssl import optim


def _optim(**kw):
  c = config_lib.base_config().optim
  c.update(kw)
  return c


def test_decay_mask_excludes_biases_and_norms():
  params = {
    "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    "norm": {"scale": jnp.ones(4)},
  }
  assert optim.decay_mask(params) == {
    "dense": {"kernel": True, "bias": False},
    "norm": {"scale": False},
  }


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_weight_decay_leaves_biases_alone(name):
  # Zero gradients: only weight decay moves parameters, and only the masked-in ones.
  c = _optim(name=name, base_lr=0.1, weight_decay=0.5, warmup_steps=0)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 256, 10))
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["bias"], params["bias"])
  assert float(new["kernel"][0, 0]) < 1.0


def test_schedule_warmup_peak_and_cosine_end():
  c = _optim(base_lr=0.3, lr_scaling="linear", warmup_steps=10, end_lr_factor=0.0)
  sched = optim.make_schedule(c, 512, 110)
  np.testing.assert_allclose(float(sched(0)), 0.0)
  np.testing.assert_allclose(float(sched(10)), 0.6, rtol=1e-6)  # 0.3 x 512/256
  np.testing.assert_allclose(float(sched(60)), 0.3, rtol=1e-5)  # half-way down the cosine
  assert float(sched(110)) < 1e-6


def test_sqrt_scaling_and_bad_names():
  assert optim.peak_learning_rate(_optim(base_lr=0.1, lr_scaling="sqrt"), 1024) == pytest.approx(
    0.2
  )
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.peak_learning_rate(_optim(lr_scaling="cubic"), 256)
  with pytest.raises(ValueError, match="Unknown optimizer"):
    optim.make_optimizer(_optim(name="adafactor"), lambda s: 0.1)


def _params_and_grads(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {
    "encoder": {
      "embedding": {"kernel": (3, 4), "bias": (4,)},
      "dense": {"kernel": (4, 4), "bias": (4,)},
    }
  }
  draw = lambda: jax.tree.map(
    lambda shape: jnp.asarray(rng.normal(size=shape)),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )
  return draw(), draw()


def _run(c, params, grads, steps=3):
  tx = optim.make_optimizer(c, optim.make_schedule(c, 256, 10))
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_frozen_parameters_never_move_and_the_rest_train_as_before(name):
  params, grads = _params_and_grads()
  base = dict(name=name, base_lr=0.1, weight_decay=0.1, warmup_steps=0)
  frozen = _run(_optim(**base, frozen=(r"^encoder/embedding/",)), params, grads)
  free = _run(_optim(**base), params, grads)
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(
      frozen["encoder"]["embedding"][leaf], params["encoder"]["embedding"][leaf]
    )
    assert not np.allclose(free["encoder"]["embedding"][leaf], params["encoder"]["embedding"][leaf])
  # Per-parameter optimizers: the trained parameters follow the unfrozen run exactly.
  for k in ("kernel", "bias"):
    np.testing.assert_allclose(
      frozen["encoder"]["dense"][k], free["encoder"]["dense"][k], rtol=1e-6
    )


def test_bad_frozen_pattern_is_named():
  params, grads = _params_and_grads()
  with pytest.raises(ValueError, match=r"optim.frozen: '\(' is not a regular expression"):
    _run(_optim(frozen=("(",)), params, grads)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_norm_bias_lr_factor_scales_only_bias_and_norm_steps(name):
  # One step from the same state: biases move factor x as far, weights exactly as far.
  params, grads = _params_and_grads(1)
  base = dict(name=name, base_lr=0.1, weight_decay=0.01, warmup_steps=0)
  scaled = _run(_optim(**base, norm_bias_lr_factor=0.024), params, grads, steps=1)
  plain = _run(_optim(**base), params, grads, steps=1)
  for part in ("embedding", "dense"):
    p0, s, q = (t["encoder"][part] for t in (params, scaled, plain))
    np.testing.assert_allclose(
      s["bias"] - p0["bias"], 0.024 * (q["bias"] - p0["bias"]), atol=2e-7
    )  # float32 round-off of p0 + update
    np.testing.assert_allclose(s["kernel"], q["kernel"], rtol=1e-7)


# ---------------------------------------------------------------- recipe features (issue 27)


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_per_tensor_clipping_matches_dinos_clip_gradients():
  # DINO utils.clip_gradients: per tensor, coef = clip / (||g|| + 1e-6), applied when < 1.
  _, grads = _params_and_grads(2)
  grads["encoder"]["dense"]["kernel"] = grads["encoder"]["dense"]["kernel"] * 10.0
  clipped, _ = optim.clip_per_tensor(1.5).update(grads, optax.EmptyState())
  for g, c in zip(_leaves(grads), _leaves(clipped)):
    coef = 1.5 / (np.linalg.norm(g) + 1e-6)
    np.testing.assert_allclose(c, g * coef if coef < 1 else g, rtol=1e-5)
  # Stricter by far than the global norm over the same tensors: each keeps up to 1.5.
  norms = [np.linalg.norm(c) for c in _leaves(clipped)]
  assert max(norms) == pytest.approx(1.5, rel=1e-5) and sum(n**2 for n in norms) > 1.5**2


def test_per_module_clipping_matches_torch_clip_grad_norm_per_module():
  # DINOv2 clips backbone and each head with clip_grad_norm_: one coefficient per module.
  rng = np.random.default_rng(3)
  grads = {
    "student": {
      "encoder": {
        "a": jnp.asarray(rng.normal(size=(4, 4)) * 3),
        "b": jnp.asarray(rng.normal(size=4)),
      },
      "head": {"w": jnp.asarray(rng.normal(size=(4, 2)) * 0.1)},
    }
  }
  clipped, _ = optim.clip_per_module(1.0, depth=2).update(grads, optax.EmptyState())
  for module in ("encoder", "head"):
    g = _leaves(grads["student"][module])
    total = np.sqrt(sum(np.sum(x**2) for x in g))
    coef = min(1.0, 1.0 / (total + 1e-6))
    for x, c in zip(g, _leaves(clipped["student"][module])):
      np.testing.assert_allclose(c, x * coef, rtol=1e-5)


def test_global_clipping_stays_the_default_and_bad_mode_is_named():
  assert config_lib.base_config().optim.grad_clip_mode == "global"
  c = _optim(grad_clip_norm=1.0, grad_clip_mode="per_layer")
  with pytest.raises(ValueError, match=r"grad_clip_mode='per_layer'; choose one of"):
    optim.make_optimizer(c, lambda s: 0.1)


def test_weight_decay_schedule_is_dinos_cosine_and_adamw_applies_it():
  # utils.cosine_scheduler(0.04, 0.4, epochs, niter): end + (start - end)(1 + cos(pi t / T)) / 2.
  total = 40
  c = _optim(name="adamw", base_lr=0.1, warmup_steps=0, weight_decay=0.04, weight_decay_end=0.4)
  wd = optim.weight_decay_schedule(c, total)
  for t in (0, 1, 13, 20, 39):
    expected = 0.4 + 0.5 * (0.04 - 0.4) * (1 + np.cos(np.pi * t / total))
    np.testing.assert_allclose(float(wd(t)), expected, rtol=1e-6)
  # Zero gradients: AdamW's step is the decoupled decay alone, p <- p (1 - lr_t wd_t).
  sched = optim.make_schedule(c, 256, total)
  tx = optim.make_optimizer(c, sched, total_steps=total)
  params = {"kernel": jnp.ones((2, 2))}
  state = tx.init(params)
  p = np.ones((2, 2))
  for t in range(5):
    updates, state = tx.update({"kernel": jnp.zeros((2, 2))}, state, params)
    params = optax.apply_updates(params, updates)
    p = p * (1 - float(sched(t)) * float(wd(t)))
  np.testing.assert_allclose(params["kernel"], p, rtol=1e-5)
  with pytest.raises(ValueError, match="weight_decay_end needs the run's length"):
    optim.make_optimizer(c, sched)


def test_layer_decay_multipliers_equal_the_closed_form_for_vit_and_resnet():
  vit = [
    "encoder/embedding/kernel",
    "encoder/pos_embedding",
    "encoder/cls",
    "encoder/block_0/Dense_0/kernel",
    "encoder/block_2/LayerNorm_0/scale",
    "encoder/encoder_norm/scale",
    "head/Dense_0/kernel",
  ]
  ids, num = optim.layer_ids(vit[:-1])
  assert num == 4 and ids == [0, 0, 0, 1, 3, 4]
  resnet = [
    "encoder/stem_conv/kernel",
    "encoder/stage0_block1/conv/kernel",
    "encoder/stage3_block0/bn/scale",
  ]
  ids, num = optim.layer_ids(resnet)
  assert num == 5 and ids == [0, 1, 4]
  params = {}
  for name in vit:
    node = params
    *parents, leaf = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = jnp.ones(2)
  c = _optim(layer_decay=0.75, lr_multipliers=((r"encoder/embedding/", 0.2),))
  factors = optim.lr_multipliers(c, params)
  flat = dict(zip(jax.tree.leaves(optim._path_names(params)), jax.tree.leaves(factors)))
  # BEiT / MAE lr_decay: scale = decay^(L + 1 - layer_id), L + 1 = 4 here; the head is outside.
  assert flat["encoder/embedding/kernel"] == pytest.approx(0.75**4 * 0.2)
  assert flat["encoder/pos_embedding"] == pytest.approx(0.75**4)
  assert flat["encoder/block_0/Dense_0/kernel"] == pytest.approx(0.75**3)
  assert flat["encoder/block_2/LayerNorm_0/scale"] == pytest.approx(0.75)
  assert flat["encoder/encoder_norm/scale"] == 1.0 and flat["head/Dense_0/kernel"] == 1.0


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_lr_multipliers_scale_each_step_like_a_per_group_learning_rate(name):
  params, grads = _params_and_grads(4)
  base = dict(name=name, base_lr=0.1, weight_decay=0.01, warmup_steps=0)
  scaled = _run(_optim(**base, lr_multipliers=((r"embedding/", 0.3),)), params, grads, steps=1)
  plain = _run(_optim(**base), params, grads, steps=1)
  for part, factor in (("embedding", 0.3), ("dense", 1.0)):
    for k in ("kernel", "bias"):
      p0, s, q = (t["encoder"][part][k] for t in (params, scaled, plain))
      np.testing.assert_allclose(s - p0, factor * (q - p0), rtol=1e-5, atol=1e-7)


def _torch_adamw(p, g, lr, wd, step, m, v, b1=0.9, b2=0.999, eps=1e-8):
  """One torch.optim.AdamW step in float64 (decoupled decay, bias correction by `step`)."""
  p = p * (1 - lr * wd)
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  p = p - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
  return p, m, v


def test_frozen_until_behaves_like_pytorch_grad_none():
  # DINO's cancel_gradients_last_layer sets p.grad = None for the first epoch: AdamW skips the
  # parameter (no decay, no moment or step update); afterwards its own step count starts at 1
  # while the learning rate follows the global schedule.
  params, grads = _params_and_grads(5)
  c = _optim(
    name="adamw",
    base_lr=0.1,
    warmup_steps=2,
    weight_decay=0.05,
    frozen_until=((r"encoder/embedding/", 1.0),),
  )
  total, per_epoch = 8, 2.5  # ceil(1.0 x 2.5) = 3 frozen steps
  sched = optim.make_schedule(c, 256, total)
  tx = optim.make_optimizer(c, sched, total_steps=total, steps_per_epoch=per_epoch)
  state = tx.init(params)
  ref = {k: np.asarray(v, np.float64) for k, v in params["encoder"]["embedding"].items()}
  moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in ref.items()}
  plain = optim.make_optimizer(_optim(**{**c.to_dict(), "frozen_until": ()}), sched)
  plain_state, plain_params = plain.init(params), params
  for t in range(total):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    plain_updates, plain_state = plain.update(grads, plain_state, plain_params)
    plain_params = optax.apply_updates(plain_params, plain_updates)
    for k in ref:
      if t >= 3:
        wd = 0.05 if k == "kernel" else 0.0  # no decay on biases
        g = np.asarray(grads["encoder"]["embedding"][k], np.float64)
        ref[k], *moments[k] = _torch_adamw(ref[k], g, float(sched(t)), wd, t - 2, *moments[k])
      np.testing.assert_allclose(params["encoder"]["embedding"][k], ref[k], rtol=2e-5, atol=1e-5)
    # The rest trains exactly as without the freeze.
    for k in ("kernel", "bias"):
      np.testing.assert_allclose(
        params["encoder"]["dense"][k], plain_params["encoder"]["dense"][k], rtol=1e-6
      )
  with pytest.raises(ValueError, match="frozen_until is in epochs: pass steps_per_epoch"):
    optim.make_optimizer(c, sched)
  with pytest.raises(ValueError, match="frozen_until entry"):
    optim.make_optimizer(_optim(frozen_until=(("x",),)), sched, steps_per_epoch=1.0)


def test_build_reads_epochs_from_the_split_size():
  c = config_lib.base_config()
  c.optim.frozen_until = ((r"head/", 1.0),)
  c.batch_size = 100
  _, tx = optim.build(c, total_steps=20, num_train_examples=250)
  params = {"head": {"w": jnp.ones((2, 2))}, "enc": {"w": jnp.ones((2, 2))}}
  state = tx.init(params)
  for step in range(4):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    moved = float(jnp.abs(updates["head"]["w"]).max()) > 0
    assert moved == (step >= 3), step  # ceil(250 / 100) = 3 steps per epoch


def test_linear_schedule_and_warmup_start_factor_follow_their_closed_forms():
  # BERT: linear warmup then polynomial decay of power 1 to end; I-JEPA warms up from start_lr.
  total, warmup, peak = 20, 4, 0.1
  for kind in ("linear", "cosine"):
    c = _optim(
      base_lr=peak, warmup_steps=warmup, schedule=kind, warmup_start_factor=0.2, end_lr_factor=0.1
    )
    sched = optim.make_schedule(c, 256, total)
    for t in range(total + 1):
      if t < warmup:
        want = 0.2 * peak + (peak - 0.2 * peak) * t / warmup
      else:
        frac = (t - warmup) / (total - warmup)
        # BERT counts its linear decay from step 0 (the warmup overrides the first steps).
        shape = 1 - t / total if kind == "linear" else 0.5 * (1 + np.cos(np.pi * frac))
        want = 0.1 * peak + (peak - 0.1 * peak) * shape
      assert float(sched(t)) == pytest.approx(want, rel=1e-5), (kind, t)
  with pytest.raises(ValueError, match="optim.schedule='step'"):
    optim.make_schedule(_optim(schedule="step"), 256, total)


def test_adam_epsilon_reaches_the_update():
  # With tiny gradients eps dominates the denominator: step 1 moves lr * g / (|g| + eps).
  params, grads = {"w": jnp.zeros((2, 2))}, {"w": jnp.full((2, 2), 1e-6)}
  for eps in (1e-8, 1e-6):
    c = _optim(name="adamw", base_lr=1.0, warmup_steps=0, weight_decay=0.0, eps=eps)
    tx = optim.make_optimizer(c, lambda _: 1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -1e-6 / (1e-6 + eps), rtol=1e-5)


def test_decay_mask_modes():
  params = {
    "attn": {"qkv_bias": jnp.ones((2, 3)), "kernel": jnp.ones((3, 3))},
    "norm": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
    "pos_embedding": jnp.ones((1, 4, 3)),
  }
  rank = {
    "attn": {"qkv_bias": True, "kernel": True},
    "norm": {"scale": False, "bias": False},
    "pos_embedding": True,
  }
  assert optim.decay_mask_fn(_optim())(params) == rank
  no_bias = optim.decay_mask_fn(_optim(decay_mask="rank_no_bias", no_decay=("pos_embedding",)))
  assert no_bias(params) == {
    "attn": {"qkv_bias": False, "kernel": True},
    "norm": {"scale": False, "bias": False},
    "pos_embedding": False,
  }
  every = optim.decay_mask_fn(_optim(decay_mask="all"))(params)
  assert all(jax.tree.leaves(every))
  with pytest.raises(ValueError, match="optim.decay_mask='some'"):
    optim.decay_mask_fn(_optim(decay_mask="some"))
  # And the optimizer applies it: zero gradients, only decay moves the decayed leaves.
  c = _optim(name="sgd", base_lr=0.1, weight_decay=0.5, warmup_steps=0, decay_mask="all")
  tx = optim.make_optimizer(c, optim.make_schedule(c, 256, 10))
  grads = jax.tree.map(jnp.zeros_like, params)
  new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
  assert all(float(x.max()) < 1.0 for x in jax.tree.leaves(new))


def test_constant_lr_group_keeps_the_peak_while_the_rest_decays():
  # SimSiam --fix-pred-lr: plain SGD, so each step is -lr(t) * g exactly.
  params = {"encoder": {"w": jnp.zeros(3)}, "predictor": {"w": jnp.zeros(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  c = config_lib.base_config()
  c.optim.update(
    name="sgd",
    base_lr=0.05,
    momentum=0.0,
    weight_decay=0.0,
    warmup_steps=0,
    constant_lr=("predictor/",),
  )
  sched, tx = optim.build(c, 10)
  state = tx.init(params)
  for t in range(10):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["encoder"]["w"], -float(sched(t)), rtol=1e-6)
    np.testing.assert_allclose(updates["predictor"]["w"], -0.05, rtol=1e-6)
  with pytest.raises(ValueError, match="pass peak_lr"):
    optim.make_optimizer(c.optim, sched)


def test_mask_token_is_in_layer_zero():
  # DINOv2 / BEiT get_layer_id: mask_token, cls_token, pos_embed and patch_embed are layer 0.
  ids, num_layers = optim.layer_ids(
    [
      "encoder/mask_token",
      "encoder/cls",
      "encoder/block_0/k",
      "encoder/block_1/k",
      "encoder/encoder_norm/scale",
    ]
  )
  assert ids == [0, 0, 1, 2, 3] and num_layers == 3  # L + 1 with L = 2 blocks
