"""benchmarks/fma_peak.py: its kernels do the arithmetic they are credited with, and its goal
arithmetic (what 1.5x the peer needs of the measured ceiling) is right. No timing is asserted."""

import importlib.util
import json
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
  spec = importlib.util.spec_from_file_location(
    "fma_peak", os.path.join(ROOT, "benchmarks", "fma_peak.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


fma_peak = _load()


def _supported():
  return fma_peak.supported(fma_peak.cpuinfo.flags())


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
  if shutil.which("cc") is None:
    pytest.skip("no C compiler (cc) here")
  if not _supported():
    pytest.skip("this CPU has neither AVX2+FMA nor AVX-512")
  return fma_peak.build(str(tmp_path_factory.mktemp("fma")))


def test_every_supported_kernel_passes_its_checksum(exe):
  for kernel in _supported():
    # 1000 rounds: every FMA chain reaches its fixed point (each round halves the distance).
    assert fma_peak.finish(fma_peak.start(exe, kernel, 1000, None), kernel, 1000) > 0


def test_checksum_catches_a_loop_that_did_not_run(exe):
  fma = next(k for k in _supported() if k.startswith("fma"))
  with pytest.raises(RuntimeError, match="checksum"):  # 0 rounds: the chains keep their start
    fma_peak.finish(fma_peak.start(exe, fma, 0, None), fma, 0)


def test_checksums_are_the_closed_forms():
  # fma512: 16 chains x 16 lanes, each at the fixed point 2b of acc <- acc/2 + b.
  assert fma_peak.expected_checksum("fma512") == 16 * 16 * 2 * fma_peak.VALUE
  assert fma_peak.expected_checksum("fma256") == 12 * 8 * 2 * fma_peak.VALUE
  # dpbf16 adds x*x - x*x to each lane: chains keep their start values 0..15.
  assert fma_peak.expected_checksum("dpbf16") == 16 * sum(range(16))
  assert fma_peak.flop_per_round("fma512") == 16 * 16 * 2
  assert fma_peak.flop_per_round("dpbf16") == 16 * 16 * 4


def _vs_pytorch_json(path, dtype="float32", flops=1e12, **ours):
  run = dict(
    args=dict(dtype=dtype, backbone="vit_s16"),
    ours=dict(step_s=8.0, loop_s=10.0, **ours),
    peer=dict(step_s=10.0, loop_s=12.5),
  )
  if flops is not None:
    run["ours"]["flops_per_step"] = flops
  path.write_text(json.dumps(run))
  return str(path)


def test_goal_rows_against_the_ceiling(tmp_path):
  results = {
    "fma512": dict(dtype="float32", all_cores=200.0),
    "fma256": dict(dtype="float32", all_cores=150.0),
    "dpbf16": dict(dtype="bfloat16 acc. float32", all_cores=400.0),
  }
  step, loop = fma_peak.goal_rows(results, [_vs_pytorch_json(tmp_path / "a.json")])
  # 1 TFLOP per step: peer 10 s -> 100 GFLOP/s; 1.5x needs 150 = 75% of the best float32 kernel.
  assert step["peer_gflops"] == pytest.approx(100.0)
  assert step["ours_gflops"] == pytest.approx(125.0)
  assert step["goal_gflops"] == pytest.approx(150.0)
  assert step["goal_of_ceiling"] == pytest.approx(0.75)
  assert step["ratio"] == pytest.approx(1.25)
  assert loop["goal_gflops"] == pytest.approx(120.0) and loop["ratio"] == pytest.approx(1.25)
  (bf16,) = fma_peak.goal_rows(results, [_vs_pytorch_json(tmp_path / "b.json", "bfloat16")])[:1]
  assert bf16["ceiling_gflops"] == 400.0 and bf16["goal_of_ceiling"] == pytest.approx(0.375)


def test_goal_rows_name_a_result_without_flops(tmp_path):
  path = _vs_pytorch_json(tmp_path / "old.json", flops=None)
  with pytest.raises(ValueError, match="old.json has no ours.flops_per_step: rerun vs_pytorch"):
    fma_peak.goal_rows({}, [path])
