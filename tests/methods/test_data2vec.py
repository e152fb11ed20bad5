"""data2vec method: loss from an independent float64 recomputation (top-K teacher blocks, each
layer-normalised, averaged, layer-normalised again; element-mean smooth L1 at masked
positions), zero gradient into the teacher, annealed EMA schedule, BEiT block masks, the
official imagenet recipe, encode with the student, one train run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness

from jaxssl import methods
from jaxssl.data import datasets
from jaxssl.data import masking
from jaxssl.data import block_masking
from jaxssl.methods import data2vec
from jaxssl.methods import ijepa
from jaxssl.state import TrainState

NUM_PATCHES = 16  # 8x8 digits, vit_test patch 2


def _config(arg="test"):
  return harness.load_config("data2vec", arg)


def _batch(n=4, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.stack([masking.random_mask(rng, NUM_PATCHES, 0.6)[1] for _ in range(n)])
  return {
    "image": jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32),
    "mask": jnp.asarray(mask),
  }


@pytest.fixture(scope="module")
def setup():
  method = methods.build(_config())
  batch = _batch()
  params, aux = harness.init_method(method, batch)
  params = {
    **params,
    "encoder": {**params["encoder"], "mask_token": params["encoder"]["mask_token"] + 0.5},
  }
  aux = {**aux, "teacher": jax.tree.map(lambda x: 0.9 * x + 0.01, aux["teacher"])}
  return method, batch, params, aux


def _layer_norm64(x, eps=1e-5):
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def _loss64(method, params, teacher, batch, top_k=2, beta=2.0):
  """The official vision code (data2vec_vision beit/engine_for_cyclical.py): student on the
  masked image + head; teacher blocks on the full image, each layer-normalised over the
  features, averaged, layer-normalised again; F.smooth_l1_loss(beta) over the masked tokens,
  the mean of every element."""
  encoder = method.model.encoder
  _, s_aux = encoder.apply({"params": params["encoder"]}, batch["image"], token_mask=batch["mask"])
  head = params["head"]
  pred = np.asarray(s_aux["tokens"], np.float64) @ np.asarray(
    head["kernel"], np.float64
  ) + np.asarray(head["bias"], np.float64)
  _, t_aux = encoder.apply({"params": teacher["encoder"]}, batch["image"])
  blocks = [np.asarray(b, np.float64) for b in t_aux["blocks"]][-top_k:]
  target = _layer_norm64(np.mean([_layer_norm64(a) for a in blocks], axis=0))
  masked = np.asarray(batch["mask"]).astype(bool)
  d = np.abs(pred[masked] - target[masked])  # [masked tokens, D]
  return np.mean(np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta))


def test_registry_structure_and_config_checks(setup):
  method, _, params, aux = setup
  assert methods.get("data2vec") is data2vec.Method
  assert set(params) == {"encoder", "head"}
  assert "mask_token" in params["encoder"]
  assert set(aux["teacher"]) == {"encoder"}
  with pytest.raises(ValueError, match="data2vec needs a ViT encoder"):
    methods.build(_config("test,resnet18_small"))
  config = _config()
  config.data2vec.top_k = 3
  with pytest.raises(ValueError, match=r"top_k=3 must be in \[1, 2\]"):
    methods.build(config)


def test_loss_equals_an_independent_recomputation(setup):
  method, batch, params, aux = setup
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  np.testing.assert_allclose(float(loss), _loss64(method, params, aux["teacher"], batch), rtol=1e-5)
  assert float(metrics["mask_ratio"]) == pytest.approx(10 / 16)  # 16 - int(16 * 0.4) masked
  assert {"pred_std", "target_std", "teacher_momentum", "rankme"} <= set(metrics)
  assert new_aux["teacher"] is aux["teacher"]


def test_student_sees_masked_patches_only_through_the_mask_token(setup):
  """Changing the pixels of masked patches changes neither the student's predictions nor
  (through the stop-gradient) anything the loss differentiates; the teacher does see them."""
  method, batch, params, aux = setup
  mask_px = np.repeat(np.repeat(np.asarray(batch["mask"]).reshape(4, 4, 4), 2, 1), 2, 2)
  noisy = batch["image"] + 3.0 * jnp.asarray(mask_px)[..., None]
  pred, _ = method.model.apply({"params": params}, batch["image"], batch["mask"])
  pred_noisy, _ = method.model.apply({"params": params}, noisy, batch["mask"])
  np.testing.assert_allclose(pred, pred_noisy, rtol=1e-6, atol=1e-6)
  img_grad = jax.jit(
    jax.grad(
      lambda im: method.loss_fn(params, aux, {**batch, "image": im}, jax.random.PRNGKey(1), 0)[0]
    )
  )(batch["image"])
  np.testing.assert_array_equal(np.asarray(img_grad)[mask_px.astype(bool)], 0.0)
  assert np.abs(np.asarray(img_grad)[~mask_px.astype(bool)]).sum() > 0


def test_gradient_into_the_teacher_is_exactly_zero(setup):
  method, batch, params, aux = setup
  grads = harness.encoder_teacher_gradients(method, params, aux, batch)
  assert float(jnp.abs(grads["encoder"]["mask_token"]).sum()) > 0
  assert float(jnp.abs(grads["head"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("step", [0, 2, 4, 5])
def test_post_update_follows_the_annealed_schedule(setup, step):
  method, _, params, aux = setup
  state = TrainState(step=jnp.int32(step + 1), params=params, opt_state=None, aux=aux, rng=None)
  new = method.post_update(state)
  # Linear 0.999 -> 0.9999 over 4 updates (the test preset), then constant.
  m = 0.999 + (0.9999 - 0.999) * min(step / 4, 1.0)
  assert float(method.momentum(step)) == pytest.approx(m, abs=1e-7)
  for got, t, s in zip(
    jax.tree.leaves(new.aux["teacher"]),
    jax.tree.leaves(aux["teacher"]),
    jax.tree.leaves({"encoder": params["encoder"]}),
  ):
    want = np.asarray(t, np.float64) * m + np.asarray(s, np.float64) * (1 - m)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_encode_uses_the_student_on_the_unmasked_image(setup):
  """The official fine-tuning / linear probe load the checkpoint's 'model' (the student)."""
  method, batch, params, aux = setup
  feats = method.encode(params, aux, batch["image"])
  assert feats.shape == (4, 32)
  want, _ = method.model.encoder.apply({"params": params["encoder"]}, batch["image"])
  np.testing.assert_allclose(feats, want, rtol=1e-6)
  zeros = jax.tree.map(jnp.zeros_like, aux)
  np.testing.assert_array_equal(feats, method.encode(params, zeros, batch["image"]))
  teacher, _ = method.model.encoder.apply({"params": aux["teacher"]["encoder"]}, batch["image"])
  assert not np.allclose(feats, teacher, atol=1e-4)


