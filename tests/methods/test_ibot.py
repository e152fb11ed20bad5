"""iBOT / DINOv2 method: [cls] + masked-patch loss (centering or Sinkhorn-Knopp on the masked
patches, per-group KoLeo) against float64 recomputations from the model outputs, zero teacher
gradient, the [mask] token, patch-center EMA, masks from the pipeline (deterministic, ratio in
range), the imagenet and dinov2 presets, one run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from test_dino import dino_loss64, forward_logits, multicrop_batch, softmax64

from jaxssl import methods
from jaxssl import optim
from jaxssl.data import block_masking
from jaxssl.data import datasets
from jaxssl.methods import ibot


def _config(arg="test"):
  return harness.load_config("ibot", arg)


def patch_loss64(student, targets, masks, student_temp=0.1):
  """Float64 iBOT eq. 2: per image, the mean over its masked patches of
  H(target, softmax(student / T_s)); images without a masked patch give 0; mean over images
  and crops."""
  log_s = np.log(softmax64(np.asarray(student, np.float64) / student_temp))
  ce = -np.sum(targets * log_s, -1)  # [G, B, N]
  masks = np.asarray(masks, np.float64)
  return np.mean(np.sum(ce * masks, -1) / np.maximum(masks.sum(-1), 1.0))


def sinkhorn64(logits, temp, iters=3):
  """DINOv2's sinkhorn_knopp_teacher in float64 over all leading axes."""
  shape = logits.shape
  q = np.exp(np.asarray(logits, np.float64).reshape(-1, shape[-1]) / temp).T  # [K, B]
  num_protos, num_samples = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(1, keepdims=True)
    q /= num_protos
    q /= q.sum(0, keepdims=True)
    q /= num_samples
  return (q * num_samples).T.reshape(shape)


