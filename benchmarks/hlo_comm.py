r"""Communication of the compiled train step, read from the HLO, beside the theoretical minimum.

  python benchmarks/hlo_comm.py [--methods=simclr,mae] [--preset=fashion_mnist] [--devices=8]

For each method, compiles the real train step (`step.make_train_step`, the trainer's own) for a
data-parallel mesh (data=N, rules 'dp') and an FSDP mesh (fsdp=N, rules 'fsdp') of N simulated
CPU devices, parses the optimized HLO for all-reduce / all-gather / reduce-scatter / all-to-all
/ collective-permute, and prints per step:
  * HLO bytes: the summed result sizes of those ops (one device's buffers);
  * ring traffic: what one device sends under the ring algorithm, all-reduce 2(n-1)/n x S,
    all-gather (n-1)/n x S_out, reduce-scatter (n-1)/n x S_in, all-to-all (n-1)/n x S;
  * the minimum for the parameter bytes P: DP all-reduces the gradients once, 2(N-1)/N x P;
    FSDP all-gathers the parameters and reduce-scatters the gradients, (N-1)/N x P each (the
    same total: an all-reduce IS a reduce-scatter followed by an all-gather), plus the small
    activation collectives of the loss (gathering embeddings) and BatchNorm statistics.
Then the per-device parameter + optimizer-state bytes under FSDP for N = 1, 2, 4, 8, which
should fall as 1/N (parameters whose sharded dimension N does not divide stay replicated).

Nothing runs on data: shapes come from the method's own transform on one example. The CPU
backend's SPMD partitioner is the one TPU/GPU use, but its collective combining differs, so op
counts (not bytes) may differ on accelerators. Not a test: it prints figures.
"""

import argparse
import math
import os
import re
import sys

_ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_ARGS.add_argument("--methods", default="simclr,mae")
_ARGS.add_argument("--preset", default="fashion_mnist")
_ARGS.add_argument("--devices", type=int, default=8)
ARGS = _ARGS.parse_args()
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from jaxssl import config_lib
from jaxssl import methods
from jaxssl import optim
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import step as step_lib
from jaxssl.data import datasets
# pylint: enable=g-import-not-at-top,wrong-import-position

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# `%name = <shape> <op>(`; a tuple shape may hold `/*index=5*/` comments, hence the lazy `.*?`.
_OP = re.compile(
  r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s+"
  r"(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\("
)
_ARRAY = re.compile(r"\b(pred|[subf]\d+|bf16)\[([\d,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]+)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[\d+,(\d+)\]")


def _bytes(shape: str) -> list[int]:
  sizes = []
  for dtype, dims in _ARRAY.findall(shape):
    itemsize = 1 if dtype == "pred" else (2 if dtype == "bf16" else int(dtype[1:]) // 8)
    sizes.append(math.prod(int(d) for d in dims.split(",") if d) * itemsize)
  return sizes


def _group_size(line: str, default: int) -> int:
  m = _GROUPS_LIST.search(line)
  if m:
    return len(m.group(1).split(","))
  m = _GROUPS_IOTA.search(line)
  return int(m.group(1)) if m else default


def collective_bytes(hlo: str, num_devices: int) -> dict[str, dict[str, float]]:
  """{op: {'count', 'hlo_bytes', 'ring_bytes'}} over the module's collectives."""
  out = {op: {"count": 0, "hlo_bytes": 0.0, "ring_bytes": 0.0} for op in COLLECTIVES}
  for line in hlo.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    op, sizes = m.group("op"), _bytes(m.group("shape"))
    if m.group("start") and op in ("all-gather", "collective-permute") and len(sizes) > 1:
      sizes = sizes[len(sizes) // 2 :]  # async start ops return (operands, results)
    size = float(sum(sizes))
    n = _group_size(line, num_devices)
    if n <= 1:
      continue
    ring = {
      "all-reduce": 2 * (n - 1) / n * size,
      "all-gather": (n - 1) / n * size,
      "reduce-scatter": (n - 1) * size,  # the result is 1/n of the input
      "all-to-all": (n - 1) / n * size,
      "collective-permute": size,
    }[op]
    out[op]["count"] += 1
    out[op]["hlo_bytes"] += size
    out[op]["ring_bytes"] += ring
  return out


def _batch_spec(config, method) -> dict[str, jax.ShapeDtypeStruct]:
  info = datasets.get_info(config.data.name)
  h, w, c = info.image_shape
  example = {"image": np.zeros((h, w, c), np.uint8), "label": 0}
  element = method.train_transform(info).random_map(example, np.random.default_rng(0))
  return {
    k: jax.ShapeDtypeStruct(
      (config.batch_size,) + np.shape(element[k]), np.asarray(element[k]).dtype
    )
    for k in method.batch_keys
  }


def _tree_bytes_per_device(abstract, shardings) -> int:
  return sum(
    math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
  )


def compiled_hlo(method, config, tx, spec, mesh, rules) -> tuple[str, object, object]:
  _, abstract, shardings = state_lib.abstract_and_shardings(
    method, tx, spec, mesh, rules, config.seed
  )
  step = step_lib.make_train_step(method, tx, shardings, mesh, rules)
  batch_sharding = parallel.batch_sharding(mesh, rules)
  args = (
    jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    ),
    {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding) for k, v in spec.items()},
  )
  with jax.set_mesh(mesh):
    return step.lower(*args).compile().as_text(), abstract, shardings


