"""Exponential-moving-average teachers: the update and the momentum schedules, as pure functions.

A teacher (BYOL's target network, MoCo's momentum encoder, the EMA targets of I-JEPA and
data2vec) is kept in a method's `aux` and moved towards the student after every optimizer step:

  teacher <- m * teacher + (1 - m) * student,

with the momentum m following a schedule of the step k in [0, K]. Every function here is pure
and traceable (k may be a traced int), so `post_update` can call them inside the jitted step.
`schedule_length(config)` resolves K once, the same way the trainer resolves the run length.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import config_lib
from jaxssl.data import datasets


def ema_update(teacher: Any, student: Any, momentum) -> Any:
  """teacher * m + student * (1 - m), leaf by leaf; the two trees must have the same structure.

  The result keeps each teacher leaf's dtype (a float32 teacher stays float32 even if the
  momentum is a float64 constant). The blend itself is computed in at least float32: rounding
  m to a bfloat16 teacher's dtype would turn 0.9995 into 1.0 and freeze the teacher.
  """

  def update(t, s):
    dtype = jnp.promote_types(t.dtype, jnp.float32)
    m = jnp.asarray(momentum, dtype)
    return (t.astype(dtype) * m + s.astype(dtype) * (1 - m)).astype(t.dtype)

  return jax.tree.map(update, teacher, student)


def _progress(step, total_steps):
  """k / K clipped to [0, 1], in float32 (steps past K keep the final value)."""
  if total_steps < 1:
    raise ValueError(
      f"total_steps={total_steps} must be >= 1: the momentum schedule runs over "
      "the training run's steps (see schedule_length)."
    )
  k = jnp.asarray(step, jnp.float32)
  return jnp.clip(k / total_steps, 0.0, 1.0)


def cosine_momentum(step, total_steps: int, base: float):
  """BYOL's target decay (Grill et al. 2020, sec. 3.2): m_k = 1 - (1 - base)(cos(pi k/K) + 1)/2.

  base at k = 0, (1 + base)/2 at k = K/2, 1 at k = K. MoCo v3 uses the same rule (its
  `adjust_moco_momentum`).
  """
  progress = _progress(step, total_steps)
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def linear_momentum(step, total_steps: int, base: float, end: float = 1.0):
  """I-JEPA's schedule (Assran et al. 2023, sec. 4): base + (end - base) k/K, 1 at k = K."""
  return base + (end - base) * _progress(step, total_steps)


def annealed_momentum(step, anneal_steps: int, base: float, end: float):
  """data2vec's schedule (Baevski et al. 2022, sec. 3.3): linear from base to end over the
  first `anneal_steps` updates, then constant at end for the rest of training."""
  return base + (end - base) * _progress(step, anneal_steps)


def _num_train_examples(config: ml_collections.ConfigDict) -> int:
  name, split = config.data.name, config.data.split
  data_dir = config.data.data_dir or datasets.default_data_dir()
  if name in datasets.EMBEDDED_NAMES:
    sizes = datasets.get_info(name, data_dir).split_sizes  # constants, no I/O
  else:
    # A catalog dataset: read the split sizes from the prepared builder's metadata only
    # (get_info would also estimate pixel statistics from thousands of images).
    # pylint: disable-next=protected-access
    sizes = {
      s: i.num_examples for s, i in datasets._catalog_builder(name, data_dir).info.splits.items()
    }
  if split not in sizes:
    raise ValueError(
      f"config.data.split={split!r} is not a split of {name!r} "
      f"({', '.join(sizes)}); the momentum schedule needs its size."
    )
  return sizes[split]


def schedule_length(config: ml_collections.ConfigDict) -> int:
  """The run's length K in steps, as the trainer computes it (`config_lib.total_steps`).

  Reads the train split's size only when the duration is given in epochs.
  """
  num_train = _num_train_examples(config) if config.total_epochs is not None else 0
  return config_lib.total_steps(config, num_train)
