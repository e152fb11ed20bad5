#!/bin/bash
# The accelerator check: one script, under 8 minutes on one GPU host (e.g. an H100), one table
# (the steps are capped at 90 + 180 + 120 + 90 s).
#
#   bash benchmarks/accelerator_check.sh [OUT_DIR]
#
# 1. the tests that make sense on one accelerator (model numerics, losses, the backend layer),
#    run on it (JAX_PLATFORMS=cuda; the rest of the suite simulates 8 CPU devices);
# 2. benchmarks/throughput.py in bfloat16: MFU of MAE ViT-B/16 and SimCLR ViT-S/16 against the
#    bf16 matmul peak measured in the same run, and the Grain pipeline's rate against what the
#    step consumes;
# 3. benchmarks/vs_pytorch.py with the peer on the same GPU (torch CUDA, the same recipe);
# 4. benchmarks/input_pipeline.py: host CPU per example with the augmentation on the host vs in
#    the step, what it adds to the GPU step, and the host cores each mode needs to feed the step.
# A GPU host without network (the device tool's machines): `python benchmarks/accelerator_wheels.py`
# here puts the wheels of the packages it lacks in .whl/; carried there, they are installed to
# /tmp/site first.
# Nothing in the test suite depends on this script.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/jaxssl_accelerator_check}}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$python" -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/devices.txt" 2>/dev/null

echo "== tests on the accelerator"
JAX_PLATFORMS=cuda timeout 90 "$python" -m pytest -q -p no:cacheprovider \
  tests/models tests/losses tests/kernels/test_kernels.py::test_cpu_dense_and_gelu_compute_the_reference_function \
  2>&1 | tail -5 | tee "$out/tests.txt"

echo "== throughput, bfloat16"
timeout 180 "$python" benchmarks/throughput.py --dtype=bfloat16 --cases=mae_vit_b16,simclr_vit_s16 \
  --batch_size=256 --steps=10 --warmup=3 --matmul_size=8192 --workers=0,8 --loop_workers=8 \
  --json="$out/throughput.json" 2>&1 | grep -v "^I[0-9]" | tee "$out/throughput.txt"

echo "== jaxssl vs the PyTorch peer on the GPU (SimCLR ViT-S/16, bfloat16)"
timeout 120 "$python" benchmarks/vs_pytorch.py --backbone=vit_s16 --dtype=bfloat16 \
  --batch_size=256 --steps=10 --warmup=3 --workers=8 --torch_python="$python" \
  --json="$out/vs_pytorch.json" 2>&1 | grep -v "^I[0-9]" | tail -20 | tee "$out/vs_pytorch.txt"

echo "== input pipeline: augmentation on the host vs in the step (SimCLR ViT-S/16, bfloat16)"
timeout 90 "$python" benchmarks/input_pipeline.py --case=simclr_vit_s16 --dtype=bfloat16 \
  --batch_size=256 --steps=5 --warmup=2 --workers=0,8 --pipeline_batches=4 \
  --out_json="$out/input_pipeline.json" 2>&1 | grep -v "^I[0-9]" | tail -12 | tee "$out/input_pipeline.txt"

echo "== one table"
"$python" - "$out" <<'PY' | tee "$out/table.md"
import json, os, sys
out = sys.argv[1]
def load(name):
  path = os.path.join(out, name)
  return json.load(open(path)) if os.path.exists(path) else None
tp, vs, ip = load("throughput.json"), load("vs_pytorch.json"), load("input_pipeline.json")
device = open(os.path.join(out, "devices.txt")).read().strip().replace("\n", "; ")
print(f"{device}\n")
print("| case | batch | step (s) | examples/s | MFU (bf16 peak) | pipeline ex/s, 0 / 8 workers"
      " | pipeline / step | data wait |")
print("|---|---|---|---|---|---|---|---|")
for r in (tp or {}).get("results", []):
  pipe = r.get("pipeline_examples_per_s", {})
  over = r.get("pipeline_over_step", {})
  print(f"| {r['case']} | {r['batch_size']} | {r['step_s']:.3f} | {r['examples_per_s']:.0f} | "
        f"{100 * r['mfu']:.0f}% of {r['peak_flops_per_s'] / 1e12:.0f} TFLOP/s | "
        f"{pipe.get('0', float('nan')):.0f} / {pipe.get('8', float('nan')):.0f} | "
        f"{over.get('8', float('nan')):.2f}x | {100 * r.get('data_wait_fraction', 0):.0f}% |")
if vs:
  b = vs["args"]["batch_size"]
  for name, r in (("jaxssl", vs["ours"]), ("lightly/torch", vs["peer"])):
    print(f"| simclr_vit_s16 vs_pytorch: {name} | {b} | {r['step_s']:.3f} | "
          f"{b / r['step_s']:.0f} | | | | {100 * r['data_wait_fraction']:.0f}% |")
  print(f"\nours / peer examples/s: step alone {vs['ratio_step']:.2f}x, data-fed "
        f"{vs['ratio_loop']:.2f}x")
if ip:
  print("\n| placement | host CPU ms/example (0 workers) | augmentation in the step (ms) | "
        "step (s) | host cores to feed the step |")
  print("|---|---|---|---|---|")
  for r in ip.get("rows", []):
    host = next(iter(r["host"].values()))
    aug = r["device"]["ms"] if r.get("device") else 0.0
    print(f"| {r['placement']} | {1e3 * host['cpu_s_per_example']:.2f} | {aug:.1f} | "
          f"{r['step_s']:.3f} | {r['cores_for_step']:.1f} |")
PY