def koleo64(x, eps=1e-8):
  x = np.asarray(x, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
  dots = x @ x.T
  np.fill_diagonal(dots, -2.0)
  nearest = dots.argmax(-1)
  distance = np.linalg.norm(x - x[nearest], axis=-1)
  return -np.mean(np.log(distance + eps))


def _outputs(method, params, teacher, batch):
  """Student [cls] logits of all crops, student and teacher global-crop outputs (patches on)."""
  masks = batch["masks"]
  student, glob = forward_logits(method, params, batch, masks=masks, patches=True)
  no_local = {**batch, "local_crops": batch["local_crops"][:, :0]}
  teacher_logits, teacher_glob = forward_logits(method, teacher, no_local, patches=True)
  stack = lambda outs, key: np.stack([np.asarray(o[key], np.float64) for o in outs])
  return (
    student,
    stack(glob, "patch_logits"),
    stack(glob, "features"),
    teacher_logits,
    stack(teacher_glob, "patch_logits"),
  )


@pytest.mark.parametrize("arg", ["test", "test_dinov2"])
def test_loss_equals_recomputation(arg):
  method = methods.build(_config(arg))
  batch = multicrop_batch(n=16, masks=True)
  params, aux = harness.init_method(method, batch)
  teacher = jax.tree.map(lambda x: x * 0.9 + 0.01, aux["teacher"])
  center = jnp.linspace(-0.3, 0.3, 64)
  patch_center = jnp.linspace(0.2, -0.2, 64)
  aux = {**aux, "teacher": teacher, "center": center, "patch_center": patch_center}
  step = 5
  loss, (metrics, new_aux) = jax.jit(method.loss_fn)(
    params, aux, batch, jax.random.PRNGKey(1), step
  )
  student, student_patches, features, teacher_logits, teacher_patches = _outputs(
    method, params, teacher, batch
  )
  temp = 0.07  # the end of the test preset's 5-step warmup
  masks = np.swapaxes(np.asarray(batch["masks"]), 0, 1)
  if arg == "test":
    assert set(params) == {"encoder", "head"}  # shared head
    cls_targets = softmax64((teacher_logits - np.asarray(center)) / temp)
    patch_targets = softmax64((teacher_patches - np.asarray(patch_center)) / temp)
    koleo = 0.0
  else:
    assert set(params) == {"encoder", "head", "patch_head"}  # separate patch head
    cls_targets = sinkhorn64(teacher_logits, temp)
    # DINOv2: the patch Sinkhorn-Knopp balances the masked patches only (the others' targets
    # are never read: the loss weighs them 0).
    patch_targets = np.zeros_like(teacher_patches)
    patch_targets[masks > 0] = sinkhorn64(teacher_patches[masks > 0], temp)
    # KoLeo per group of 8 images (DINOv2: per GPU), averaged over the groups.
    assert method.section.koleo_group_size == 8
    koleo = sum(np.mean([koleo64(f[i : i + 8]) for i in range(0, 16, 8)]) for f in features)
    np.testing.assert_allclose(metrics["koleo"], koleo, rtol=1e-4)
  cls_loss = dino_loss64(student, cls_targets)
  patch_loss = patch_loss64(student_patches, patch_targets, masks)
  np.testing.assert_allclose(metrics["cls_loss"], cls_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["patch_loss"], patch_loss, rtol=1e-5)
  np.testing.assert_allclose(float(loss), cls_loss + patch_loss + 0.1 * koleo, rtol=1e-5)
  np.testing.assert_allclose(metrics["mask_ratio"], masks.mean(), rtol=1e-6)
  # Both centers: EMA 0.9 of the mean teacher logit (patches: over every patch).
  np.testing.assert_allclose(
    new_aux["center"],
    0.9 * np.asarray(center) + 0.1 * teacher_logits.mean((0, 1)),
    rtol=1e-5,
    atol=1e-7,
  )
  np.testing.assert_allclose(
    new_aux["patch_center"],
    0.9 * np.asarray(patch_center) + 0.1 * teacher_patches.mean((0, 1, 2)),
    rtol=1e-5,
    atol=1e-7,
  )


def test_teacher_gets_no_gradient_and_the_mask_token_does():
  method = methods.build(_config("test_dinov2"))
  batch = multicrop_batch(masks=True)
  params, aux = harness.init_method(method, batch)
  assert "mask_token" in params["encoder"]

  def loss(p, teacher, masks):
    return method.loss_fn(
      p, {**aux, "teacher": teacher}, {**batch, "masks": masks}, jax.random.PRNGKey(1), 5
    )[0]

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  student, teacher = grad(params, params, batch["masks"])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(teacher))
  for part in ("encoder", "head", "patch_head"):
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(student[part]))
  assert float(jnp.abs(student["encoder"]["mask_token"]).max()) > 0
  assert float(jnp.abs(student["patch_head"]["last_layer_v"]).max()) > 0  # not frozen at 5
  # Without masked patches the [mask] token is unused and the patch loss is 0.
  no_masks = jnp.zeros_like(batch["masks"])
  student, _ = grad(params, params, no_masks)
  assert float(jnp.abs(student["encoder"]["mask_token"]).max()) == 0.0
  _, (metrics, _) = jax.jit(method.loss_fn)(
    params, aux, {**batch, "masks": no_masks}, jax.random.PRNGKey(1), 5
  )
  assert float(metrics["patch_loss"]) == 0.0


def test_pipeline_masks_are_deterministic_and_in_range(data_dir):
  method = methods.build(_config())
  info = datasets.get_info("digits", data_dir)
  transform = method.train_transform(info)
  assert isinstance(transform.masking, block_masking.BlockMasking)
  assert transform.masking.grid == (4, 4) and transform.masking.ratio == (0.1, 0.5)
  assert transform.masking.min_block == 4
  source = datasets.get_source("digits", "train", data_dir)
  outs = [transform.random_map(source[i], np.random.default_rng(i)) for i in range(100)]
  again = transform.random_map(source[3], np.random.default_rng(3))
  np.testing.assert_array_equal(again["masks"], outs[3]["masks"])
  np.testing.assert_array_equal(again["global_crops"], outs[3]["global_crops"])
  ratios = np.concatenate([o["masks"].mean(-1) for o in outs])  # 200 global crops
  assert outs[0]["masks"].shape == (2, 16)
  assert set(np.unique(np.concatenate([o["masks"] for o in outs]))) <= {0.0, 1.0}
  assert ratios.max() <= 0.5
  assert 70 <= np.sum(ratios > 0) <= 130  # probability 0.5 of 200 crops, 4.2 std
  assert ratios[ratios > 0].min() >= 1 / 16