def _mb(x: float) -> str:
  return f"{x / 2**20:8.3f}"


def main() -> None:
  n = ARGS.devices
  dump = os.environ.get("HLO_COMM_DUMP")  # a directory: also write each compiled HLO there
  print(
    f"jax {jax.__version__}, {jax.device_count()} simulated {jax.devices()[0].platform} "
    f"devices; MiB per step and device\n"
  )
  for name in ARGS.methods.split(","):
    config = config_lib.load_config_file(os.path.join(ROOT, f"configs/{name}.py:{ARGS.preset}"))
    method = methods.build(config)
    tx = optim.make_optimizer(
      config.optim, optim.make_schedule(config.optim, config.batch_size, 1000)
    )
    spec = _batch_spec(config, method)
    print(f"## {name} ({ARGS.preset}: {config.model.name} backbone, batch {config.batch_size})")
    print("| mesh | P params | op | count | HLO bytes | ring traffic | minimum |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for rules_name, axis in (("dp", "data"), ("fsdp", "fsdp")):
      mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1, axis: n})
      rules = parallel.get_rules(rules_name)
      hlo, abstract, _ = compiled_hlo(method, config, tx, spec, mesh, rules)
      if dump:
        os.makedirs(dump, exist_ok=True)
        with open(os.path.join(dump, f"{name}_{rules_name}{n}.hlo.txt"), "w") as f:
          f.write(hlo)
      p_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.params))
      found = collective_bytes(hlo, n)
      minimum = {
        "dp": {"all-reduce": 2 * (n - 1) / n * p_bytes},
        "fsdp": {"all-gather": (n - 1) / n * p_bytes, "reduce-scatter": (n - 1) / n * p_bytes},
      }[rules_name]
      label = f"{rules_name.upper()} {axis}={n}"
      for op in COLLECTIVES:
        if found[op]["count"] or op in minimum:
          print(
            f"| {label} | {_mb(p_bytes)} | {op} | {found[op]['count']} | "
            f"{_mb(found[op]['hlo_bytes'])} | {_mb(found[op]['ring_bytes'])} | "
            f"{_mb(minimum.get(op, 0.0))} |"
          )
      total = sum(v["ring_bytes"] for v in found.values())
      print(
        f"| {label} | | **total** | {sum(v['count'] for v in found.values())} | "
        f"{_mb(sum(v['hlo_bytes'] for v in found.values()))} | {_mb(total)} | "
        f"{_mb(sum(minimum.values()))} |"
      )
    print()
    print(f"Per-device parameter / optimizer-state memory under FSDP ({name}):")
    print("| N | params MiB | opt state MiB | params x N / params at N=1 |")
    print("|---:|---:|---:|---:|")
    base = None
    for k in (1, 2, 4, 8):
      if k > n:
        break
      mesh = parallel.make_mesh({"data": 1, "fsdp": k, "tensor": 1}, devices=jax.devices()[:k])
      _, abstract, shardings = state_lib.abstract_and_shardings(
        method, tx, spec, mesh, parallel.get_rules("fsdp"), config.seed
      )
      params = _tree_bytes_per_device(abstract.params, shardings.params)
      opt = _tree_bytes_per_device(abstract.opt_state, shardings.opt_state)
      base = base or params
      print(f"| {k} | {_mb(params)} | {_mb(opt)} | {params * k / base:.3f} |")
    print()


if __name__ == "__main__":
  main()
