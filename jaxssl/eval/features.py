"""Frozen features from a training workdir: encoder-only restore and a sharded forward pass."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from jaxssl import checkpoint
from jaxssl import kernels
from jaxssl import methods
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import workdir as workdir_lib
from jaxssl.data import augment
from jaxssl.data import pipeline


class Encoder:
  """A trained run's method, mesh and variable shardings: restores params, extracts features.

  The mesh is this job's own (all its devices, data parallel with the run's parameter rules),
  whatever mesh the trainer used: Orbax restores onto the shardings asked for.
  """

  def __init__(
    self,
    workdir: str,
    config: ml_collections.ConfigDict | None = None,
    ops: kernels.Kernels | None = None,
  ):
    """`ops`: the kernels to build the encoder with; None picks them from this job's mesh
    (`jaxssl.kernels.for_mesh`). Tests pass another platform's to export its program."""
    self.workdir = workdir
    self.config = config or workdir_lib.read_config(workdir)
    self.mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    self.ops = ops or kernels.for_mesh(self.mesh)
    self.method = methods.build(self.config, self.ops)
    self.rules = parallel.get_rules(self.config.sharding_rules)
    self.init_fn, self.abstract, self.shardings = state_lib.model_variables(
      self.method, checkpoint.read_input_spec(workdir), self.mesh, self.rules, self.config.seed
    )
    self._encode = jax.jit(
      self._encode_fn,
      in_shardings=(self.shardings, parallel.batch_sharding(self.mesh, self.rules)),
      out_shardings=parallel.replicated(self.mesh),
      compiler_options=dict(self.ops.compiler_options()),
    )

  def _encode_fn(self, variables, images):
    with nn.logical_axis_rules(self.rules):
      return self.method.encode(variables["params"], variables["aux"], images)

  def restore(self, checkpointer: checkpoint.Checkpointer, step: int) -> Any:
    """{'params', 'aux'} of checkpoint `step` (no optimizer state is read)."""
    return checkpointer.restore_params(step, self.abstract, self.shardings)

  def random_init(self) -> Any:
    """The run's step-0 variables (same seed): the baseline every table shows."""
    with jax.set_mesh(self.mesh):
      return jax.jit(self.init_fn, out_shardings=self.shardings)()

  def features(
    self, variables: Any, source, info, *, batch_size: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, D] float32 and labels [N] of every example of `source`, in order.

    Images get the deterministic eval transform only (resize + normalise). Batches are padded
    to one fixed shape so the forward compiles once; padding is dropped with the 'valid' mask.
    """
    divisor = parallel.batch_divisor(self.mesh, self.rules)
    batch_size = max(divisor, batch_size // divisor * divisor)
    transform = augment.Deterministic(
      mean=info.mean, std=info.std, output_size=self.config.data.image_size
    )
    sharding = parallel.batch_sharding(self.mesh, self.rules)
    feats, labels = [], []
    with jax.set_mesh(self.mesh):
      for i, local in enumerate(
        pipeline.make_eval_batches(source, transform, batch_size=batch_size)
      ):
        images = pipeline.global_batch({"image": local["image"]}, sharding)["image"]
        if i == 0:
          parallel.compile_then_sync(self._encode, variables, images, name="eval_encoder_compiled")
        out = np.asarray(jax.device_get(self._encode(variables, images)), np.float32)
        # Features come back replicated for the whole global batch; host p holds the p-th
        # contiguous block of it, so gathering labels/valid in process order lines them up.
        valid = np.asarray(multihost_utils.process_allgather(local["valid"], tiled=True), bool)
        label = np.asarray(multihost_utils.process_allgather(local["label"], tiled=True))
        feats.append(out[valid])
        labels.append(label[valid])
    return np.concatenate(feats), np.concatenate(labels).astype(np.int32)