def test_bad_settings_fail():
  config = _config()
  config.unlock()
  config.ibot.centering = "sinkhorn"
  with pytest.raises(ValueError, match="centering='sinkhorn'"):
    methods.build(config)
  with pytest.raises(ValueError, match="needs a ViT encoder"):
    methods.build(_config("test,resnet18_small"))
  config = _config("test_dinov2")
  config.ibot.koleo_group_size = 6
  with pytest.raises(ValueError, match="koleo_group_size=6 must be >= 2 and divide batch_size=16"):
    methods.build(config)


def test_imagenet_preset_is_the_readme_command():
  """iBOT README ViT-S/16: crops (0.25, 1) / (0.05, 0.25), blocks of >= (14 // 3)^2 = 16
  patches, and main_ibot.py's optimizer (per-tensor clip, wd cosine, drop path 0.1)."""
  c = _config("imagenet")
  assert tuple(c.crops.global_scale) == (0.25, 1.0) and tuple(c.crops.local_scale) == (0.05, 0.25)
  assert c.crops.num_local == 10 and c.ibot.mask_min_block == 16 == (14 // 3) ** 2
  assert c.optim.grad_clip_mode == "per_tensor" and c.optim.grad_clip_norm == 3.0
  assert c.optim.weight_decay_end == 0.4 and c.model.drop_path == 0.1
  assert c.optim.end_lr_factor * optim.peak_learning_rate(c.optim, 1024) == pytest.approx(1e-6)
  assert tuple(c.optim.frozen_until) == ((r"last_layer_", 1.0),)
  assert c.total_epochs == 800.0 and not c.head.norm_last_layer
  policy = methods.build(c).mask_policy((14, 14))
  assert isinstance(policy, block_masking.BlockMasking) and policy.min_block == 16


def test_dinov2_preset_optimizer_groups_on_its_parameter_tree():
  """ssl_default_config.yaml: clip 3.0 per student module (backbone, dino_head, ibot_head),
  layer-wise decay 0.9, patch embedding LR x 0.2, trained weight_g, KoLeo per 64 images."""
  c = _config("dinov2")
  assert c.optim.grad_clip_mode == "per_module" and c.optim.grad_clip_norm == 3.0
  assert c.optim.layer_decay == 0.9 and c.optim.weight_decay_end == 0.4
  assert not c.head.norm_last_layer and c.ibot.koleo_group_size == 64
  assert c.optim.end_lr_factor * optim.peak_learning_rate(c.optim, 1024) == pytest.approx(1e-6)
  assert optim.peak_learning_rate(c.optim, 1024) == pytest.approx(0.004)
  # The same optimizer settings on the tiny dinov2 tree (same parameter names as ViT-S/14).
  tiny = _config("test_dinov2")
  tiny.head.norm_last_layer = False
  params, _ = harness.init_method(methods.build(tiny), multicrop_batch(masks=True))
  names = jax.tree.leaves(optim._path_names(params))  # pylint: disable=protected-access
  modules = {optim.module_of(n, c.optim.grad_clip_depth) for n in names}
  assert modules == {"encoder", "head", "patch_head"}
  factors = dict(zip(names, jax.tree.leaves(optim.lr_multipliers(c.optim, params))))
  depth = 2  # vit_test blocks: embeddings 0.9^3, block i 0.9^(2 - i), heads 1
  assert factors["encoder/embedding/kernel"] == pytest.approx(0.2 * 0.9 ** (depth + 1))
  assert factors["encoder/embedding/bias"] == pytest.approx(0.2 * 0.9 ** (depth + 1))
  assert factors["encoder/block_0/MlpBlock_0/Dense_0/kernel"] == pytest.approx(0.9**depth)
  assert factors["encoder/block_1/MlpBlock_0/Dense_0/kernel"] == pytest.approx(0.9)
  assert factors["head/last_layer_g"] == factors["patch_head/dense_0/kernel"] == 1.0


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  assert methods.get("ibot") is ibot.Method
  workdir = str(tmp_path / "ibot")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert 0.0 <= logged["train/mask_ratio"] <= 0.5
  assert np.isfinite(logged["train/patch_loss"]) and logged["train/patch_loss"] >= 0
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
