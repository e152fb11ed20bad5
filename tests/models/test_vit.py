"""Tests for jaxssl.models.vit (and build_encoder): shapes, variants, position embeddings,
token dropping invariances, logical annotations, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl import kernels
from jaxssl.kernels import cpu
from jaxssl.models import ViT, build_encoder, decode_variant
from jaxssl.models.vit import SelfAttention, posemb_sincos_2d

PARAM_AXES = {"embed", "mlp", "heads", "kv", "vocab", "conv_in", "conv_out", "norm", None}
TINY = dict(width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=7)


def _images(seed=0, shape=(3, 28, 28, 1)):
  return jax.random.normal(jax.random.key(seed), shape)


def _init(model, images, **kw):
  return model.init(jax.random.key(1), images, **kw)


@pytest.mark.parametrize(
  "variant, expected",
  [
    ("S/16", dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=16)),
    ("Ti/4", dict(width=192, depth=12, mlp_dim=768, num_heads=3, patch_size=4)),
    ("mu/4", dict(width=144, depth=6, mlp_dim=576, num_heads=3, patch_size=4)),
    ("M/32", dict(width=512, depth=12, mlp_dim=2048, num_heads=8, patch_size=32)),
    ("B/16", dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)),
    ("L", dict(width=1024, depth=24, mlp_dim=4096, num_heads=16)),
  ],
)
def test_decode_variant_table(variant, expected):
  assert decode_variant(variant) == expected


@pytest.mark.parametrize("variant", ["X/16", "s/16", "S/abc", "S/0", "S/", ""])
def test_decode_variant_rejects_bad_strings(variant):
  with pytest.raises(ValueError, match="S/16"):
    decode_variant(variant)


def test_explicit_fields_override_variant():
  arch = ViT(variant="mu/4", depth=1, patch_size=7).arch()
  assert arch == dict(width=144, depth=1, mlp_dim=576, num_heads=3, patch_size=(7, 7))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(width=32, depth=2), "missing"),
    (dict(TINY, num_heads=3), "divisible by num_heads"),
    (dict(TINY, pool="map"), "pool"),
    (dict(TINY, posemb="rope"), "posemb"),
  ],
)
def test_bad_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _init(ViT(**kwargs), _images())


def test_image_not_divisible_by_patch_raises():
  with pytest.raises(ValueError, match="not divisible by the patch size"):
    _init(ViT(**TINY), _images(shape=(2, 30, 28, 1)))


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_shapes_and_aux(pool):
  model = ViT(**TINY, pool=pool)
  images = _images()
  out, aux = model.apply(_init(model, images), images)
  assert out.shape == (3, 32) and out.dtype == jnp.float32
  assert set(aux) >= {"pre_logits", "tokens", "blocks", "num_patches"}
  assert aux["num_patches"] == 16 and aux["patch_grid"] == (4, 4)
  assert aux["tokens"].shape == (3, 16, 32)
  num_tokens = 17 if pool == "cls" else 16
  assert [b.shape for b in aux["blocks"]] == [(3, num_tokens, 32)] * 2
  np.testing.assert_array_equal(aux["pre_logits"], out)
  if pool == "gap":
    np.testing.assert_allclose(out, aux["tokens"].mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("ops", [kernels.REFERENCE, cpu.KERNELS], ids=lambda k: k.name)
def test_self_attention_matches_numpy(ops, is_causal):
  num_heads, head_dim = 2, 4
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  attention = SelfAttention(num_heads=num_heads, kernels=ops, is_causal=is_causal)
  params = nn.unbox(attention.init(jax.random.key(1), x))["params"]
  assert set(params) == {
    "query_kernel",
    "query_bias",
    "key_kernel",
    "value_kernel",
    "value_bias",
    "out_kernel",
    "out_bias",
  }
  # Random biases so that their placement is tested too.
  params = {k: jax.random.normal(jax.random.key(len(k)), v.shape) for k, v in params.items()}
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xs = np.asarray(x, np.float64)
  q = np.einsum("btd,dhk->bhtk", xs, p["query_kernel"]) + p["query_bias"][:, None]
  k = np.einsum("btd,dhk->bhtk", xs, p["key_kernel"])
  v = np.einsum("btd,dhk->bhtk", xs, p["value_kernel"]) + p["value_bias"][:, None]
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
  if is_causal:  # query t sees keys <= t
    logits = np.where(np.tril(np.ones((5, 5), bool)), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  heads = weights @ v  # [b, h, t, k]
  expected = np.einsum("bhtk,hkd->btd", heads, p["out_kernel"]) + p["out_bias"]
  np.testing.assert_allclose(attention.apply({"params": params}, x), expected, atol=1e-4)
  # Xavier fans are over [embed] x [heads * kv]: Var = 2 / (8 + 8).
  kernel = nn.unbox(SelfAttention(num_heads=4).init(jax.random.key(2), jnp.zeros((1, 1, 256))))[
    "params"
  ]["query_kernel"]
  np.testing.assert_allclose(np.var(kernel), 2 / 512, rtol=0.05)


def test_self_attention_kernels_have_the_same_parameters_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  shapes = [
    jax.tree.map(jnp.shape, SelfAttention(num_heads=2, kernels=ops).init(jax.random.key(1), x))
    for ops in (kernels.REFERENCE, cpu.KERNELS)
  ]
  assert shapes[0] == shapes[1]
  params = nn.unbox(SelfAttention(num_heads=2).init(jax.random.key(1), x))["params"]
  grads = [
    jax.grad(
      lambda p, x, ops=ops: jnp.sum(
        jnp.sin(SelfAttention(num_heads=2, kernels=ops).apply({"params": p}, x))
      ),
      argnums=(0, 1),
    )(params, x)
    for ops in (kernels.REFERENCE, cpu.KERNELS)
  ]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *grads)


def test_sincos_matches_numpy_formula():
  grid_h, grid_w, width = 3, 5, 16
  num_freq = width // 4
  expected = np.zeros((grid_h * grid_w, width), np.float64)
  for row in range(grid_h):
    for col in range(grid_w):
      for d in range(num_freq):
        omega = 10_000.0 ** (-d / (num_freq - 1))
        token = row * grid_w + col
        expected[token, d] = np.sin(col * omega)
        expected[token, num_freq + d] = np.cos(col * omega)
        expected[token, 2 * num_freq + d] = np.sin(row * omega)
        expected[token, 3 * num_freq + d] = np.cos(row * omega)
  np.testing.assert_allclose(posemb_sincos_2d(grid_h, grid_w, width), expected, atol=2e-5)


def test_model_adds_sincos_posemb_to_patch_tokens():
  # With no blocks and zero images the conv gives its (zero) bias, so each token is
  # LayerNorm(position embedding): checks the embedding's wiring and row-major order.
  model = ViT(**dict(TINY, depth=0))
  images = jnp.zeros((1, 21, 35, 1))
  _, aux = model.apply(_init(model, images), images)
  pe = np.asarray(posemb_sincos_2d(3, 5, 32), np.float64)
  normed = (pe - pe.mean(-1, keepdims=True)) / np.sqrt(pe.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(aux["tokens"][0], normed, atol=1e-4)


@pytest.mark.parametrize("posemb", ["sincos2d", "learn"])
def test_runs_at_two_resolutions(posemb):
  model = ViT(**TINY, posemb=posemb)
  variables = _init(model, _images())
  for shape, grid in [((2, 28, 28, 1), 16), ((2, 56, 42, 1), 48)]:
    out, aux = model.apply(variables, _images(shape=shape))
    assert out.shape == (2, 32) and aux["num_patches"] == grid
    assert np.isfinite(out).all()
  if posemb == "learn":
    assert nn.unbox(variables["params"]["pos_embedding"]).shape == (4, 4, 32)


def test_learned_posemb_on_explicit_base_grid_is_resized():
  model = ViT(**dict(TINY, depth=0), posemb="learn", posemb_grid=(2, 2))
  images = jnp.zeros((1, 28, 28, 1))
  variables = _init(model, images)
  table = nn.unbox(variables["params"]["pos_embedding"])
  assert table.shape == (2, 2, 32)
  _, aux = model.apply(variables, images)
  resized = np.asarray(jax.image.resize(table, (4, 4, 32), "bilinear")).reshape(16, 32)
  normed = (resized - resized.mean(-1, keepdims=True)) / np.sqrt(
    resized.var(-1, keepdims=True) + 1e-6
  )
  np.testing.assert_allclose(aux["tokens"][0], normed, atol=1e-4)


def test_keep_all_indices_equals_no_dropping():
  model = ViT(**TINY, pool="cls")
  images = _images()
  variables = _init(model, images)
  out, aux = model.apply(variables, images)
  keep = jnp.tile(jnp.arange(16)[None], (3, 1))
  out_kept, aux_kept = model.apply(variables, images, keep_indices=keep)
  np.testing.assert_allclose(out_kept, out, atol=1e-6)
  np.testing.assert_allclose(aux_kept["tokens"], aux["tokens"], atol=1e-6)


def test_permuted_tokens_are_equivariant_and_pooled_output_invariant():
  # Unmasked self-attention is permutation-equivariant once position embeddings are added,
  # so permuting the kept tokens permutes the outputs and leaves the mean pool unchanged.
  model = ViT(**TINY, pool="gap")
  images = _images()
  variables = _init(model, images)
  out, aux = model.apply(variables, images)
  perms = jnp.stack([jax.random.permutation(jax.random.key(i), 16) for i in range(3)])
  out_perm, aux_perm = model.apply(variables, images, keep_indices=perms)
  np.testing.assert_allclose(out_perm, out, atol=1e-5)
  expected_tokens = np.take_along_axis(np.asarray(aux["tokens"]), np.asarray(perms)[..., None], 1)
  np.testing.assert_allclose(aux_perm["tokens"], expected_tokens, atol=1e-5)


def test_dropped_tokens_are_the_selected_subset_without_blocks():
  # depth=0: tokens do not interact, so keeping K of them must give exactly those K.
  model = ViT(**dict(TINY, depth=0), pool="cls")
  images = _images()
  variables = _init(model, images)
  _, aux = model.apply(variables, images)
  keep = jnp.stack([jax.random.permutation(jax.random.key(i), 16)[:5] for i in range(3)])
  _, aux_kept = model.apply(variables, images, keep_indices=keep)
  assert aux_kept["tokens"].shape == (3, 5, 32) and aux_kept["num_patches"] == 16
  expected = np.take_along_axis(np.asarray(aux["tokens"]), np.asarray(keep)[..., None], 1)
  np.testing.assert_allclose(aux_kept["tokens"], expected, atol=1e-6)


def test_keep_indices_with_wrong_shape_raises():
  model = ViT(**TINY)
  images = _images()
  with pytest.raises(ValueError, match="keep_indices"):
    model.apply(_init(model, images), images, keep_indices=jnp.arange(16))


def _check_annotations(boxed_params):
  leaves = jax.tree_util.tree_leaves(boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  specs = jax.tree_util.tree_leaves(
    nn.get_partition_spec(boxed_params), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  assert len(leaves) == len(specs)
  for leaf, spec in zip(leaves, specs):
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(spec) == leaf.value.ndim, (spec, leaf.value.shape)
    assert set(spec) <= PARAM_AXES, spec


def test_every_param_has_logical_axes():
  model = ViT(**TINY, pool="cls", posemb="learn")
  variables = jax.eval_shape(model.init, jax.random.key(0), _images())
  _check_annotations(variables["params"])
  # Spot-check the names the sharding rules rely on.
  block = variables["params"]["block_0"]
  assert block["SelfAttention_0"]["query_kernel"].names == ("embed", "heads", "kv")
  assert block["SelfAttention_0"]["out_kernel"].names == ("heads", "kv", "embed")
  assert block["MlpBlock_0"]["Dense_1"]["kernel"].names == ("mlp", "embed")


def test_activation_constraints_are_noop_without_rules_and_applied_with_rules():
  model = ViT(**TINY, posemb="learn")
  images = _images(shape=(8, 28, 28, 1))
  params = nn.unbox(_init(model, images))
  jaxpr = str(jax.make_jaxpr(model.apply)(params, images))
  assert "sharding_constraint" not in jaxpr
  # Under a mesh with rules (as in the trainer) init and apply both trace, and sharded
  # tensor-parallel params give the same numbers as the unsharded run.
  mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = [("batch", "data"), ("heads", "tensor"), ("mlp", "tensor")]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(model.init, jax.random.key(1), images)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    sharded_params = jax.device_put(params, shardings)
    jaxpr = str(jax.make_jaxpr(model.apply)(sharded_params, images))
    out, _ = jax.jit(model.apply)(sharded_params, images)
  assert "sharding_constraint" in jaxpr
  np.testing.assert_allclose(out, model.apply(params, images)[0], atol=1e-5)


def test_gradients_reach_every_parameter():
  model = ViT(**TINY, pool="cls", posemb="learn")
  images = _images()
  params = nn.unbox(_init(model, images))["params"]
  weights = jax.random.normal(jax.random.key(2), (3, 32))

  def loss(p):
    out, aux = model.apply({"params": p}, images)
    return jnp.sum(out * weights) + jnp.sum(aux["tokens"] ** 2) * 1e-2

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_remat_keeps_params_outputs_and_grads():
  images = _images()
  plain, remat = ViT(**TINY), ViT(**TINY, remat=True)
  params = nn.unbox(_init(plain, images))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
    nn.unbox(_init(remat, images))
  )
  loss = lambda m: lambda p: jnp.sum(m.apply(p, images)[0] ** 2)  # noqa: E731
  np.testing.assert_allclose(remat.apply(params, images)[0], plain.apply(params, images)[0])
  grads_remat = jax.jit(jax.grad(loss(remat)))(params)
  grads_plain = jax.jit(jax.grad(loss(plain)))(params)
  for g_remat, g_plain in zip(
    jax.tree_util.tree_leaves(grads_remat), jax.tree_util.tree_leaves(grads_plain)
  ):
    np.testing.assert_allclose(g_remat, g_plain, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = ViT(**TINY, dtype=jnp.bfloat16)
  images = _images()
  variables = nn.unbox(_init(model, images))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  out, aux = model.apply(variables, images)
  assert out.dtype == jnp.float32 and aux["blocks"][0].dtype == jnp.bfloat16
  out32, _ = ViT(**TINY).apply(variables, images)
  np.testing.assert_allclose(out, out32, atol=0.1)


def test_dropout_only_in_train_mode():
  model = ViT(**TINY, dropout=0.5)
  images = _images()
  variables = _init(model, images)
  eval_a, _ = model.apply(variables, images)
  eval_b, _ = model.apply(variables, images)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_out, _ = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(3)})
  assert np.abs(train_out - eval_a).max() > 1e-3


def test_build_encoder_from_config_dict_and_dict():
  config = ml_collections.ConfigDict(
    dict(name="vit", variant="mu/7", pool="gap", depth=1, patch_size=[7, 7], dtype="float32")
  )
  model = build_encoder(config)
  assert isinstance(model, ViT) and model.patch_size == (7, 7)
  out, _ = model.apply(_init(model, _images()), _images())
  assert out.shape == (3, 144)
  assert build_encoder({"name": "resnet", "depth": 18, "stem": "cifar", "width": 16}).depth == 18


@pytest.mark.parametrize(
  "config, match",
  [
    ({"name": "vgg"}, "'resnet', 'vit'"),
    ({"variant": "S/16"}, "model.name"),
    ({"name": "vit", "varaint": "S/16"}, "'varaint'.*valid fields.*'variant'"),
    ({"name": "resnet", "depth": 18, "pool": "gap"}, "'pool'.*valid fields.*'stem'"),
  ],
)
def test_build_encoder_rejects_unknown_names_and_fields(config, match):
  with pytest.raises(ValueError, match=match):
    build_encoder(config)


def _set_mask_token(variables, value):
  params = dict(nn.unbox(variables["params"]))
  params["mask_token"] = value
  return {"params": params}


def test_token_mask_replaces_masked_patch_embeddings_before_posemb():
  # depth=0 and zero images: a kept token is LN(conv bias 0 + posemb), a masked one is
  # LN(mask_token + posemb) (iBOT's prepare_tokens order: mask, then add position).
  model = ViT(**dict(TINY, depth=0), mask_token=True)
  images = _images()
  variables = _init(model, images)
  assert nn.unbox(variables["params"]["mask_token"]).shape == (32,)
  np.testing.assert_array_equal(nn.unbox(variables["params"]["mask_token"]), 0.0)  # iBOT init
  token = jax.random.normal(jax.random.key(5), (32,))
  variables = _set_mask_token(variables, token)
  mask = np.zeros((3, 16), bool)
  mask[0, [0, 5, 15]] = True
  mask[2, :] = True
  _, aux = model.apply(variables, images, token_mask=jnp.asarray(mask))
  _, plain = model.apply(variables, images)
  pe = np.asarray(posemb_sincos_2d(4, 4, 32), np.float64)
  masked = pe + np.asarray(token, np.float64)
  normed = (masked - masked.mean(-1, keepdims=True)) / np.sqrt(masked.var(-1, keepdims=True) + 1e-6)
  got = np.asarray(aux["tokens"])
  for b in range(3):
    for n in range(16):
      want = normed[n] if mask[b, n] else np.asarray(plain["tokens"])[b, n]
      np.testing.assert_allclose(got[b, n], want, atol=1e-4)
  # A float mask means the same thing; an all-zero mask changes nothing.
  _, aux_f = model.apply(variables, images, token_mask=jnp.asarray(mask, jnp.float32))
  np.testing.assert_array_equal(aux_f["tokens"], aux["tokens"])
  out0, _ = model.apply(variables, images, token_mask=jnp.zeros((3, 16)))
  np.testing.assert_array_equal(out0, model.apply(variables, images)[0])


def test_token_mask_gradient_reaches_mask_token_only_through_masked_patches():
  model = ViT(**TINY, mask_token=True, pool="cls")
  images = _images()
  params = nn.unbox(_init(model, images)["params"])

  def loss(p, mask):
    out, _ = model.apply({"params": p}, images, token_mask=mask)
    return jnp.sum(out**2)

  none = jax.grad(loss)(params, jnp.zeros((3, 16)))
  some = jax.grad(loss)(params, jnp.zeros((3, 16)).at[:, 3].set(1.0))
  assert float(jnp.abs(none["mask_token"]).max()) == 0.0
  assert float(jnp.abs(some["mask_token"]).max()) > 0.0


def test_token_mask_errors():
  images = _images()
  plain = ViT(**TINY)
  with pytest.raises(ValueError, match="mask_token=True"):
    plain.apply(_init(plain, images), images, token_mask=jnp.zeros((3, 16)))
  model = ViT(**TINY, mask_token=True)
  with pytest.raises(ValueError, match=r"token_mask must be \[B=3, N=16\]"):
    model.apply(_init(model, images), images, token_mask=jnp.zeros((3, 15)))


def test_multicrop_local_crops_share_weights_and_bicubic_resize():
  # DINO: global 28px and local 14px crops go through the same weights; a learned table made
  # on the global grid is resized bicubically (interpolate_pos_encoding) for the local grid.
  model = ViT(**dict(TINY, depth=0), posemb="learn", posemb_resize="bicubic")
  variables = _init(model, _images())
  table = nn.unbox(variables["params"]["pos_embedding"])
  _, aux = model.apply(variables, jnp.zeros((1, 14, 14, 1)))
  assert aux["patch_grid"] == (2, 2)
  resized = np.asarray(jax.image.resize(table, (2, 2, 32), "bicubic")).reshape(4, 32)
  normed = (resized - resized.mean(-1, keepdims=True)) / np.sqrt(
    resized.var(-1, keepdims=True) + 1e-6
  )
  np.testing.assert_allclose(aux["tokens"][0], normed, atol=1e-4)
  with pytest.raises(ValueError, match="posemb_resize"):
    ViT(**TINY, posemb_resize="nearest").arch()


def test_drop_path_drops_whole_residual_branches_per_example_at_timms_rates():
  # Depth 2: block 0 has rate 0, block 1 the full rate p (timm's linspace(0, p, depth)). Block
  # 1's output equals its input exactly when both of its branches are dropped, which happens
  # for a fraction p^2 of the examples; eval mode is the model without drop path.
  p, n = 0.6, 400
  model = ViT(**TINY, drop_path=p)
  images = _images(shape=(n, 28, 28, 1))
  variables = _init(model, images)
  plain, _ = ViT(**TINY).apply(variables, images)
  evaluated, _ = model.apply(variables, images)
  np.testing.assert_array_equal(evaluated, plain)
  _, aux = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(7)})
  first, second = (np.asarray(b) for b in aux["blocks"])
  same = np.all(first == second, axis=(1, 2))
  assert abs(same.mean() - p**2) < 0.08, same.mean()
  _, plain_aux = ViT(**TINY).apply(
    variables, images, train=True, rngs={"dropout": jax.random.key(7)}
  )
  np.testing.assert_array_equal(aux["blocks"][0], plain_aux["blocks"][0])  # rate 0 in block 0
