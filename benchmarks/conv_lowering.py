r"""ResNet-18's convolutions on XLA:CPU: YNNPACK's or XLA's own, XLA's gradients or GEMMs.

  python benchmarks/conv_lowering.py                 # batch 64, 224px shapes
  python benchmarks/conv_lowering.py --batch_size=32

Why this exists: on CPU our SimCLR ResNet-18 step ran at 0.44x the PyTorch peer's speed
(benchmarks/vs_pytorch.py) while the same machine's XLA matmuls run near the measured peak
(benchmarks/throughput.py). Per distinct ResNet-18 convolution at 224px this prints GFLOP/s of
the forward, the input gradient dX and the kernel gradient dW, each compiled with jaxlib's
default options (convolutions in YNNPACK) and with `jaxssl.kernels.cpu.xla_options`' (convolutions
left to XLA:CPU's own emitter), next to the GEMM gradients of `jaxssl.kernels.cpu.conv` (dX = col2im(dY W^T),
dW = P^T dY summed over batch chunks, `kernel_grad`); it checks the gradients agree. Then the
stem's 3x3/2 max-pool forward + backward with XLA's reduce-window and with strided slices
(`jaxssl.kernels.cpu.pooling`), and the whole network's forward + backward (BatchNorm, ReLU,
pooling included) for each `Conv2D.impl` with and without the options.

What it showed on the 2-core Xeon VM (docs/performance_cpu.md "ResNet on CPU"): YNNPACK's
convolutions were the slow part (forward up to 2.1x, dW up to 4x below XLA's own); without them
XLA's gradients of stride-1 convolutions beat the GEMMs, col2im still wins dX of strided ones, so
the CPU kernels' `Conv2D(impl='auto')` uses 'gemm_grad' for strided convolutions only.
"""

import argparse
import dataclasses
import functools
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
from jaxssl.kernels import cpu, reference  # pylint: disable=wrong-import-position
from jaxssl.kernels.cpu import conv, host_malloc, pooling, xla_options  # pylint: disable=wrong-import-position
from jaxssl.models import resnet  # pylint: disable=wrong-import-position

# (input side, C_in, C_out, kernel, stride) of ResNet-18 with the ImageNet stem at 224px.
LAYERS = [
  (224, 3, 64, 7, 2),
  (56, 64, 64, 3, 1),
  (56, 64, 128, 3, 2),
  (28, 128, 128, 3, 1),
  (28, 128, 256, 3, 2),
  (14, 256, 256, 3, 1),
  (14, 256, 512, 3, 2),
  (7, 512, 512, 3, 1),
  (56, 64, 128, 1, 2),
  (28, 128, 256, 1, 2),
  (14, 256, 512, 1, 2),
]
OPTIONS = {"ynn": None, "xla": xla_options.CPU_OPTIONS}


def best_seconds(fn, *args, repeats):
  """Fastest of `repeats` calls of the jitted `fn(*args)` after one compiling call."""
  jax.block_until_ready(fn(*args))
  return timing.min_seconds(lambda: jax.block_until_ready(fn(*args)), repeats)


def gflops(flops, fn, args, options, repeats):
  return flops / best_seconds(jax.jit(fn, compiler_options=options), *args, repeats=repeats) / 1e9


def layer_operands(batch, side, c_in, c_out, k, stride):
  """(strides, padding, x, kernel) of a k x k / stride conv with torchvision's padding k // 2."""
  pad = k // 2
  x = jax.random.normal(jax.random.key(0), (batch, side, side, c_in))
  kernel = jax.random.normal(jax.random.key(1), (k, k, c_in, c_out)) / np.sqrt(k * k * c_in)
  return (stride, stride), ((pad, pad), (pad, pad)), x, kernel


def table_layers(caption, columns, layers, batch):
  """Prints `caption` and a markdown table head ('conv' + `columns`); yields each layer of
  `layers` (side, C_in, C_out, kernel, stride) with its `layer_operands` at `batch`."""
  print(caption + "\n")
  print("| conv | " + " | ".join(columns) + " |")
  print("|---|" + "---|" * len(columns))
  for layer in layers:
    yield layer, layer_operands(batch, *layer)


