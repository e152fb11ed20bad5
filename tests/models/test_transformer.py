"""Text transformer: causal mask, shapes, pooling, tied head, posemb, logical annotations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models.transformer import Transformer, posemb_sincos_1d
from jaxssl.models.vit import SelfAttention

TINY = dict(vocab_size=50, max_len=16, width=16, depth=2, mlp_dim=32, num_heads=2)
PARAM_AXES = {"vocab", "embed", "heads", "kv", "mlp", "norm", None}


def _tokens(shape=(3, 12), seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 0, TINY["vocab_size"])


def _params(model, tokens):
  return nn.unbox(model.init(jax.random.key(1), tokens))


def test_shapes_and_aux():
  model = Transformer(**TINY, causal=True)
  tokens = _tokens()
  pooled, aux = model.apply(_params(model, tokens), tokens)
  assert pooled.shape == (3, 16)
  assert aux["tokens"].shape == (3, 12, 16)
  assert aux["logits"].shape == (3, 12, 50)
  assert len(aux["blocks"]) == 2
  np.testing.assert_allclose(pooled, aux["tokens"][:, -1])


def test_causal_mask_leaks_nothing_from_the_future():
  model = Transformer(**TINY, causal=True)
  tokens = _tokens()
  params = _params(model, tokens)
  changed = tokens.at[:, 7:].set((tokens[:, 7:] + 13) % TINY["vocab_size"])
  logits = model.apply(params, tokens)[1]["logits"]
  logits_changed = model.apply(params, changed)[1]["logits"]
  np.testing.assert_allclose(logits[:, :7], logits_changed[:, :7], atol=1e-6)
  assert np.abs(logits[:, 7:] - logits_changed[:, 7:]).max() > 1e-3
  # Gradient form: d logits[t] / d embedding of token s is exactly zero for s > t.
  embedded = jax.random.normal(jax.random.key(3), (1, 6, 16))
  attention = SelfAttention(num_heads=2, is_causal=True)
  p = attention.init(jax.random.key(4), embedded)
  jac = jax.jacobian(lambda e: attention.apply(p, e)[0])(embedded)[:, :, 0]  # [t, d, s, d']
  for t in range(6):
    assert np.all(np.asarray(jac[t, :, t + 1 :]) == 0)
    assert np.abs(np.asarray(jac[t, :, : t + 1])).max() > 0


def test_bidirectional_model_does_see_the_future():
  model = Transformer(**TINY, causal=False)
  tokens = _tokens()
  params = _params(model, tokens)
  changed = tokens.at[:, -1].set((tokens[:, -1] + 1) % TINY["vocab_size"])
  logits = model.apply(params, tokens)[1]["logits"]
  assert np.abs(logits[:, 0] - model.apply(params, changed)[1]["logits"][:, 0]).max() > 1e-4


def test_causal_attention_matches_numpy():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  attention = SelfAttention(num_heads=2, is_causal=True)
  params = nn.unbox(attention.init(jax.random.key(1), x))["params"]
  params = {k: jax.random.normal(jax.random.key(len(k)), v.shape) for k, v in params.items()}
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xs = np.asarray(x, np.float64)
  q = np.einsum("btd,dhk->bhtk", xs, p["query_kernel"]) + p["query_bias"][:, None]
  k = np.einsum("btd,dhk->bhtk", xs, p["key_kernel"])
  v = np.einsum("btd,dhk->bhtk", xs, p["value_kernel"]) + p["value_bias"][:, None]
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(4)
  logits = np.where(np.tril(np.ones((5, 5), bool)), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bhtk,hkd->btd", weights @ v, p["out_kernel"]) + p["out_bias"]
  np.testing.assert_allclose(attention.apply({"params": params}, x), expected, atol=1e-4)


def test_tied_head_is_embedding_transpose_and_untied_has_own_matrix():
  tokens = _tokens()
  model = Transformer(**TINY)
  params = _params(model, tokens)
  assert "head_kernel" not in params["params"]
  _, aux = model.apply(params, tokens)
  p = params["params"]
  expected = np.einsum(
    "btd,vd->btv",
    np.asarray(aux["tokens"], np.float64),
    np.asarray(p["token_embedding"], np.float64),
  ) + np.asarray(p["head_bias"])
  np.testing.assert_allclose(aux["logits"], expected, atol=1e-4)
  untied = _params(Transformer(**TINY, tie_embeddings=False), tokens)["params"]
  assert untied["head_kernel"].shape == (50, 16)
  tower = _params(Transformer(**TINY, lm_head=False), tokens)["params"]
  assert "head_bias" not in tower and "head_kernel" not in tower


def test_pooling_modes():
  tokens = jnp.array([[5, 6, 2, 0, 0], [7, 8, 9, 1, 2]])
  for pool, expected_index in [("eos", [2, 4]), ("last", [4, 4]), ("first", [0, 0])]:
    model = Transformer(**TINY, causal=True, pool=pool, eos_id=2)
    pooled, aux = model.apply(_params(model, tokens), tokens)
    np.testing.assert_allclose(pooled, aux["tokens"][jnp.arange(2), jnp.array(expected_index)])
  # No EOS in a row -> its last position.
  model = Transformer(**TINY, pool="eos", eos_id=49)
  pooled, aux = model.apply(_params(model, tokens), tokens)
  np.testing.assert_allclose(pooled, aux["tokens"][:, -1])
  model = Transformer(**TINY, pool="mean", pad_id=0)
  pooled, aux = model.apply(_params(model, tokens), tokens)
  np.testing.assert_allclose(pooled[0], aux["tokens"][0, :3].mean(0), atol=1e-6)
  np.testing.assert_allclose(pooled[1], aux["tokens"][1].mean(0), atol=1e-6)


def test_sincos_matches_formula_and_is_used():
  table = np.asarray(posemb_sincos_1d(7, 6))
  p, i = 5, 1
  np.testing.assert_allclose(table[p, 2 * i], np.sin(p / 10000 ** (2 * i / 6)), atol=1e-6)
  np.testing.assert_allclose(table[p, 2 * i + 1], np.cos(p / 10000 ** (2 * i / 6)), atol=1e-6)
  params = _params(Transformer(**TINY, posemb="sincos1d"), _tokens())["params"]
  assert "pos_embedding" not in params


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(pool="max"), "Unknown pool"),
    (dict(pool="eos"), "eos_id"),
    (dict(posemb="rope"), "Unknown posemb"),
    (dict(num_heads=3), "divisible"),
  ],
)
def test_bad_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Transformer(**{**TINY, **kwargs}).init(jax.random.key(0), _tokens())


def test_too_long_sequence_raises():
  with pytest.raises(ValueError, match="max_len"):
    Transformer(**TINY).init(jax.random.key(0), _tokens((1, 17)))


def test_variant_gives_vit_sizes():
  assert Transformer(vocab_size=10, max_len=4, variant="Ti").arch == dict(
    width=192, depth=12, mlp_dim=768, num_heads=3
  )


def test_every_param_has_logical_axes_and_shards_under_rules():
  model = Transformer(**TINY, tie_embeddings=False, causal=True)
  tokens = _tokens((8, 12))
  boxed = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= PARAM_AXES
  assert boxed["token_embedding"].names == ("vocab", "embed")
  assert boxed["block_0"]["SelfAttention_0"]["query_kernel"].names == ("embed", "heads", "kv")
  params = nn.unbox(model.init(jax.random.key(0), tokens))
  mesh = jax.make_mesh((4, 2), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = [
    ("batch", "fsdp"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
  ]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(model.init, jax.random.key(1), tokens)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    assert tuple(shardings["params"]["token_embedding"].spec) == ("tensor", "fsdp")
    sharded = jax.device_put(params, shardings)
    _, aux = jax.jit(model.apply)(sharded, tokens)
  np.testing.assert_allclose(aux["logits"], model.apply(params, tokens)[1]["logits"], atol=1e-5)


def test_gradients_reach_every_parameter():
  model = Transformer(**TINY, causal=True, tie_embeddings=False, pool="mean")
  tokens = _tokens()
  params = _params(model, tokens)

  def loss(p):
    pooled, aux = model.apply(p, tokens)
    return jnp.sum(aux["logits"] ** 2) + jnp.sum(pooled**2)

  for path, g in jax.tree_util.tree_leaves_with_path(jax.grad(loss)(params)):
    assert np.abs(np.asarray(g)).max() > 0, path


def test_gpt2_init_draws_the_block_kernels_from_the_scaled_normals():
  # nanoGPT model.py: every Linear ~ N(0, 0.02), zero biases; the residual output projections
  # (attention c_proj, MLP c_proj) ~ N(0, 0.02 / sqrt(2 n_layer)).
  arch = dict(vocab_size=50, max_len=16, width=64, depth=2, mlp_dim=256, num_heads=4)
  tokens = _tokens()
  model = Transformer(**arch, init_scheme="gpt2")
  gpt2 = nn.unbox(jax.jit(model.init)(jax.random.key(1), tokens))["params"]
  # Same parameters, shapes and logical names as the default scheme; only values change.
  partitioned = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
  boxed = jax.eval_shape(model.init, jax.random.key(1), tokens)
  want = jax.eval_shape(Transformer(**arch).init, jax.random.key(1), tokens)
  for fn in (lambda b: b.names, lambda b: b.value.shape):
    assert jax.tree.map(fn, boxed, is_leaf=partitioned) == jax.tree.map(
      fn, want, is_leaf=partitioned
    )
  residual_std = 0.02 / np.sqrt(2 * 2)
  drawn = []
  for i in range(2):
    block = gpt2[f"block_{i}"]
    attention, mlp = block["SelfAttention_0"], block["MlpBlock_0"]
    kernels = {
      "query": (attention["query_kernel"], 0.02),
      "key": (attention["key_kernel"], 0.02),
      "value": (attention["value_kernel"], 0.02),
      "out": (attention["out_kernel"], residual_std),
      "fc1": (mlp["Dense_0"]["kernel"], 0.02),
      "fc2": (mlp["Dense_1"]["kernel"], residual_std),
    }
    for name, (kernel, std) in kernels.items():
      k = np.asarray(kernel, np.float64).ravel()
      # 4,096 or 16,384 draws: the sample std is within ~1.1 % of the true one (one sigma).
      assert abs(k.std() / std - 1) < 0.05, (i, name, k.std(), std)
      assert abs(k.mean()) < 4 * std / np.sqrt(k.size), (i, name)
      drawn.append(tuple(k[:8]))
    for bias in (attention["query_bias"], attention["value_bias"], attention["out_bias"]):
      assert not np.any(np.asarray(bias))
    assert not np.any(np.asarray(mlp["Dense_0"]["bias"]))
    assert not np.any(np.asarray(mlp["Dense_1"]["bias"]))
    for ln in ("LayerNorm_0", "LayerNorm_1"):
      np.testing.assert_array_equal(block[ln]["scale"], 1.0)
      np.testing.assert_array_equal(block[ln]["bias"], 0.0)
  assert len(set(drawn)) == len(drawn)  # independent draws per kernel and per block
  # The embeddings are GPT-2's in both schemes: token N(0, 0.02), positions N(0, 0.01).
  assert abs(float(np.std(gpt2["token_embedding"])) / 0.02 - 1) < 0.1
  assert abs(float(np.std(gpt2["pos_embedding"])) / 0.01 - 1) < 0.1
  with pytest.raises(ValueError, match="init_scheme"):
    Transformer(**arch, init_scheme="xavier").init(jax.random.key(0), tokens)


def test_gpt2_init_holds_under_remat():
  model = Transformer(**TINY, causal=True, init_scheme="gpt2", remat=True)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), _tokens()))["params"]
  attention = params["block_1"]["SelfAttention_0"]
  # Xavier would give std sqrt(2 / 32) = 0.25 here; GPT-2's are 0.02 and 0.01. (Applying the
  # model is the default path: the blocks are plain vit.EncoderBlock outside init.)
  assert float(np.std(attention["query_kernel"])) < 0.03
  assert float(np.std(attention["out_kernel"])) < 0.015


def _layer_norm64(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_lm_transform_is_berts_dense_gelu_layernorm_before_the_tied_decoder():
  tokens = _tokens()
  model = Transformer(**TINY, lm_transform=True)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), tokens))
  p = params["params"]
  assert set(p["lm_transform"]) == {"kernel", "bias"} and p["lm_transform"]["kernel"].shape == (
    16,
    16,
  )
  # Non-trivial values everywhere the formula reads.
  rng = np.random.default_rng(0)
  for key in ("lm_transform", "lm_transform_norm"):
    p[key] = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in p[key].items()}
  p["head_bias"] = jnp.asarray(rng.normal(size=50), jnp.float32)
  pooled, aux = jax.jit(model.apply)(params, tokens)
  h = np.asarray(aux["tokens"], np.float64)
  dense = h @ np.asarray(p["lm_transform"]["kernel"], np.float64) + np.asarray(
    p["lm_transform"]["bias"], np.float64
  )
  gelu = 0.5 * dense * (1 + np.tanh(np.sqrt(2 / np.pi) * (dense + 0.044715 * dense**3)))
  norm = p["lm_transform_norm"]
  transformed = _layer_norm64(gelu, np.asarray(norm["scale"]), np.asarray(norm["bias"]))
  expected = transformed @ np.asarray(p["token_embedding"], np.float64).T + np.asarray(
    p["head_bias"]
  )
  np.testing.assert_allclose(aux["logits"], expected, atol=1e-4, rtol=1e-4)
  # The features (pooled, aux['tokens']) are the encoder's, before the head transform.
  base = Transformer(**TINY)
  base_params = {"params": {k: v for k, v in p.items() if not k.startswith("lm_transform")}}
  base_pooled, base_aux = jax.jit(base.apply)(base_params, tokens)
  np.testing.assert_allclose(pooled, base_pooled, atol=1e-6)
  np.testing.assert_allclose(aux["tokens"], base_aux["tokens"], atol=1e-6)
  assert "lm_transform" not in jax.eval_shape(base.init, jax.random.key(1), tokens)["params"]


def test_head_bias_off_gives_plain_tied_logits():
  tokens = _tokens()
  model = Transformer(**TINY, causal=True, head_bias=False)
  params = _params(model, tokens)
  assert "head_bias" not in params["params"]
  _, aux = model.apply(params, tokens)
  expected = (
    np.asarray(aux["tokens"], np.float64)
    @ np.asarray(params["params"]["token_embedding"], np.float64).T
  )
  np.testing.assert_allclose(aux["logits"], expected, atol=1e-5)
