"""The method interface: what the trainer, the step and the eval job call on a method.

A method is `jaxssl/methods/<name>.py` defining `class Method`, constructed with the run's
config and the backend's ops (`methods.build(config, kernels)`, `kernels` from
`jaxssl.kernels.for_mesh(mesh)`; it builds every model with them, e.g.
`models.build_encoder(config.model, kernels)`); it satisfies `MethodProtocol` structurally (no
base class needed; `methods.common.EncoderHeadMethod` is a convenient one). Shapes use B for the global
batch; every array is the global view (under `jax.jit` with shardings, XLA splits it).
`tests/methods/test_interface.py` checks every registered method against this protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import ml_collections


@runtime_checkable
class MethodProtocol(Protocol):
  """One self-supervised method: its views, its model's variables, its loss, its state rules."""

  config: ml_collections.ConfigDict
  # The keys of the batch the loss reads, e.g. ('view1', 'view2'): the input pipeline's
  # outputs with these names become the step's global `batch` arrays.
  batch_keys: tuple[str, ...]

  def train_transform(self, info) -> Any:
    """The per-example Grain random transform of the training pipeline (module-level class,
    picklable for worker processes): example dict -> {key: array} for every key of
    `batch_keys`, shaped without the batch dimension. `info` is the dataset's
    `datasets.DatasetInfo` (classes, image shape, normalisation statistics)."""

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    """(params, aux) from one example batch: params are trained; aux is non-gradient state
    (BatchNorm statistics, EMA teachers, DINO's center). Both are pytrees whose leaves carry
    logical axis names (`nn.with_logical_partitioning`) for the sharding rules."""

  def loss_fn(
    self, params: Any, aux: Any, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """(loss, (metrics, new_aux)): a float32 scalar loss differentiated w.r.t. `params`, a dict
    of scalar metrics (logged as `train/<name>`), and aux after this step's forward. Pure: the
    randomness comes from `rng` (already folded with the step), `step` is the 0-based count
    of completed steps (a traced int32), for schedules."""

  def post_update(self, state: Any) -> Any:
    """The `state.TrainState` after the optimizer update, with the method's rules applied
    (EMA teacher, center, by `state.step`); identity for methods without any."""

  def encode(self, params: Any, aux: Any, images: jax.Array) -> jax.Array:
    """Frozen features [B, D] float32 of images [B, H, W, C] (the eval transform's output)
    for the eval job's probes (a language method takes tokens [B, T])."""
