"""Every method's train step and eval encoder lower for TPU and GPU, on this CPU host, and what
they lower to is the reference path.

`jax.export` lowers for platforms that are not present. For each method's `test` preset, in
float32 and bfloat16, the trainer's jitted step (`jaxssl.step.make_train_step`, with the
shardings of a 2x2x2 data/fsdp/tensor mesh) and the eval job's encoder
(`jaxssl.eval.features.Encoder`) are built with the kernels `jaxssl.kernels` picks for 'tpu' and
for 'cuda' and exported for both platforms. The exported module must hold exactly the dots,
transposes, convolutions, window reductions and custom calls of the same program built with
the reference ops (`kernels.REFERENCE`), and none of what the CPU kernels put there: the last
test forces the CPU kernels into a TPU export and shows the check fails.
"""

import collections
import functools
import os
import re

import jax
import jax.numpy as jnp
import pytest

import method_batches
from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import kernels
from jaxssl import methods
from jaxssl import optim
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import step as step_lib
from jaxssl.eval import features
from jaxssl.kernels import cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = parallel.get_rules("fsdp_tp")
ACCELERATORS = ("tpu", "cuda")
DTYPES = ("float32", "bfloat16")
# The ops whose form a backend kernel changes: matrix products, layout changes, convolutions,
# window reductions (max-pool and its gradient) and calls out of XLA.
OPS = re.compile(
  r"(stablehlo\.(?:dot_general|transpose|convolution|reduce_window|select_and_scatter)"
  r"|stablehlo\.custom_call @\w+)\b.*?(: .*)$"
)


def construct_counts(module_text: str) -> collections.Counter:
  """(op, operand and result types) -> count, over the StableHLO text of an export."""
  counts = collections.Counter()
  for line in module_text.splitlines():
    match = OPS.search(line)
    if match:
      counts[match.group(1), match.group(2)] += 1
  return counts


def assert_reference_path(got: str, reference: str) -> None:
  """Fails, naming the differing constructs, unless `got` holds exactly `reference`'s."""
  got_counts, want_counts = construct_counts(got), construct_counts(reference)
  assert want_counts, "the reference export holds no dot, convolution or transpose"
  extra, missing = got_counts - want_counts, want_counts - got_counts
  assert not extra and not missing, (
    f"not the reference path: {sum(extra.values())} constructs the reference does not hold "
    f"(e.g. {list(extra.items())[:3]}), {sum(missing.values())} of its missing "
    f"(e.g. {list(missing.items())[:3]})"
  )


def _config(name, dtype):
  config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{name}.py:test"))
  config.model.dtype = dtype  # both towers' compute dtype for CLIP / SigLIP
  return config


def _mesh():
  return parallel.make_mesh(dict(zip(parallel.MESH_AXES, (2, 2, 2))), devices=jax.devices()[:8])


@functools.lru_cache(maxsize=None)
def _batch_spec(name, data_dir):
  """The global batch shapes of the method's own pipeline (float32 preset; dtype-free)."""
  config = _config(name, "float32")
  config.data.data_dir = data_dir
  batch = method_batches.first_batch(config, methods.build(config), data_dir)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}


def export_train_step(name, dtype, ops, platforms, data_dir) -> str:
  """StableHLO text of the trainer's step for `name`'s test preset built with `ops`."""
  config = _config(name, dtype)
  method = methods.build(config, ops)
  spec = _batch_spec(name, data_dir)
  _, tx = optim.build(config, 100, 1000)  # a 1,000-example split: epoch-counted settings resolve
  mesh = _mesh()
  _, abstract, shardings = state_lib.abstract_and_shardings(
    method, tx, spec, mesh, RULES, config.seed
  )
  step = step_lib.make_train_step(method, tx, shardings, mesh, RULES)
  with jax.set_mesh(mesh):
    exported = jax.export.export(step, platforms=platforms)(abstract, spec)
  assert exported.platforms == tuple(platforms)
  return exported.mlir_module()


def export_encoder(name, dtype, ops, platforms, data_dir, workdir) -> str:
  """StableHLO text of the eval job's jitted encoder (`features.Encoder`) built with `ops`."""
  config = _config(name, dtype)
  spec = _batch_spec(name, data_dir)
  checkpoint.write_input_spec(workdir, spec)
  encoder = features.Encoder(workdir, config, ops)
  if "tokens" in spec and "image" not in spec:  # language models encode token ids
    inputs = spec["tokens"]
  else:
    # The eval job encodes single images of the global view's shape (DINO's crops are stacked).
    image = next(v for k, v in spec.items() if v.ndim >= 4 and k != "local_crops")
    inputs = jax.ShapeDtypeStruct((8, *image.shape[-3:]), jnp.float32)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), encoder.abstract)
  with jax.set_mesh(encoder.mesh):
    encode = encoder._encode  # pylint: disable=protected-access
    exported = jax.export.export(encode, platforms=platforms)(abstract, inputs)
  return exported.mlir_module()


def test_the_kernels_are_picked_from_the_platform():
  for platform in ("tpu", "cuda", "gpu", "rocm", "METAL"):
    assert kernels.for_platform(platform) is kernels.REFERENCE
  assert kernels.for_platform("cpu") is cpu.KERNELS
  assert kernels.for_mesh(_mesh()) is cpu.KERNELS  # this host's devices


def assert_not_cpu_path(got: str, cpu_program: str) -> None:
  """Fails unless `got` differs from the CPU kernels' program in the constructs they change."""
  got_counts, cpu_counts = construct_counts(got), construct_counts(cpu_program)
  assert got_counts, "the export holds no dot, convolution or transpose"
  assert got_counts != cpu_counts, (
    "the accelerator export holds exactly the CPU kernels' constructs: model code ignored the "
    "injected ops (e.g. chose them from the host backend)"
  )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", methods.available())
def test_train_step_and_encoder_export_for_tpu_and_cuda_on_the_reference_path(
  name, dtype, data_dir, tmp_path
):
  # The trainer's selection for both accelerators is the reference set: one program, exported
  # once for both platforms.
  ops = {kernels.for_platform(p) for p in ACCELERATORS}
  assert ops == {kernels.REFERENCE}
  (accelerator_ops,) = ops
  # The same program built with the CPU kernels (on this CPU host) is the independent witness:
  # were model code to pick ops from the host instead of its `kernels`, both would be equal.
  step = export_train_step(name, dtype, accelerator_ops, ACCELERATORS, data_dir)
  assert_not_cpu_path(step, export_train_step(name, dtype, cpu.KERNELS, ACCELERATORS, data_dir))
  workdir = str(tmp_path)
  encoder = export_encoder(name, dtype, accelerator_ops, ACCELERATORS, data_dir, workdir)
  assert_not_cpu_path(
    encoder, export_encoder(name, dtype, cpu.KERNELS, ACCELERATORS, data_dir, workdir)
  )


@pytest.mark.parametrize(
  "name,dtype",
  [("mae", "bfloat16"), ("simclr", "float32"), ("gpt", "float32")],
  ids=["vit-bf16", "resnet-f32", "transformer-f32"],
)
def test_the_check_fails_when_a_cpu_kernel_is_forced_into_a_tpu_export(name, dtype, data_dir):
  reference = export_train_step(name, dtype, kernels.REFERENCE, ("tpu",), data_dir)
  forced = export_train_step(name, dtype, cpu.KERNELS, ("tpu",), data_dir)  # lowers fine...
  with pytest.raises(AssertionError, match="not the reference path"):
    assert_reference_path(forced, reference)  # ...but is not the reference program
