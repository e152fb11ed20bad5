"""DINOHead: float64 re-derivation, weight-norm invariance, g fixed or learned, logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jaxssl.models import DINOHead

PARAM_AXES = {"embed", "mlp", "vocab", None}


def _head(**kw):
  return DINOHead(**{**dict(out_dim=12, hidden_dim=16, bottleneck_dim=8, num_layers=3), **kw})


def _reference(params, x):
  """float64 MLP (exact GELU) -> L2 normalise -> columns of V normalised (times g)."""
  x = np.asarray(x, np.float64)
  for i in range(3):
    layer = params[f"dense_{i}"]
    x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
    if i < 2:
      x = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  v = np.asarray(params["last_layer_v"], np.float64)
  w = v / np.linalg.norm(v, axis=0, keepdims=True)
  if "last_layer_g" in params:
    w = w * np.asarray(params["last_layer_g"], np.float64)
  return x @ w


def test_matches_float64_reference_and_logits_are_cosines():
  head = _head()
  x = jax.random.normal(jax.random.key(0), (5, 10))
  params = nn.unbox(head.init(jax.random.key(1), x)["params"])
  assert set(params) == {"dense_0", "dense_1", "dense_2", "last_layer_v"}  # g fixed to 1
  assert params["dense_0"]["kernel"].shape == (10, 16)
  assert params["dense_2"]["kernel"].shape == (16, 8)
  assert params["last_layer_v"].shape == (8, 12)
  out = head.apply({"params": params}, x)
  np.testing.assert_allclose(out, _reference(params, x), rtol=1e-5, atol=1e-6)
  assert out.dtype == jnp.float32 and float(jnp.abs(out).max()) <= 1.0 + 1e-6


def test_prototype_scale_does_not_change_the_output():
  # Weight norm with g = 1: rescaling any prototype column (e.g. by weight decay) is a no-op.
  head = _head()
  x = jax.random.normal(jax.random.key(0), (5, 10))
  params = nn.unbox(head.init(jax.random.key(1), x)["params"])
  scaled = {**params, "last_layer_v": params["last_layer_v"] * jnp.linspace(0.1, 7.0, 12)}
  np.testing.assert_allclose(
    head.apply({"params": scaled}, x), head.apply({"params": params}, x), rtol=1e-5, atol=1e-6
  )


def test_learned_g_when_last_layer_is_not_normalised():
  head = _head(norm_last_layer=False)
  x = jax.random.normal(jax.random.key(0), (4, 10))
  params = nn.unbox(head.init(jax.random.key(1), x)["params"])
  np.testing.assert_array_equal(params["last_layer_g"], 1.0)
  params = {**params, "last_layer_g": jnp.arange(1.0, 13.0)}
  np.testing.assert_allclose(
    head.apply({"params": params}, x), _reference(params, x), rtol=1e-5, atol=1e-5
  )
  grads = jax.grad(lambda p: jnp.sum(head.apply({"params": p}, x) ** 2))(params)
  assert float(jnp.abs(grads["last_layer_g"]).max()) > 0


def test_every_param_has_logical_axes():
  head = _head(norm_last_layer=False)
  variables = head.init(jax.random.key(1), jnp.ones((2, 10)))
  for path, leaf in jax.tree_util.tree_flatten_with_path(
    variables["params"], is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned)
  )[0]:
    assert isinstance(leaf, nn.LogicallyPartitioned), jax.tree_util.keystr(path)
    assert set(leaf.names) <= PARAM_AXES and len(leaf.names) == leaf.value.ndim


def test_bad_num_layers_raises():
  with pytest.raises(ValueError, match="num_layers >= 1"):
    _head(num_layers=0).init(jax.random.key(0), jnp.ones((1, 4)))
