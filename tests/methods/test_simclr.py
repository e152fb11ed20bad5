"""SimCLR method: views, one step with BatchNorm state, encode for the eval job."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config_lib
from jaxssl import losses
from jaxssl import methods
from jaxssl.data import datasets
from jaxssl.methods import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(arg="test,resnet18_small"):
  return config_lib.load_config_file(os.path.join(ROOT, f"configs/simclr.py:{arg}"))


def _method(backbone="resnet18_small"):
  return methods.build(_config(f"test,{backbone}"))


def _official_contrastive_loss64(h1, h2, temperature):
  """Independent float64 tf2/objective.py `add_contrastive_loss` (hidden_norm=True, one
  replica): loss_a = CE(labels, [logits_ab, logits_aa]), loss_b = CE(labels, [logits_ba,
  logits_bb]) with the self-similarities masked by -1e9; loss = reduce_mean(loss_a + loss_b)."""
  h1, h2 = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
  h1 = h1 / np.linalg.norm(h1, axis=-1, keepdims=True)
  h2 = h2 / np.linalg.norm(h2, axis=-1, keepdims=True)
  n = h1.shape[0]
  masks = np.eye(n) * 1e9
  logits_aa = h1 @ h1.T / temperature - masks
  logits_bb = h2 @ h2.T / temperature - masks
  logits_ab = h1 @ h2.T / temperature
  logits_ba = h2 @ h1.T / temperature

  def cross_entropy(logits):  # labels = one_hot(arange(n), 2n): the positive is column i
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_probs[np.arange(n), np.arange(n)]

  loss_a = cross_entropy(np.concatenate([logits_ab, logits_aa], axis=1))
  loss_b = cross_entropy(np.concatenate([logits_ba, logits_bb], axis=1))
  return np.mean(loss_a + loss_b)


def _batch(n=8):
  rng = np.random.default_rng(0)
  return {k: jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32) for k in ("view1", "view2")}


def test_registry_lists_methods_only():
  assert {"simclr", "byol", "moco_v3", "vicreg", "barlow_twins", "mae"} <= set(methods.available())
  assert not {"common", "ema"} & set(methods.available())
  assert methods.get("simclr") is type(_method())


def test_loss_is_the_official_sum_of_directions_and_updates_batch_stats():
  method = _method()
  batch = _batch()
  params, aux = jax.tree.map(jnp.asarray, nn.unbox(method.init(jax.random.PRNGKey(0), batch)))
  assert aux["model_state"]["batch_stats"]  # ResNet + head BatchNorm statistics
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  # Independent recomputation: project both views in one BN batch, then the TF2 loss, which
  # sums the two directions (2 x nt_xent's mean over the 2N anchors).
  images = jnp.concatenate([batch["view1"], batch["view2"]])
  (z, _), _ = method.model.apply(
    {"params": params, **aux["model_state"]}, images, train=True, mutable=["batch_stats"]
  )
  want = _official_contrastive_loss64(z[:8], z[8:], 0.1)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  ref, _ = losses.nt_xent(z[:8], z[8:], temperature=0.1)
  np.testing.assert_allclose(float(loss), 2 * float(ref), rtol=1e-6)
  assert {"contrastive_acc", "rankme", "embedding_std"} <= set(metrics)
  before = jax.tree.leaves(aux["model_state"])
  after = jax.tree.leaves(new_aux["model_state"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_directions_mean_is_nt_xent_and_unknown_values_fail():
  """'mean' (runs recorded before the key existed) is nt_xent itself: half the official loss."""
  batch = _batch()
  summed = _method()
  params, aux = jax.tree.map(jnp.asarray, nn.unbox(summed.init(jax.random.PRNGKey(0), batch)))
  config = _config()
  config.simclr.directions = "mean"
  mean = methods.build(config)
  args = (params, aux, batch, jax.random.PRNGKey(1), 0)
  np.testing.assert_allclose(
    float(mean.loss_fn(*args)[0]), 0.5 * float(summed.loss_fn(*args)[0]), rtol=1e-6
  )
  config.simclr.directions = "average"
  with pytest.raises(ValueError, match="directions='average'"):
    methods.build(config)


def _head_params(head_config, width):
  """Abstract head variables built from a config's `head` section, as the method builds them."""
  config = _config()
  config.head = head_config
  head = common.build_encoder_with_head(config).head
  return nn.unbox(jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((4, width))))


def test_head_ends_in_a_bias_free_dense_and_a_scaled_bn_in_every_preset():
  # TF2 model.py ProjectionHead: the last LinearLayer(use_bias=False, use_bn=True), i.e. no
  # Dense bias, then BatchNormRelu(relu=False, center=False) with its learned scale.
  for arg in ("test", "mnist5k", "fashion_mnist", "imagenet"):
    head = _config(arg).head
    variables = _head_params(head, 8)
    last = head.num_layers - 1
    assert "bias" not in variables["params"][f"dense_{last}"], arg
    assert set(variables["params"][f"bn_{last}"]) == {"scale"}, arg
    assert set(variables["batch_stats"][f"bn_{last}"]) == {"mean", "var"}, arg


def test_imagenet_preset_is_the_tf2_readme_recipe():
  recipe = _config("imagenet")
  params = _head_params(recipe.head, 2048)["params"]
  # num_proj_layers=3, hidden width = the ResNet-50 feature width, out 128.
  assert set(params) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2", "bn_2"}
  assert params["dense_0"]["kernel"].shape == (2048, 2048)
  assert params["dense_1"]["kernel"].shape == (2048, 2048)
  assert params["dense_2"]["kernel"].shape == (2048, 128)
  assert recipe.simclr.directions == "sum" and recipe.simclr.temperature == 0.1
  assert recipe.optim.weight_decay == 1e-4  # README --weight_decay=1e-4
  assert recipe.optim.warmup_steps == int(round(10 * 1281167 // 4096)) == 3127  # model.py
  assert recipe.optim.name == "lars" and recipe.batch_size == 4096
  assert recipe.optim.base_lr * recipe.batch_size / 256 == pytest.approx(0.075 * 4096**0.5)


def test_encode_gives_backbone_features_without_the_head():
  method = _method("vit_test")
  batch = _batch()
  params, aux = nn.unbox(method.init(jax.random.PRNGKey(0), batch))
  feats = method.encode(params, aux, batch["view1"])
  assert feats.shape == (8, 32)  # vit_test width, not the head's out_dim 16
  np.testing.assert_allclose(feats, method.encode(params, aux, batch["view1"]))


def test_train_transform_makes_two_different_views(data_dir):
  method = _method("vit_test")
  info = datasets.get_info("digits", data_dir)
  example = datasets.get_source("digits", "train", data_dir)[0]
  out = method.train_transform(info).random_map(example, np.random.default_rng(0))
  assert out["view1"].shape == out["view2"].shape == (8, 8, 1)
  assert out["view1"].dtype == np.float32
  assert not np.allclose(out["view1"], out["view2"])
