r"""Convolutions whose kernel is larger than their input on XLA:CPU: XLA's emitter vs one GEMM.

  python benchmarks/conv_small_input.py                  # batch 64
  python benchmarks/conv_small_input.py --batch_size=32 --repeats=5

A ResNet's last stage sees 2x2 feature maps at 64px input and 1x1 at 32px (ImageNet stem). A
3x3 convolution there is mostly padding, and XLA:CPU's convolution emitter (the one
`jaxssl.kernels.cpu.xla_options` keeps convolutions on) takes a path that ran 7-70x slower than the
same products as one GEMM over the unfolded input (`jaxssl.kernels.cpu.conv.conv_gemm`); at input
side >= kernel side it is fast again. `Conv2D(impl='auto')` therefore uses 'gemm' exactly where
the kernel is larger than the input (docs/performance_cpu.md, "ResNet on CPU").

Prints, per convolution, milliseconds of the forward and of forward + both gradients with XLA's
convolution (the gradients as 'auto' computed them before: XLA's for stride 1, GEMMs for
strided) and with 'gemm' (checking both agree), then the whole ResNet-18 / ResNet-50 forward +
backward (BatchNorm in train mode) at 32px and 64px with 'auto' as it was and as it is.
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conv_lowering import best_seconds, parse_args_and_start, table_layers  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.kernels import cpu  # pylint: disable=wrong-import-position
from jaxssl.kernels.cpu import conv, xla_options  # pylint: disable=wrong-import-position
from jaxssl.models import resnet  # pylint: disable=wrong-import-position

# (input side, C_in, C_out, kernel, stride): ResNet-18 / -50 convolutions at 32px and 64px whose
# kernel is larger than the input, then equal-size neighbours that stay with XLA's emitter.
CASES = [
  (2, 512, 512, 3, 1),
  (1, 512, 512, 3, 1),
  (2, 256, 512, 3, 2),
  (2, 256, 256, 3, 1),
  (3, 512, 512, 3, 1),
  (4, 256, 512, 3, 2),
  (4, 512, 512, 3, 1),
]


def conv_table(batch, repeats):
  options = xla_options.compiler_options()
  rows = table_layers(
    f"milliseconds at batch {batch} (fastest of {repeats}); XLA: its convolution, gradients "
    "as Conv2D(impl='auto') without the small-input rule; GEMM: impl='gemm'",
    ["kernel > input", "fwd XLA", "fwd GEMM", "fwd+bwd XLA", "fwd+bwd GEMM", "GEMM speed-up"],
    CASES,
    batch,
  )
  for (side, c_in, c_out, k, stride), (strides, padding, x, kernel) in rows:
    before = conv.conv_gemm_grad if stride > 1 else conv.conv_xla
    cells = []
    for fn in (before, conv.conv_gemm):
      cells.append(
        best_seconds(
          jax.jit(lambda x, w, fn=fn: fn(x, w, strides, padding), compiler_options=options),
          x,
          kernel,
          repeats=repeats,
        )
      )
    results = []
    for fn in (before, conv.conv_gemm):
      loss = lambda x, w, fn=fn: jnp.sum(jnp.square(fn(x, w, strides, padding)))
      both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), compiler_options=options)
      results.append(both(x, kernel))
      cells.append(best_seconds(both, x, kernel, repeats=repeats))
    for want, got in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
      diff = float(jnp.max(jnp.abs(want - got)))
      assert diff < 1e-3 * float(jnp.max(jnp.abs(want))), f"GEMM disagrees by {diff}"
    print(
      f"| {side}x{side}x{c_in} -> {c_out}, {k}x{k}/{stride} | {'yes' if k > side else 'no'} | "
      + " | ".join(f"{1e3 * c:.1f}" for c in cells)
      + f" | {cells[2] / cells[3]:.1f}x |",
      flush=True,
    )


RESOLVE_IMPL = conv.resolve_impl


def auto_without_small_input_rule(impl, strides=(1, 1), kernel_size=(1, 1), input_hw=None):
  """conv.resolve_impl as it was before the small-input rule (input size unknown)."""
  del input_hw
  return RESOLVE_IMPL(impl, strides, kernel_size, None)


def network_seconds(depth, batch, image_size, repeats):
  """(auto before, auto now) seconds of a ResNet forward + backward on `image_size` images."""
  options = xla_options.compiler_options()
  images = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  model = resnet.ResNet(depth=depth, stem="imagenet", width=64, kernels=cpu.KERNELS)
  variables = model.init(jax.random.key(0), images[:1])

  def loss(params):
    (out, _), _ = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      images,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(out**2)

  seconds = []
  for resolve in (auto_without_small_input_rule, RESOLVE_IMPL):
    conv.resolve_impl = resolve  # read at trace time, so each jit below traces its own choice
    try:
      seconds.append(
        best_seconds(
          jax.jit(jax.grad(loss), compiler_options=options), variables["params"], repeats=repeats
        )
      )
    finally:
      conv.resolve_impl = RESOLVE_IMPL
  return seconds


def main():
  args = parse_args_and_start(__doc__.split("\n")[0])
  conv_table(args.batch_size, args.repeats)
  print(
    f"\nResNet forward + backward, batch {args.batch_size}, ImageNet stem, seconds "
    f"(fastest of {args.repeats}):\n"
  )
  print("| network | image | auto before | auto now | speed-up |")
  print("|---|---|---|---|---|")
  for depth in (18, 50):
    for image_size in (32, 64):
      before, now = network_seconds(depth, args.batch_size, image_size, args.repeats)
      print(
        f"| ResNet-{depth} | {image_size}px | {before:.2f} | {now:.2f} | {before / now:.1f}x |",
        flush=True,
      )


if __name__ == "__main__":
  main()
