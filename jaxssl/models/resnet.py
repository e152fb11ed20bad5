"""ResNet encoder (He et al. 2016, "Deep Residual Learning for Image Recognition").

ResNet-18/34 use basic blocks, ResNet-50/101/152 bottleneck blocks with the stride on the 3x3
conv (the "v1.5" layout of torchvision, which SSL papers report). The classifier is left
out: the encoder returns globally average-pooled features, the input of SSL projection heads
and linear probes. Two stems: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) and 'cifar' (one 3x3/1
conv, no pool), the usual change for 28x28 and 32x32 images (e.g. SimCLR appendix B.9).

BatchNorm statistics live in the 'batch_stats' collection: call with train=True and
mutable=['batch_stats'] to normalize with (and update) batch statistics. Under jit with a
batch sharded over devices the batch mean spans the global batch, i.e. this is the
cross-replica ("global") BN that SimCLR needs, with no axis_name.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.kernels import REFERENCE, Kernels

# depth: (block type, blocks per stage)
STAGES = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
  152: ("bottleneck", (3, 8, 36, 3)),
}
STEMS = ("imagenet", "cifar")
_BOTTLENECK_EXPANSION = 4


def _conv(features, kernel, stride, dtype, name, kernels):
  """Bias-free conv (a BN follows) with symmetric padding kernel // 2, as in torchvision."""
  pad = kernel // 2
  return kernels.conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    # He et al. 2015 init for ReLU nets, fan-out mode as in torchvision.
    kernel_init=nn.with_logical_partitioning(
      nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
      (None, None, "conv_in", "conv_out"),
    ),
  )


def _batch_norm(train, dtype, name, zero_scale=False):
  """BN with PyTorch-equivalent settings (momentum 0.1 there == 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    scale_init=nn.with_logical_partitioning(
      nn.initializers.zeros if zero_scale else nn.initializers.ones, ("norm",)
    ),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


class ResidualBlock(nn.Module):
  """Basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1) residual block.

  The last BN of the residual branch starts with gamma = 0 (Goyal et al. 2017, sec. 5.1), so
  every block starts as the identity, which makes large-batch training stable.
  """

  features: int
  stride: int
  block: str
  train: bool
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE

  @nn.compact
  def __call__(self, x):
    if self.block == "basic":
      convs = [(self.features, 3, self.stride), (self.features, 3, 1)]
    else:
      convs = [
        (self.features, 1, 1),
        (self.features, 3, self.stride),
        (self.features * _BOTTLENECK_EXPANSION, 1, 1),
      ]
    y = x
    for i, (features, kernel, stride) in enumerate(convs):
      last = i == len(convs) - 1
      y = _conv(features, kernel, stride, self.dtype, f"conv{i}", self.kernels)(y)
      y = _batch_norm(self.train, self.dtype, f"bn{i}", zero_scale=last)(y)
      if not last:
        y = nn.relu(y)
    out_features = convs[-1][0]
    if self.stride != 1 or x.shape[-1] != out_features:
      # Projection shortcut (option B of He et al. 2016) when the shape changes.
      x = _conv(out_features, 1, self.stride, self.dtype, "proj_conv", self.kernels)(x)
      x = _batch_norm(self.train, self.dtype, "proj_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet encoder returning (pooled features [B, C_final], aux).

  Attributes:
    depth: 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv, no pool).
    width: channels of the stem and the first stage; stage s has width * 2**s (times 4 for
      bottleneck outputs), so C_final is 8 * width (basic) or 32 * width (bottleneck).
    dtype: compute dtype; parameters and BN statistics are float32.
    kernels: the convolution and max-pool ops (`jaxssl.kernels`: `nn.Conv` and `nn.max_pool`
      on the reference path); the parameters are the same for every choice.
  """

  depth: int = 50
  stem: str = "imagenet"
  width: int = 64
  dtype: Any = jnp.float32
  kernels: Kernels = REFERENCE

  @nn.compact
  def __call__(self, images, *, train=False):
    """Encodes images [B, H, W, C].

    Returns:
      out: [B, C_final] global average of the last stage (float32).
      aux: 'pre_logits' (== out) and 'feature_map' [B, h, w, C_final] (the last stage).
    """
    if self.depth not in STAGES:
      raise ValueError(f"Unknown ResNet depth {self.depth}; use one of {sorted(STAGES)}.")
    if self.stem not in STEMS:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; use one of {STEMS}.")
    if images.ndim != 4:
      raise ValueError(f"ResNet expects images [B, H, W, C], got shape {images.shape}.")
    block, stage_sizes = STAGES[self.depth]

    x = images.astype(self.dtype)
    if self.stem == "imagenet":
      x = _conv(self.width, 7, 2, self.dtype, "stem_conv", self.kernels)(x)
    else:
      x = _conv(self.width, 3, 1, self.dtype, "stem_conv", self.kernels)(x)
    x = nn.relu(_batch_norm(train, self.dtype, "stem_bn")(x))
    if self.stem == "imagenet":
      x = self.kernels.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))

    for stage, num_blocks in enumerate(stage_sizes):
      for i in range(num_blocks):
        # Downsample at the first block of every stage but the first (the stem already did).
        stride = 2 if stage > 0 and i == 0 else 1
        x = ResidualBlock(
          self.width * 2**stage,
          stride,
          block,
          train,
          self.dtype,
          self.kernels,
          name=f"stage{stage}_block{i}",
        )(x)

    out = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return out, dict(pre_logits=out, feature_map=x)
