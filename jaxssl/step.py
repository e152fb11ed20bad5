"""The one train step every method shares.

`train_step(state, batch)`:
  rng   = fold_in(state.rng, state.step)           # exact on resume: no RNG state to save
  batch = device_views(batch, rng)                  # augment.placement='device' only
  loss, grads = value_and_grad(method.loss_fn)      # the method's maths, nothing else
  params, opt_state = optax update
  state = method.post_update(state)                 # EMA teacher, centers, by step
  state = where(finite, state, old state + 1 step)   # nan_policy='skip' only
Jitted once with in/out shardings from the mesh and the state donated, so XLA inserts every
collective (the pjit model): the same code runs on one CPU or a pod.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import kernels
from jaxssl import parallel
from jaxssl.state import TrainState


def _namespaced(prefix: str, metrics: dict[str, Any]) -> dict[str, jax.Array]:
  return {f"{prefix}/{k}": jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


NAN_POLICIES = ("stop", "skip")


def _keep_if(ok: jax.Array, new: TrainState, old: TrainState) -> TrainState:
  """`new` where `ok`, else `old` with only the step counter advanced (a skipped update)."""
  old = old.replace(step=new.step)
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  method,
  tx: optax.GradientTransformation,
  lr_schedule: Callable[[jax.Array], jax.Array] | None = None,
  nan_policy: str = "stop",
  device_views: Callable[..., dict[str, jax.Array]] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. Pure; see the module docstring for the order of operations.

  `metrics['train/nonfinite']` is 1.0 when the loss or a gradient is NaN/inf. With
  nan_policy='skip' such a step leaves params, optimizer state and aux unchanged (only the
  step advances), decided on device so nothing waits for the host; with 'stop' the update is
  applied and the trainer raises when it reads the flag. `device_views`
  (`data.device_augment.DeviceViews`) turns the batch's uint8 crops into the method's views.
  """
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f"nan_policy={nan_policy!r}; use one of {NAN_POLICIES}.")
  rng = jax.random.fold_in(state.rng, state.step)
  if device_views is not None:
    batch = device_views(batch, rng)
  grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)
  (loss, (metrics, new_aux)), grads = grad_fn(state.params, state.aux, batch, rng, state.step)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, aux=new_aux)
  new_state = method.post_update(new_state)
  grad_norm = optax.tree.norm(grads)
  # The global grad norm is non-finite iff some gradient entry is (or it overflows, which is
  # just as fatal), so one scalar covers every leaf.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if nan_policy == "skip":
    new_state = _keep_if(finite, new_state, state)
  out = {
    "train/loss": loss,
    "train/grad_norm": grad_norm,
    "train/param_norm": optax.tree.norm(new_state.params),
    "train/nonfinite": 1.0 - finite.astype(jnp.float32),
  }
  if lr_schedule is not None:
    out["train/lr"] = lr_schedule(state.step)
  out.update(_namespaced("train", metrics))
  return new_state, out


def make_train_step(
  method,
  tx: optax.GradientTransformation,
  state_shardings: TrainState,
  mesh: jax.sharding.Mesh,
  rules,
  *,
  lr_schedule: Callable[[jax.Array], jax.Array] | None = None,
  nan_policy: str = "stop",
  device_views: Callable[..., dict[str, jax.Array]] | None = None,
):
  """Returns `step(state, batch) -> (state, metrics)`, jitted with shardings and donation.

  The batch is split along its leading axis like the logical 'batch' axis; metrics come back
  replicated. Call it inside `jax.set_mesh(mesh)` (the trainer does).
  """
  batch_sharding = parallel.batch_sharding(mesh, rules)

  def step_fn(state, batch):
    # Rules are read at trace time by the models' activation constraints.
    with nn.logical_axis_rules(rules):
      return train_step(
        state,
        batch,
        method=method,
        tx=tx,
        lr_schedule=lr_schedule,
        nan_policy=nan_policy,
        device_views=device_views,
      )

  return jax.jit(
    step_fn,
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, parallel.replicated(mesh)),
    donate_argnums=0,
    compiler_options=kernels.compiler_options(mesh),
  )
