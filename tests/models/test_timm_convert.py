"""timm ViT <-> jaxssl ViT conversion: same outputs as timm, exact round trips.

Needs torch and timm in the same environment as JAX (not project requirements), e.g.
`pip install torch==2.14.1 torchvision==0.29.1 timm`; skipped with that reason otherwise.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import models
from jaxssl.models import timm_convert

torch = pytest.importorskip(
  "torch",
  reason="torch not installed (optional, for the timm converter tests): "
  "pip install torch==2.14.1 torchvision==0.29.1 timm",
)
timm_vit = pytest.importorskip(
  "timm.models.vision_transformer",
  reason="timm not installed (optional): pip install torch==2.14.1 torchvision==0.29.1 timm",
)

NUM_HEADS = 3
IMAGE_SIZE, PATCH = 32, 8
# Layouts: DINO (timm default ViT), DINOv2 (LayerScale), MAE (fixed sin-cos pos_embed with a
# zero [cls] slot, as MAE's get_2d_sincos_pos_embed(cls_token=True) writes it).
LAYOUTS = ("dino", "dinov2", "mae")


def _timm_model(layout, seed):
  """A small timm ViT of `layout` with every parameter random (biases and gammas included)."""
  torch.manual_seed(seed)
  model = timm_vit.VisionTransformer(
    img_size=IMAGE_SIZE,
    patch_size=PATCH,
    embed_dim=48,
    depth=2,
    num_heads=NUM_HEADS,
    mlp_ratio=4.0,
    qkv_bias=True,
    num_classes=0,
    global_pool="token",
    init_values=1e-5 if layout == "dinov2" else None,
  )
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("gamma"):
        p.copy_(0.5 + 0.5 * torch.rand_like(p))
      else:
        p.copy_(0.2 * torch.randn_like(p))
    if layout == "mae":
      model.pos_embed[:, 0] = 0.0
  return model.eval()


def _state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _images(seed=0, n=3):
  return np.random.default_rng(seed).normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def _timm_tokens(model, images):
  """timm's final-normed tokens [B, 1 + N, D] for NHWC images."""
  with torch.no_grad():
    return model.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()


def _our_outputs(state_dict, images):
  config = timm_convert.vit_config_from_timm(state_dict, num_heads=NUM_HEADS)
  params = timm_convert.from_timm(state_dict, num_heads=NUM_HEADS)
  encoder = models.build_encoder(config)
  out, aux = jax.jit(lambda p, x: encoder.apply({"params": p}, x))(params, jnp.asarray(images))
  return np.asarray(out), np.asarray(aux["tokens"]), params


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imported_vit_matches_timm(layout):
  model = _timm_model(layout, seed=1)
  sd = _state_dict(model)
  images = _images()
  ref = _timm_tokens(model, images)
  out, tokens, _ = _our_outputs(sd, images)
  # Random weights give O(1) activations, so an absolute 1e-4 is a real check.
  assert np.abs(ref).max() > 0.5
  np.testing.assert_allclose(out, ref[:, 0], atol=1e-4, rtol=0)
  np.testing.assert_allclose(tokens, ref[:, 1:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_gives_timm_the_same_function_and_canonical_dicts_round_trip(layout):
  model = _timm_model(layout, seed=2)
  sd = _state_dict(model)
  images = _images(seed=1)
  layer_scale = layout == "dinov2"
  exported = timm_convert.to_timm(
    timm_convert.from_timm(sd, num_heads=NUM_HEADS), layer_scale=layer_scale
  )
  assert set(exported) == set(sd)
  # Loaded into a fresh timm model (strict: every key, every shape) it computes the same.
  fresh = _timm_model(layout, seed=3)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  np.testing.assert_allclose(
    _timm_tokens(fresh, images), _timm_tokens(model, images), atol=1e-4, rtol=0
  )
  # The export is the canonical form (cls slot and key bias zero, gamma one); exporting the
  # import of a canonical dict gives it back bit for bit.
  twice = timm_convert.to_timm(
    timm_convert.from_timm(exported, num_heads=NUM_HEADS), layer_scale=layer_scale
  )
  for key in sd:
    np.testing.assert_array_equal(twice[key], exported[key], err_msg=key)
  if layout == "mae":  # MAE's pos_embed already has a zero [cls] slot; the key bias decides.
    width = sd["cls_token"].shape[-1]
    for i in range(2):
      sd[f"blocks.{i}.attn.qkv.bias"][width : 2 * width] = 0.0
    for key in sd:
      np.testing.assert_array_equal(exported[key], sd[key], err_msg=key)


def test_our_params_round_trip_exactly():
  encoder = models.ViT(
    width=48,
    depth=2,
    mlp_dim=192,
    num_heads=NUM_HEADS,
    patch_size=PATCH,
    pool="cls",
    posemb="learn",
    gelu_approximate=False,
  )
  params = nn.unbox(
    jax.jit(encoder.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  )
  params = jax.tree.map(
    lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params
  )
  back = timm_convert.from_timm(timm_convert.to_timm(params), num_heads=NUM_HEADS)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_layouts_it_cannot_represent_fail_clearly():
  sd = _state_dict(_timm_model("dino", seed=0))
  with pytest.raises(ValueError, match="register tokens"):
    timm_convert.from_timm({**sd, "reg_token": np.zeros((1, 4, 48))}, num_heads=NUM_HEADS)
  with pytest.raises(ValueError, match="Unrecognised keys"):
    timm_convert.from_timm({**sd, "blocks.0.attn.q_norm.weight": np.ones(16)}, num_heads=NUM_HEADS)
  with pytest.raises(ValueError, match="lacks 'cls_token'"):
    timm_convert.from_timm({k: v for k, v in sd.items() if k != "cls_token"}, num_heads=NUM_HEADS)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    timm_convert.from_timm(sd, num_heads=5)
  # Training-only keys of official checkpoints are ignored, not errors.
  params = timm_convert.from_timm(
    {**sd, "mask_token": np.zeros((1, 48)), "decoder_embed.weight": np.zeros((8, 48))},
    num_heads=NUM_HEADS,
  )
  assert "mask_token" not in params
