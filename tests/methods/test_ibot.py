"""iBOT / DINOv2 method: [cls] + masked-patch loss (centering or Sinkhorn-Knopp, KoLeo)
against float64 recomputations from the model outputs, zero teacher gradient, the [mask]
token, patch-center EMA, masks from the pipeline (deterministic, ratio in range), one run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from test_dino import dino_loss64, forward_logits, multicrop_batch, softmax64

from jaxssl import methods
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
  batch = multicrop_batch(masks=True)
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
    patch_targets = sinkhorn64(teacher_patches, temp)
    koleo = sum(koleo64(f) for f in features)
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
  assert transform.masking.grid == (4, 4) and transform.masking.ratio == (0.1, 0.5)
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


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  assert methods.get("ibot") is ibot.Method
  workdir = str(tmp_path / "ibot")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert 0.0 <= logged["train/mask_ratio"] <= 0.5
  assert np.isfinite(logged["train/patch_loss"]) and logged["train/patch_loss"] >= 0
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
