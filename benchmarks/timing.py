"""Timing helpers shared by the benchmarks (no JAX or torch import: the PyTorch peer uses it)."""

import time

import numpy as np


def call_seconds(fn, repeats: int) -> list[float]:
  """Wall times of `repeats` calls of `fn` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn`: a whole train step, where a slow outlier
  (data, GC) is part of the cost but should not dominate."""
  return float(np.median(call_seconds(fn, repeats)))


def min_seconds(fn, repeats: int) -> float:
  """Fastest of `repeats` calls of `fn`: a single kernel's achievable rate, where every
  slower call is interference from the rest of the machine."""
  return min(call_seconds(fn, repeats))
