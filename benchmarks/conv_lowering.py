r"""ResNet-18's convolutions on XLA:CPU: XLA's own gradients vs GEMM gradients (conv_impl).

  python benchmarks/conv_lowering.py                 # batch 32, 224px shapes
  python benchmarks/conv_lowering.py --batch_size=8

Why this exists: on CPU our SimCLR ResNet-18 step was ~0.5x the PyTorch peer's speed
(benchmarks/vs_pytorch.py) while the same machine's XLA matmuls run near the measured peak
(benchmarks/throughput.py). Unfolding a convolution (im2col, Chellapilla et al. 2006) turns it
into one matmul. Per distinct ResNet-18 convolution at 224px this prints GFLOP/s of: XLA's
forward; the unfolded forward (unfold(x) @ kernel); XLA's forward + both gradients; and
`jaxssl.models.conv.conv_gemm_grad`, XLA's forward with both gradients as GEMMs over the
unfolded input (dW = P^T dY, dX = col2im(dY W^T)); it checks the two gradients agree. Then the
whole network's forward + backward (BatchNorm, ReLU, pooling included) with ResNet's
conv_impl='xla' and 'gemm_grad'.

What it showed on the 2-core AVX-512 VM (README "Throughput"): XLA's forward beats the unfolded
one on every layer but its gradients run well below the GEMM rate, so 'gemm_grad' (the
default on CPU through conv_impl='auto') keeps XLA's forward and replaces only the backward.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.models import conv, resnet  # pylint: disable=g-import-not-at-top,wrong-import-position

# (input side, C_in, C_out, kernel, stride) of ResNet-18 with the ImageNet stem at 224px.
LAYERS = [(224, 3, 64, 7, 2), (56, 64, 64, 3, 1), (56, 64, 128, 3, 2), (28, 128, 128, 3, 1),
          (28, 128, 256, 3, 2), (14, 256, 256, 3, 1), (14, 256, 512, 3, 2), (7, 512, 512, 3, 1)]


def im2col_forward(x, kernel, stride):
  """The convolution as unfold(x) @ kernel: only to show why the forward stays XLA's."""
  kh, kw, c_in, c_out = kernel.shape
  pad = kh // 2
  patches = conv.unfold(x, (kh, kw), (stride, stride), ((pad, pad), (pad, pad)))
  return patches @ kernel.reshape(kh * kw * c_in, c_out)


def lowering(fn):
  def apply(x, kernel, stride):
    pad = kernel.shape[0] // 2
    return fn(x, kernel, (stride, stride), ((pad, pad), (pad, pad)))
  return apply


def best_seconds(fn, *args, repeats):
  """Fastest of `repeats` calls of the jitted `fn(*args)` after one compiling call."""
  jax.block_until_ready(fn(*args))
  return timing.min_seconds(lambda: jax.block_until_ready(fn(*args)), repeats)


def layer_table(batch, repeats):
  print(f"| conv (batch {batch}) | XLA fwd | im2col fwd | XLA fwd+bwd | XLA fwd + GEMM bwd "
        "(gemm_grad) | max abs diff of dX |")
  print("|---|---|---|---|---|---|")
  for side, c_in, c_out, k, stride in LAYERS:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, c_in))
    kernel = jax.random.normal(jax.random.key(1), (k, k, c_in, c_out)) / np.sqrt(k * k * c_in)
    out_side = (side + 2 * (k // 2) - k) // stride + 1
    flops = 2 * batch * out_side**2 * k * k * c_in * c_out
    cells = []
    for fn in (lowering(conv.conv_xla), im2col_forward):
      forward = jax.jit(lambda x, w, fn=fn: fn(x, w, stride))
      cells.append(flops / best_seconds(forward, x, kernel, repeats=repeats) / 1e9)
    grads = []
    for fn in (lowering(conv.conv_xla), lowering(conv.conv_gemm_grad)):
      both = jax.jit(jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w, stride) ** 2) / 2,
                              argnums=(0, 1)))
      grads.append(np.asarray(both(x, kernel)[0]))
      # Forward + input gradient + kernel gradient: three times the forward's FLOPs.
      cells.append(3 * flops / best_seconds(both, x, kernel, repeats=repeats) / 1e9)
    diff = float(np.max(np.abs(grads[0] - grads[1])))
    assert diff < 1e-3 * float(np.max(np.abs(grads[0]))), f"gradients disagree by {diff}"
    print(f"| {side}x{side}x{c_in} -> {c_out}, {k}x{k}/{stride} | "
          + " | ".join(f"{c:.0f} GFLOP/s" for c in cells) + f" | {diff:.1e} |", flush=True)


def network_seconds(batch, image_size, repeats):
  images = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  results = {}
  for impl in ("xla", "gemm_grad", "auto"):
    model = resnet.ResNet(depth=18, stem="imagenet", width=64, conv_impl=impl)
    variables = model.init(jax.random.key(0), images[:1])

    def loss(params, model=model, variables=variables):
      (out, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
      return jnp.sum(out ** 2)
    results[impl] = best_seconds(jax.jit(jax.grad(loss)), variables["params"],
                                 repeats=repeats)
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}\n")
  layer_table(args.batch_size, args.repeats)
  net = network_seconds(args.batch_size, args.image_size, args.repeats)
  print(f"\nResNet-18 forward + backward, batch {args.batch_size}, {args.image_size}px: "
        + ", ".join(f"conv_impl={k} {v:.2f} s" for k, v in net.items())
        + f" (xla / auto = {net['xla'] / net['auto']:.2f}x)")


if __name__ == "__main__":
  main()
