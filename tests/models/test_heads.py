"""Tests for jaxssl.models.heads: shapes, a float64 NumPy forward pass, BN state, logical axes,
gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models import PredictionHead, ProjectionHead

PARAM_AXES = {"embed", "mlp", "norm", None}


def _inputs(seed=0, shape=(6, 12)):
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize(
  "num_layers, use_bn, final_bn, layers",
  [
    (1, True, False, [("dense_0", ("embed", "mlp"), True)]),
    (2, True, False, [("dense_0", ("embed", "mlp"), False), ("dense_1", ("mlp", "embed"), True)]),
    (2, False, False, [("dense_0", ("embed", "mlp"), True), ("dense_1", ("mlp", "embed"), True)]),
    (
      3,
      True,
      True,
      [
        ("dense_0", ("embed", "mlp"), False),
        ("dense_1", ("mlp", None), False),
        ("dense_2", ("mlp", "embed"), False),
      ],
    ),
  ],
)
def test_layout_shapes_and_logical_axes(num_layers, use_bn, final_bn, layers):
  head = ProjectionHead(
    hidden_dim=16, out_dim=8, num_layers=num_layers, use_bn=use_bn, final_bn=final_bn
  )
  x = _inputs()
  variables = head.init(jax.random.key(1), x)
  params = variables["params"]
  for name, names, has_bias in layers:
    assert params[name]["kernel"].names == names
    assert ("bias" in params[name]) == has_bias, name
    if has_bias:
      assert params[name]["bias"].names == names[1:]
  num_bn = (num_layers - 1) * use_bn + final_bn
  assert len([k for k in params if k.startswith("bn_")]) == num_bn - final_bn  # Affine only.
  assert len(variables.get("batch_stats", {})) == num_bn
  for leaf in jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    assert isinstance(leaf, nn.Partitioned) and len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= PARAM_AXES
  out, updates = head.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (6, 8)
  assert head.apply(variables, x).shape == (6, 8)
  if num_bn:
    assert set(updates["batch_stats"]) == set(variables["batch_stats"])
  # Works on token sequences too: BN statistics over all leading axes.
  assert head.apply(variables, _inputs(shape=(2, 5, 12))).shape == (2, 5, 8)


def _numpy_batch_norm(h, gamma=1.0, beta=0.0):
  return gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) + beta


@pytest.mark.parametrize(
  "kwargs, last_bias, last_bn_params, last_bn_stats",
  [
    # Default: a plain linear output with bias (VICReg, Barlow Twins, SimSiam's predictor).
    (dict(num_layers=2), True, None, False),
    # BYOL's MLP: hk.Linear(output_size, with_bias=False), no final BN.
    (dict(num_layers=2, final_bias=False), False, None, False),
    # MoCo v3 / SimSiam: Linear(bias=False) -> BatchNorm1d(affine=False).
    (dict(num_layers=3, final_bn=True), False, None, True),
    # SimCLR TF2: Dense(use_bias=False) -> BatchNorm(center=False, scale=True).
    (dict(num_layers=3, final_bn=True, final_bn_scale=True), False, {"scale"}, True),
  ],
)
def test_final_layer_options_match_the_official_heads(
  kwargs, last_bias, last_bn_params, last_bn_stats
):
  head = ProjectionHead(hidden_dim=16, out_dim=8, use_bn=True, **kwargs)
  variables = head.init(jax.random.key(1), _inputs())
  last = kwargs["num_layers"] - 1
  params, stats = variables["params"], variables["batch_stats"]
  assert ("bias" in params[f"dense_{last}"]) == last_bias
  if last_bn_params is None:
    assert f"bn_{last}" not in params
  else:
    assert set(params[f"bn_{last}"]) == last_bn_params
    assert params[f"bn_{last}"]["scale"].names == ("norm",)
  assert (f"bn_{last}" in stats) == last_bn_stats
  # Every hidden layer keeps its affine BN and a bias-free Dense.
  for i in range(last):
    assert set(params[f"bn_{i}"]) == {"scale", "bias"} and "bias" not in params[f"dense_{i}"]


def test_final_bn_scale_needs_final_bn():
  with pytest.raises(ValueError, match="final_bn_scale=True needs final_bn=True"):
    ProjectionHead(hidden_dim=16, out_dim=8, final_bn_scale=True).init(jax.random.key(0), _inputs())


@pytest.mark.parametrize("final_bn_scale", [False, True])
def test_train_forward_matches_numpy(final_bn_scale):
  head = ProjectionHead(
    hidden_dim=16,
    out_dim=8,
    num_layers=3,
    use_bn=True,
    final_bn=True,
    final_bn_scale=final_bn_scale,
  )
  x = _inputs()
  params = nn.unbox(head.init(jax.random.key(1), x))["params"]
  # Non-trivial BN affine parameters, so a swapped gamma/beta would show.
  params = jax.tree_util.tree_map_with_path(
    lambda path, p: (
      jax.random.uniform(
        jax.random.key(len(jax.tree_util.keystr(path))), p.shape, minval=0.5, maxval=1.5
      )
      if "bn_" in jax.tree_util.keystr(path)
      else p
    ),
    params,
  )
  out, _ = head.apply(
    {"params": params, "batch_stats": nn.unbox(head.init(jax.random.key(1), x))["batch_stats"]},
    x,
    train=True,
    mutable=["batch_stats"],
  )

  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  h = np.asarray(x, np.float64)
  for i in range(2):
    h = h @ p[f"dense_{i}"]["kernel"]
    h = np.maximum(_numpy_batch_norm(h, p[f"bn_{i}"]["scale"], p[f"bn_{i}"]["bias"]), 0)
  # SimCLR's final BN multiplies by a learned gamma (randomised above); MoCo v3's has none.
  gamma = p["bn_2"]["scale"] if final_bn_scale else 1.0
  expected = _numpy_batch_norm(h @ p["dense_2"]["kernel"], gamma)
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_eval_without_bn_is_a_plain_mlp():
  head = ProjectionHead(hidden_dim=16, out_dim=8, num_layers=2, use_bn=False)
  x = _inputs()
  variables = head.init(jax.random.key(1), x)
  assert set(variables) == {"params"}
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), nn.unbox(variables["params"]))
  hidden = np.maximum(np.asarray(x, np.float64) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
  expected = hidden @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
  np.testing.assert_allclose(head.apply(variables, x), expected, atol=1e-5)


def test_gradients_reach_every_parameter():
  head = ProjectionHead(hidden_dim=16, out_dim=8, num_layers=3, use_bn=True)
  x = _inputs()
  variables = nn.unbox(head.init(jax.random.key(1), x))
  weights = _inputs(seed=2, shape=(6, 8))

  def loss(params):
    out, _ = head.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(out * weights)

  for path, g in jax.tree_util.tree_leaves_with_path(jax.grad(loss)(variables["params"])):
    assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_prediction_head_is_the_same_mlp():
  assert PredictionHead is ProjectionHead
  predictor = PredictionHead(hidden_dim=32, out_dim=12, use_bn=True)
  x = _inputs()
  assert predictor.apply(predictor.init(jax.random.key(0), x), x).shape == (6, 12)


def test_zero_layers_raises():
  with pytest.raises(ValueError, match="num_layers >= 1"):
    ProjectionHead(hidden_dim=16, out_dim=8, num_layers=0).init(jax.random.key(0), _inputs())


def test_bfloat16_compute_keeps_float32_params_and_output():
  head = ProjectionHead(hidden_dim=16, out_dim=8, dtype=jnp.bfloat16)
  x = _inputs()
  variables = nn.unbox(head.init(jax.random.key(1), x))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  out = head.apply(variables, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ProjectionHead(16, 8).apply(variables, x), atol=0.05)