def test_block_masking_is_beits_masking_generator(data_dir):
  """masking='block': the view's mask is `block_masking.block_mask` (BEiT's MaskingGenerator)
  drawn from the example's generator right after the augmentation."""
  config = _config()
  config.data2vec.update(masking="block", num_masked=10, min_block=2)
  method = methods.build(config)
  info = datasets.get_info("digits", data_dir)
  example = datasets.get_source("digits", "train", data_dir)[0]
  transform = method.train_transform(info)
  assert isinstance(transform, data2vec.BlockMaskedView)
  for seed in range(5):
    out = transform.random_map(example, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    image = ijepa.crop_flip_augment(config, info)(example["image"], rng)
    want = block_masking.block_mask(rng, (4, 4), 10, min_block=2, max_block=16)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], want.astype(np.float32))
    assert out["mask"].shape == (NUM_PATCHES,) and out["mask"].dtype == np.float32
    assert 0 < out["mask"].sum() <= 10
  config.data2vec.num_masked = None
  with pytest.raises(ValueError, match="needs data2vec.num_masked"):
    methods.build(config)
  config.data2vec.num_masked = 17
  with pytest.raises(ValueError, match="num_masked=17 <= 16"):
    methods.build(config).train_transform(info)


def test_imagenet_preset_is_the_official_vit_b_command():
  """data2vec_vision beit/README.md ViT-B 800 epochs (engine_for_cyclical.py, run_cyclical.py)."""
  c = _config("imagenet")
  d = c.data2vec
  assert (d.masking, d.num_masked, d.min_block) == ("block", 120, 16)
  assert (d.target_norm, d.loss_reduction, d.loss_beta, d.top_k) == ("layer", "mean", 2.0, 6)
  assert d.base_momentum == d.end_momentum == 0.9998  # --ema_start_at 0: constant
  assert (c.optim.grad_clip_norm, c.optim.grad_clip_mode) == (3.0, "global")
  assert c.optim.warmup_steps == 6_256  # 10 epochs at batch 2048
  assert c.optim.base_lr * c.batch_size / 256 * c.optim.end_lr_factor == pytest.approx(1e-5)
  assert (c.model.drop_path, c.model.gelu_approximate) == (0.25, False)
  methods.build(c)  # the section's choices pass the method's checks


def test_one_training_run_and_eval_handoff(tmp_path, data_dir):
  workdir = str(tmp_path / "data2vec")
  logged, _ = harness.train_test_preset(_config(), workdir, data_dir)
  assert logged["train/teacher_momentum"] == pytest.approx(0.9999, abs=1e-7)  # k = 5 >= 4
  assert logged["train/mask_ratio"] == pytest.approx(10 / 16)
  feats, labels = harness.eval_job_features(workdir, data_dir)
  assert feats.shape == (40, 32) and labels.shape == (40,)
  assert np.all(np.isfinite(feats))