def layer_table(batch, repeats):
  rows = table_layers(
    f"GFLOP/s at batch {batch}; ynn: jaxlib's default options (convolutions in YNNPACK), "
    "xla: jaxssl.xla_cpu's; GEMM: jaxssl.models.conv's gradients (xla options)",
    ["fwd ynn", "fwd xla", "dX ynn", "dX xla", "dX GEMM", "dW ynn", "dW xla", "dW GEMM"],
    LAYERS,
    batch,
  )
  for (side, c_in, c_out, k, stride), (strides, padding, x, kernel) in rows:
    forward = lambda x, w: conv.conv_xla(x, w, strides, padding)
    grad_out = jax.random.normal(jax.random.key(2), forward(x, kernel).shape)
    flops = 2 * np.prod(grad_out.shape) * k * k * c_in
    grad_x = lambda g, w: jax.vjp(lambda v: forward(v, w), x)[1](g)[0]
    grad_w = lambda g, x: jax.vjp(lambda v: forward(x, v), kernel)[1](g)[0]
    gemm_x = lambda g, w: conv.input_grad(x.shape, w, g, strides, padding)
    gemm_w = lambda g, x: conv.kernel_grad(x, g, (k, k), strides, padding)
    for want, got, args in ((grad_x, gemm_x, (grad_out, kernel)), (grad_w, gemm_w, (grad_out, x))):
      want, got = np.asarray(jax.jit(want)(*args)), np.asarray(jax.jit(got)(*args))
      diff = float(np.max(np.abs(want - got)))
      assert diff < 1e-3 * float(np.max(np.abs(want))), f"gradients disagree by {diff}"
    cells = [gflops(flops, forward, (x, kernel), o, repeats) for o in OPTIONS.values()]
    cells += [gflops(flops, grad_x, (grad_out, kernel), o, repeats) for o in OPTIONS.values()]
    cells.append(gflops(flops, gemm_x, (grad_out, kernel), OPTIONS["xla"], repeats))
    cells += [gflops(flops, grad_w, (grad_out, x), o, repeats) for o in OPTIONS.values()]
    cells.append(gflops(flops, gemm_w, (grad_out, x), OPTIONS["xla"], repeats))
    print(
      f"| {side}x{side}x{c_in} -> {c_out}, {k}x{k}/{stride} | "
      + " | ".join(f"{c:.0f}" for c in cells)
      + " |",
      flush=True,
    )


def pool_line(batch, repeats):
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (batch, 112, 112, 64)))
  cells = []
  for impl, max_pool in (("reduce_window", reference.max_pool), ("slices", pooling.max_pool)):
    pool = lambda v, max_pool=max_pool: max_pool(v, (3, 3), (2, 2), ((1, 1), (1, 1)))
    both = jax.jit(
      jax.grad(lambda v, pool=pool: jnp.sum(pool(v) ** 2)), compiler_options=OPTIONS["xla"]
    )
    cells.append(f"{impl} {best_seconds(both, x, repeats=repeats) * 1e3:.0f} ms")
  print(
    f"\nStem max-pool 3x3/2 of [{batch}, 112, 112, 64], forward + backward: " + ", ".join(cells)
  )


def network_seconds(batch, image_size, repeats):
  images = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  results = {}
  for impl in ("xla", "gemm_grad", "auto"):
    ops = dataclasses.replace(cpu.KERNELS, conv=functools.partial(conv.Conv2D, impl=impl))
    model = resnet.ResNet(depth=18, stem="imagenet", width=64, kernels=ops)
    variables = model.init(jax.random.key(0), images[:1])

    def loss(params, model=model, variables=variables):
      (out, _), _ = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        images,
        train=True,
        mutable=["batch_stats"],
      )
      return jnp.sum(out**2)

    for name, options in OPTIONS.items():
      results[f"{impl}, {name}"] = best_seconds(
        jax.jit(jax.grad(loss), compiler_options=options), variables["params"], repeats=repeats
      )
  return results


def parse_args_and_start(description, extra_args=()):
  """--batch_size, --repeats, --malloc (+ `extra_args`: (flag, type, default)); re-executes the
  script under the chosen allocator, prints what ran where, and returns the parsed args."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--malloc",
    default="auto",
    choices=("auto", "glibc", "tcmalloc"),
    help="host allocator (jaxssl/kernels/cpu/host_malloc.py); auto: tcmalloc where installed",
  )
  for flag, kind, default in extra_args:
    p.add_argument(flag, type=kind, default=default)
  args = p.parse_args()
  host_malloc.exec_with(args.malloc)  # re-executes the script under it, before any allocation
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores, "
    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}, "
    f"malloc {host_malloc.loaded()}\n"
  )
  return args


def main():
  args = parse_args_and_start(__doc__.split("\n")[0], [("--image_size", int, 224)])
  layer_table(args.batch_size, args.repeats)
  pool_line(args.batch_size, args.repeats)
  net = network_seconds(args.batch_size, args.image_size, args.repeats)
  print(
    f"\nResNet-18 forward + backward, batch {args.batch_size}, {args.image_size}px "
    "(Conv2D.impl, options): " + ", ".join(f"{k} {v:.2f} s" for k, v in net.items())
  )


if __name__ == "__main__":
  main()
