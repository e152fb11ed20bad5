"""Devices, meshes and shardings: the only place that knows about mesh axes.

Parameters and activations carry *logical* axis names ('embed', 'mlp', 'heads', 'batch', ...).
A config holds rules mapping them to the mesh axes ('data', 'fsdp', 'tensor'), so data
parallel, FSDP and tensor parallel are config changes, not code changes (the big_vision /
MaxText pattern). Multi-host runs go through `jax.distributed`; there is no cluster layer here.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
from absl import logging
import flax.linen as nn
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np
from orbax.checkpoint import multihost as orbax_multihost

MESH_AXES = ("data", "fsdp", "tensor")

# Logical-axis rules by name. Each rule maps one logical axis to a mesh axis (or a tuple of
# them, or None for replicated). Logical names not listed are replicated.
RULES = {
  # Pure data parallel: params replicated, batch split over every device.
  "dp": (("batch", ("data", "fsdp")),),
  # FSDP (ZeRO-3 style): params and optimizer state split along 'embed'/'conv_out' over
  # 'fsdp'; the batch is split over data x fsdp.
  "fsdp": (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_out", "fsdp"),
    ("vocab", "fsdp"),
  ),
  # FSDP + tensor parallel (Megatron split of attention heads and MLP hidden units).
  "fsdp_tp": (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_out", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
  ),
}


def get_rules(rules: str | Sequence[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
  """Returns logical-axis rules from a preset name or an explicit sequence of pairs."""
  if isinstance(rules, str):
    if rules not in RULES:
      raise ValueError(
        f"Unknown sharding rules preset {rules!r}; choose one of {sorted(RULES)} or give "
        "explicit (logical_axis, mesh_axes) pairs."
      )
    return RULES[rules]
  out = []
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"A sharding rule must be (logical_axis, mesh_axes); got {rule!r}.")
    target = tuple(rule[1]) if isinstance(rule[1], (list, tuple)) else rule[1]
    for axis in target if isinstance(target, tuple) else (target,):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"Rule {rule!r} names mesh axis {axis!r}; mesh axes are {MESH_AXES}.")
    out.append((rule[0], target))
  return tuple(out)


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Calls `jax.distributed.initialize` when this is one process of a multi-process job.

  Explicit arguments win (local multi-process tests); otherwise JAX's own cluster
  auto-detection (TPU pods, SLURM, Open MPI) runs when such an environment is present. A plain
  single-process run does nothing.
  """
  if coordinator_address:
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  elif any(
    k in os.environ
    for k in (
      "SLURM_JOB_ID",
      "TPU_WORKER_HOSTNAMES",
      "OMPI_COMM_WORLD_SIZE",
      "JAX_COORDINATOR_ADDRESS",
    )
  ):
    jax.distributed.initialize()
  else:
    return
  _orbax_store_barriers_on_cpu()
  logging.info(
    "jax.distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


_ORBAX_BARRIER_FLAG = "experimental_orbax_use_distributed_barrier"


def _orbax_store_barriers_on_cpu() -> None:
  """Switches Orbax's process barriers to the jax.distributed key-value store on CPU.

  Orbax's default barrier is a device collective; on CPU that is gloo, whose context setup
  gives up after 30 s (fixed inside XLA), so one host reaching a checkpoint barrier 30 s after
  another (a slower machine, a longer compile) kills the job. The store's barrier waits for
  Orbax's timeout (300 s) instead. TPU/GPU keep Orbax's default; an explicit
  --experimental_orbax_use_distributed_barrier wins everywhere.
  """
  if jax.default_backend() != "cpu" or _ORBAX_BARRIER_FLAG not in flags.FLAGS:
    return
  if not flags.FLAGS[_ORBAX_BARRIER_FLAG].present:
    flags.FLAGS[_ORBAX_BARRIER_FLAG].value = True


_barrier_ids = itertools.count()


def sync_processes(name: str, timeout_s: int = 1800) -> None:
  """Returns once every process of the job has called it (at once with one process).

  A jax.distributed key-value-store barrier, not a device collective, so it waits up to
  `timeout_s` on every platform. Call it before the first collective that follows work whose
  length differs between hosts (compiling the train step): on CPU the collective itself, gloo,
  fails when its peers arrive more than 30 s apart. Every process must make the same calls in
  the same order (the counter keeps barrier keys unique, as the store needs).
  """
  if jax.process_count() == 1:
    return
  key = f"jaxssl/{name}/{next(_barrier_ids)}"
  orbax_multihost.get_barrier_sync_fn()(key=key, timeout_ms=timeout_s * 1000)


def compile_then_sync(jitted, *args, name: str) -> None:
  """Compiles `jitted` for `args` (its next call with matching arguments reuses the executable),
  then `sync_processes(name)`: hosts finish compiling at different times, and the program's
  first collective must not be where they meet (gloo, on CPU, gives up after 30 s)."""
  jitted.lower(*args).compile()
  sync_processes(name)


def mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves a {'data': -1, 'fsdp': 2, 'tensor': 1} spec (one -1 = the rest) to sizes."""
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}.")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1 (the rest); got {dict(shape)}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
        f"Mesh {dict(shape)} does not divide {num_devices} devices; make the "
        "fixed axis sizes divide the device count."
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"Mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
      f"{num_devices} are available; set config.mesh so the sizes multiply to "
      f"{num_devices}, or use -1 for one axis."
    )
  return tuple(sizes)


def make_mesh(
  shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None
) -> jax.sharding.Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh over all (or the given) devices."""
  devices = list(devices) if devices is not None else jax.devices()
  sizes = mesh_shape(shape, len(devices))
  return jax.make_mesh(
    sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def _mesh_axes_for(logical_spec, rules):
  rule_map = dict(rules)
  return [rule_map.get(name) if name is not None else None for name in logical_spec]


def _axis_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def logical_sharding(
  shape: Sequence[int], logical_spec: Sequence[str | None] | None, mesh: jax.sharding.Mesh, rules
) -> NamedSharding:
  """NamedSharding of one array from its logical axis names.

  A dimension whose size the mapped mesh axes do not divide is replicated instead (with a log
  line), so tiny test models and odd widths still run on any mesh. A mesh axis is used at most
  once per array (the first dimension that claims it wins), as XLA requires.
  """
  if not logical_spec:
    return NamedSharding(mesh, P())
  used, spec = set(), []
  for dim, axes in zip(shape, _mesh_axes_for(logical_spec, rules)):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    names = tuple(a for a in names if a not in used and mesh.shape[a] > 1)
    if names and dim % _axis_size(mesh, names):
      logging.log_first_n(
        logging.INFO, "dim %d not divisible by mesh axes %s: replicated", 10, dim, names
      )
      names = ()
    used.update(names)
    spec.append(None if not names else names[0] if len(names) == 1 else names)
  return NamedSharding(mesh, P(*spec))


def shardings_from_boxed(boxed_abstract: Any, mesh: jax.sharding.Mesh, rules) -> Any:
  """Maps an abstract tree with `nn.LogicallyPartitioned` leaves to NamedShardings.

  Leaves without annotation (e.g. BatchNorm statistics, scalars) are replicated.
  """
  specs = nn.get_partition_spec(boxed_abstract)
  shapes = nn.unbox(boxed_abstract)
  return jax.tree.map(
    lambda s, x: logical_sharding(x.shape, tuple(s), mesh, rules),
    specs,
    shapes,
    is_leaf=lambda s: isinstance(s, P),
  )


def batch_sharding(mesh: jax.sharding.Mesh, rules) -> NamedSharding:
  """Sharding of batch arrays: leading dim split like the logical 'batch' axis."""
  axes = dict(rules).get("batch")
  names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
  names = tuple(a for a in names if mesh.shape[a] > 1)
  return NamedSharding(mesh, P(names if names else None))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: jax.sharding.Mesh, rules) -> int:
  """Number of shards of the batch axis: the global batch must be a multiple of it."""
  spec = batch_sharding(mesh, rules).spec
  return _axis_size(mesh, spec[0]) if spec and spec[0] else 1


def parameter_bytes_per_device(tree: Any) -> int:
  """Bytes of `tree` held by the first addressable device (to measure FSDP savings)."""
  dev = jax.local_devices()[0]
  total = 0
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      if shard.device == dev:
        total += int(np.prod(shard.data.shape)) * x.dtype.itemsize
  return total
