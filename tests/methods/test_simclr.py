"""SimCLR method: views, one step with BatchNorm state, encode for the eval job."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import config_lib
from jaxssl import losses
from jaxssl import methods
from jaxssl.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _method(backbone="resnet18_small"):
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/simclr.py:test,{backbone}"))
  return methods.build(config)


def _batch(n=8):
  rng = np.random.default_rng(0)
  return {k: jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32) for k in ("view1", "view2")}


def test_registry_lists_methods_only():
  assert {"simclr", "byol", "moco_v3", "vicreg", "barlow_twins", "mae"} <= set(methods.available())
  assert not {"common", "ema"} & set(methods.available())
  assert methods.get("simclr") is type(_method())


def test_loss_is_nt_xent_of_the_projections_and_updates_batch_stats():
  method = _method()
  batch = _batch()
  params, aux = jax.tree.map(jnp.asarray, nn.unbox(method.init(jax.random.PRNGKey(0), batch)))
  assert aux["model_state"]["batch_stats"]  # ResNet + head BatchNorm statistics
  loss, (metrics, new_aux) = method.loss_fn(params, aux, batch, jax.random.PRNGKey(1), 0)
  # Independent recomputation: project both views in one BN batch, then NT-Xent.
  images = jnp.concatenate([batch["view1"], batch["view2"]])
  (z, _), _ = method.model.apply(
    {"params": params, **aux["model_state"]}, images, train=True, mutable=["batch_stats"]
  )
  ref, _ = losses.nt_xent(z[:8], z[8:], temperature=0.1)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  assert {"contrastive_acc", "rankme", "embedding_std"} <= set(metrics)
  before = jax.tree.leaves(aux["model_state"])
  after = jax.tree.leaves(new_aux["model_state"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


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
