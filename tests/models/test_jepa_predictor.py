"""I-JEPA predictor: an independent re-derivation of its forward, per-block independence,
dependence on target positions, shapes and errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models import vit
from jaxssl.models.jepa_predictor import JEPAPredictor

GRID = (4, 4)


def _inputs(seed=0, batch=2, num_context=5, blocks=3, block_len=2):
  rng = np.random.default_rng(seed)
  ctx = jnp.asarray(rng.normal(size=(batch, num_context, 12)), jnp.float32)
  ctx_idx = jnp.asarray(
    np.stack([rng.choice(16, num_context, replace=False) for _ in range(batch)]), jnp.int32
  )
  tgt_idx = jnp.asarray(rng.integers(0, 16, size=(batch, blocks, block_len)), jnp.int32)
  return ctx, ctx_idx, tgt_idx


@pytest.fixture(scope="module")
def setup():
  model = JEPAPredictor(width=8, depth=2, num_heads=2, mlp_dim=16, out_width=12)
  args = _inputs()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), *args, GRID))["params"]
  # A non-zero mask token and biases, so every input path is exercised.
  params = jax.tree.map(lambda x: x + 0.05, params)
  return model, params, args


def test_forward_matches_an_independent_recomputation(setup):
  model, params, (ctx, ctx_idx, tgt_idx) = setup
  out = model.apply({"params": params}, ctx, ctx_idx, tgt_idx, GRID)
  assert out.shape == (2, 3, 2, 12) and out.dtype == jnp.float32
  pos = vit.posemb_sincos_2d(*GRID, 8)
  for b in range(2):
    for t in range(3):
      x = ctx[b] @ params["embed"]["kernel"] + params["embed"]["bias"] + pos[ctx_idx[b]]
      q = params["mask_token"] + pos[tgt_idx[b, t]]
      h = jnp.concatenate([x, q])[None]
      for i in range(2):
        h = vit.EncoderBlock(mlp_dim=16, num_heads=2).apply({"params": params[f"block_{i}"]}, h)
      h = vit.layer_norm(jnp.float32).apply({"params": params["predictor_norm"]}, h[:, 5:])
      want = h[0] @ params["proj"]["kernel"] + params["proj"]["bias"]
      np.testing.assert_allclose(out[b, t], want, rtol=1e-5, atol=1e-5)


def test_blocks_are_predicted_independently_and_depend_on_positions(setup):
  model, params, (ctx, ctx_idx, tgt_idx) = setup
  out = model.apply({"params": params}, ctx, ctx_idx, tgt_idx, GRID)
  # Changing block 2's positions leaves blocks 0 and 1 exactly as they were.
  moved = tgt_idx.at[:, 2].set((tgt_idx[:, 2] + 5) % 16)
  out2 = model.apply({"params": params}, ctx, ctx_idx, moved, GRID)
  np.testing.assert_allclose(out2[:, :2], out[:, :2], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out2[:, 2], out[:, 2], atol=1e-4)
  # Context positions matter too (the context carries its sin-cos embedding).
  out3 = model.apply({"params": params}, ctx, (ctx_idx + 1) % 16, tgt_idx, GRID)
  assert not np.allclose(out3, out, atol=1e-4)


def test_bad_shapes_fail_clearly(setup):
  model, params, (ctx, ctx_idx, tgt_idx) = setup
  with pytest.raises(ValueError, match="target_indices must be int"):
    model.apply({"params": params}, ctx, ctx_idx, tgt_idx[:, 0], GRID)
  with pytest.raises(ValueError, match="context_indices must be"):
    model.apply({"params": params}, ctx, ctx_idx[:, :3], tgt_idx, GRID)
