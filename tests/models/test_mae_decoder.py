"""MAE decoder: shapes, unshuffling against a float64 NumPy derivation, annotations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.data import masking
from jaxssl.models import vit
from jaxssl.models.mae_decoder import MAEDecoder

GRID = (4, 4)
N = GRID[0] * GRID[1]


def _decoder(depth=1):
  return MAEDecoder(
    decoder_width=16,
    decoder_depth=depth,
    decoder_heads=2,
    decoder_mlp_dim=32,
    patch_size=2,
    channels=3,
  )


def _inputs(batch=3, ratio=0.75, width=8, seed=0):
  rng = np.random.default_rng(seed)
  keep, _, ids_restore = map(
    np.stack, zip(*[masking.random_mask(rng, N, ratio) for _ in range(batch)])
  )
  tokens = rng.normal(size=(batch, keep.shape[1], width)).astype(np.float32)
  return tokens, keep, ids_restore


def _init(decoder, tokens, ids_restore):
  return decoder.init(jax.random.PRNGKey(0), jnp.asarray(tokens), jnp.asarray(ids_restore), GRID)


def test_output_shape_and_dtype():
  tokens, _, ids_restore = _inputs()
  decoder = _decoder()
  variables = _init(decoder, tokens, ids_restore)
  pred = decoder.apply(variables, tokens, ids_restore, GRID)
  assert pred.shape == (3, N, 2 * 2 * 3) and pred.dtype == jnp.float32
  assert np.all(np.isfinite(pred))


def _layer_norm64(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_depth_zero_puts_every_token_back_at_its_patch():
  # Without blocks every op is per token, so the prediction at patch n is f(token of n) with
  # f = embed -> + posemb[n] -> LN -> predict, computed here independently in float64.
  tokens, keep, ids_restore = _inputs()
  decoder = _decoder(depth=0)
  params = nn.unbox(_init(decoder, tokens, ids_restore))["params"]
  pred = np.asarray(decoder.apply({"params": params}, tokens, ids_restore, GRID), np.float64)

  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  embedded = (
    tokens.astype(np.float64) @ p64["decoder_embed"]["kernel"] + p64["decoder_embed"]["bias"]
  )
  posemb = np.asarray(vit.posemb_sincos_2d(*GRID, 16), np.float64)
  for b in range(tokens.shape[0]):
    sequence = np.tile(p64["mask_token"][0], (N, 1))  # every removed patch: the mask token
    sequence[keep[b]] = embedded[b]  # kept token j came from patch keep[b, j]
    x = _layer_norm64(sequence + posemb, p64["decoder_norm"]["scale"], p64["decoder_norm"]["bias"])
    expected = x @ p64["decoder_pred"]["kernel"] + p64["decoder_pred"]["bias"]
    np.testing.assert_allclose(pred[b], expected, rtol=1e-5, atol=1e-5)


def test_output_depends_on_patch_positions_not_on_token_order():
  # Reordering the kept tokens (with ids_restore updated to match) is the same masked image,
  # so the reconstruction must not change, blocks included.
  tokens, keep, ids_restore = _inputs(batch=2)
  decoder = _decoder(depth=2)
  variables = _init(decoder, tokens, ids_restore)
  pred = decoder.apply(variables, tokens, ids_restore, GRID)
  order = np.array([2, 0, 3, 1])  # moves every one of the K = 4 kept tokens
  new_keep = keep[:, order]
  shuffle = np.concatenate(
    [new_keep, np.stack([np.setdiff1d(np.arange(N), k) for k in new_keep])], axis=1
  )
  new_restore = np.argsort(shuffle, axis=1).astype(np.int32)
  pred_reordered = decoder.apply(variables, tokens[:, order], new_restore, GRID)
  np.testing.assert_allclose(pred_reordered, pred, rtol=1e-5, atol=1e-5)


def test_decoder_reads_every_kept_token():
  tokens, _, ids_restore = _inputs(batch=1)
  decoder = _decoder()
  variables = _init(decoder, tokens, ids_restore)
  grad = jax.grad(lambda t: jnp.sum(decoder.apply(variables, t, ids_restore, GRID) ** 2))(
    jnp.asarray(tokens)
  )
  assert np.all(np.abs(grad).sum(-1) > 0)


def test_parameters_carry_logical_axis_names():
  tokens, _, ids_restore = _inputs()
  boxed = _init(_decoder(), tokens, ids_restore)["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  names = nn.get_partition_spec(boxed)
  assert tuple(names["decoder_embed"]["kernel"]) == ("embed", None)
  assert tuple(names["decoder_pred"]["kernel"]) == ("embed", None)
  assert tuple(names["mask_token"]) == (None, None, "embed")
  assert tuple(names["decoder_norm"]["scale"]) == ("norm",)
  block = names["decoder_block_0"]
  assert tuple(block["SelfAttention_0"]["query_kernel"]) == ("embed", "heads", "kv")
  assert tuple(block["MlpBlock_0"]["Dense_0"]["kernel"]) == ("embed", "mlp")


def test_bad_inputs_raise_with_the_fix():
  tokens, _, ids_restore = _inputs()
  decoder = _decoder()
  with pytest.raises(ValueError, match="patch_grid"):
    _init(decoder, tokens, ids_restore[:, :9])
  with pytest.raises(ValueError, match="decoder_heads"):
    MAEDecoder(
      decoder_width=16,
      decoder_depth=1,
      decoder_heads=3,
      decoder_mlp_dim=32,
      patch_size=2,
      channels=3,
    ).init(jax.random.PRNGKey(0), tokens, ids_restore, GRID)
