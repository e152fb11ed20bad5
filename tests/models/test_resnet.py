"""Tests for jaxssl.models.resnet: shapes, parameter counts, BatchNorm state, logical axes,
zero-init residuals and gradients."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import kernels
from jaxssl.kernels import cpu
from jaxssl.models import ResNet

PARAM_AXES = {"conv_in", "conv_out", "norm", None}


def _images(seed=0, shape=(4, 28, 28, 3)):
  return jax.random.normal(jax.random.key(seed), shape)


# Eager on purpose: on CPU, compiling these nets costs more than running them op by op.
def _init(model, images):
  return model.init(jax.random.key(1), images)


def _eval(model, variables, images):
  return model.apply(variables, images)


def _train(model, variables, images):
  return model.apply(variables, images, train=True, mutable=["batch_stats"])


def _param_count(model):
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))
  return sum(
    int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(nn.unbox(variables["params"]))
  )


@pytest.mark.parametrize(
  "depth, expected",
  [
    # torchvision totals minus the 1000-way fc (512*1000+1000 and 2048*1000+1000).
    (18, 11_689_512 - 513_000),
    (50, 25_557_032 - 2_049_000),
  ],
)
def test_param_count_matches_torchvision_without_fc(depth, expected):
  assert _param_count(ResNet(depth=depth, stem="imagenet", width=64)) == expected


@pytest.mark.parametrize(
  "depth, stem, shape, final_map",
  [
    (18, "cifar", (2, 28, 28, 3), (2, 4, 4, 64)),  # 28 -> 28, 14, 7, 4
    (34, "cifar", (2, 32, 32, 1), (2, 4, 4, 64)),
    (50, "cifar", (2, 28, 28, 3), (2, 4, 4, 256)),  # bottleneck: 4 * 8 * width
    (18, "imagenet", (2, 64, 64, 3), (2, 2, 2, 64)),  # 64 -> 32 -> 16, then 16, 8, 4, 2
  ],
)
def test_shapes_and_aux(depth, stem, shape, final_map):
  model = ResNet(depth=depth, stem=stem, width=8)
  images = _images(shape=shape)
  variables = _init(model, images)
  out, aux = _eval(model, variables, images)
  assert set(aux) == {"pre_logits", "feature_map"}
  assert out.shape == final_map[:1] + final_map[3:] and out.dtype == jnp.float32
  assert aux["feature_map"].shape == final_map
  np.testing.assert_array_equal(aux["pre_logits"], out)
  np.testing.assert_allclose(out, aux["feature_map"].mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [(dict(depth=20), "depth"), (dict(stem="tiny"), "stem")])
def test_bad_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ResNet(**kwargs).init(jax.random.key(0), _images())


def test_batch_norm_train_updates_running_stats_and_eval_uses_them():
  model = ResNet(depth=18, stem="cifar", width=4)
  images = _images(shape=(4, 8, 8, 3))
  variables = _init(model, images)
  _, updates = _train(model, variables, images)
  stats = updates["batch_stats"]

  # Independent float64 check of the stem BN: running = 0.9 * init + 0.1 * batch moment
  # (biased variance) of the 3x3/1 stem conv with zero padding.
  kernel = np.asarray(nn.unbox(variables["params"]["stem_conv"]["kernel"]), np.float64)
  padded = np.pad(np.asarray(images, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = sum(
    np.einsum("bhwc,co->bhwo", padded[:, i : i + 8, j : j + 8], kernel[i, j])
    for i in range(3)
    for j in range(3)
  )
  np.testing.assert_allclose(stats["stem_bn"]["mean"], 0.1 * conv.mean((0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(stats["stem_bn"]["var"], 0.9 + 0.1 * conv.var((0, 1, 2)), rtol=1e-4)

  # Eval mode reads the stored statistics, is deterministic, and needs no mutable state.
  trained = {"params": variables["params"], "batch_stats": stats}
  eval_a, _ = _eval(model, trained, images)
  eval_b, _ = _eval(model, trained, images[::-1])
  np.testing.assert_allclose(eval_a[::-1], eval_b, atol=1e-6)  # No batch dependence.
  (train_out, _), _ = _train(model, trained, images)
  assert np.abs(train_out - eval_a).max() > 1e-3
  eval_init, _ = _eval(model, variables, images)
  assert np.abs(eval_init - eval_a).max() > 1e-3


def test_every_param_has_logical_axes():
  variables = jax.eval_shape(
    ResNet(depth=50, width=8).init, jax.random.key(0), jnp.ones((1, 32, 32, 3))
  )
  boxed = jax.tree_util.tree_leaves(
    variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  specs = jax.tree_util.tree_leaves(
    nn.get_partition_spec(variables["params"]),
    is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
  )
  assert len(boxed) == len(specs)
  for leaf, spec in zip(boxed, specs):
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(spec) == leaf.value.ndim and set(spec) <= PARAM_AXES, spec
  block = variables["params"]["stage1_block0"]
  assert block["conv1"]["kernel"].names == (None, None, "conv_in", "conv_out")
  assert block["bn1"]["scale"].names == ("norm",)


def _grads(model, variables, images):
  weights = jax.random.normal(jax.random.key(2), (images.shape[0], 64))

  def loss(params):
    (out, _), _ = model.apply(
      {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
    )
    return jnp.sum(out * weights)

  return jax.jit(jax.grad(loss))(variables["params"])


def test_residual_branches_start_at_zero_and_gradients_reach_every_parameter():
  model = ResNet(depth=18, stem="cifar", width=8)
  images = _images(shape=(4, 12, 12, 3))
  variables = nn.unbox(_init(model, images))
  params = variables["params"]

  # Goyal et al.: the last BN of each residual branch starts with gamma = 0, so before any
  # update nothing upstream of it inside the branch gets a gradient.
  grads = _grads(model, variables, images)
  for stage in range(4):
    for i in range(2):
      block = f"stage{stage}_block{i}"
      assert not np.any(params[block]["bn1"]["scale"])
      assert np.abs(grads[block]["bn1"]["scale"]).max() > 0
      for layer in ("conv0", "bn0", "conv1"):
        for g in jax.tree_util.tree_leaves(grads[block][layer]):
          assert not np.any(g), (block, layer)

  # Once those gammas move, every parameter receives a gradient.
  moved = jax.tree_util.tree_map_with_path(
    lambda path, p: (
      jnp.full_like(p, 0.5)
      if "bn1" in jax.tree_util.keystr(path) and "scale" in jax.tree_util.keystr(path)
      else p
    ),
    params,
  )
  grads = _grads(model, {**variables, "params": moved}, images)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_bfloat16_compute_keeps_float32_state():
  model = ResNet(depth=18, stem="cifar", width=8, dtype=jnp.bfloat16)
  images = _images(shape=(2, 8, 8, 3))
  variables = _init(model, images)
  (out, aux), updates = _train(model, variables, images)
  assert out.dtype == jnp.float32 and aux["feature_map"].dtype == jnp.bfloat16
  leaves = jax.tree_util.tree_leaves(nn.unbox({**variables, **updates}))
  assert all(p.dtype == jnp.float32 for p in leaves)


def _cpu_kernels(conv_impl, max_pool):
  return dataclasses.replace(
    cpu.KERNELS, conv=functools.partial(cpu.conv.Conv2D, impl=conv_impl), max_pool=max_pool
  )


@pytest.mark.parametrize(
  "ops",
  [
    cpu.KERNELS,
    _cpu_kernels("gemm_grad", cpu.pooling.max_pool),
    _cpu_kernels("xla", cpu.pooling.max_pool),
    _cpu_kernels("gemm_grad", kernels.REFERENCE.max_pool),
  ],
  ids=["cpu", "gemm_grad+slices", "xla+slices", "gemm_grad+reduce_window"],
)
def test_cpu_kernels_gradients_agree_with_the_reference(ops):
  # The reference ops (XLA's convolution gradients, reduce-window max-pool); the pool follows
  # a ReLU, so its tied maxima are zeros whose gradient is 0 under either max-pool.
  # Float64: at 32px the last stages see 2x2 and 1x1 maps ('auto' computes those convolutions
  # as GEMMs), and train-mode BatchNorm over 2 images x 1x1 amplifies float32 rounding
  # differences between two correct lowerings to ~1e-2.
  with jax.enable_x64(True):
    images = _images(2, (2, 32, 32, 3)).astype(jnp.float64)
    reference = ResNet(
      depth=18,
      stem="imagenet",
      width=8,
      dtype=jnp.float64,
    )
    variables = reference.init(jax.random.key(0), images)

    def grads(model):
      def loss(params):
        (out, _), _ = model.apply(
          {"params": params, "batch_stats": variables["batch_stats"]},
          images,
          train=True,
          mutable=["batch_stats"],
        )
        return jnp.sum(jnp.square(out))

      return jax.grad(loss)(variables["params"])

    want = grads(reference)
    got = grads(
      ResNet(
        depth=18,
        stem="imagenet",
        width=8,
        dtype=jnp.float64,
        kernels=ops,
      )
    )
  scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(want))
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-6 * scale)  # float32 params: their ulp
