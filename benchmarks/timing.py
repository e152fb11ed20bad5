"""Timing helper shared by the benchmarks (no JAX or torch import: the PyTorch peer uses it)."""
import time

import numpy as np


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
