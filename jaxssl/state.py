"""The train state pytree and its sharded creation.

Creation follows big_vision's order: `eval_shape(init)` gives abstract, logically annotated
shapes -> `parallel` turns the annotations into NamedShardings (optimizer state mirrors the
params it belongs to via `optax.tree_map_params`) -> `jit(init, out_shardings=...)` builds every
array directly on its devices, so no host ever holds the full model.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import parallel


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `aux` is the method's non-gradient state
  (BatchNorm statistics, EMA teacher, DINO center, ...)."""

  step: jax.Array
  params: Any
  opt_state: Any
  aux: Any
  rng: jax.Array


def _example_batch(batch_spec: dict[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
  # Parameter shapes never depend on the batch size, so init on two examples keeps it cheap.
  return {k: jnp.zeros((2,) + tuple(v.shape[1:]), v.dtype) for k, v in batch_spec.items()}


def _init_rngs(seed: int):
  # Raw uint32 keys (not typed key arrays) so Orbax stores them as ordinary arrays.
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  return init_rng, state_rng


def model_variables(method, batch_spec, mesh, rules, seed: int):
  """The method's {'params', 'aux'}: (init_fn, abstract tree, tree of NamedShardings).

  The eval job uses this alone (it never needs an optimizer); `abstract_and_shardings`
  builds the full train state on top of it.
  """

  def boxed_init():
    init_rng, _ = _init_rngs(seed)
    params, aux = method.init(init_rng, _example_batch(batch_spec))
    return {"params": params, "aux": aux}

  def init_fn():
    return nn.unbox(boxed_init())

  boxed = jax.eval_shape(boxed_init)
  return init_fn, nn.unbox(boxed), parallel.shardings_from_boxed(boxed, mesh, rules)


def abstract_and_shardings(
  method,
  tx: optax.GradientTransformation,
  batch_spec: dict[str, jax.ShapeDtypeStruct],
  mesh: jax.sharding.Mesh,
  rules,
  seed: int,
):
  """Returns (init_fn, abstract TrainState, TrainState of NamedShardings)."""
  variables_init, _, variable_shardings = model_variables(method, batch_spec, mesh, rules, seed)

  def init_fn() -> TrainState:
    variables = variables_init()
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=variables["params"],
      opt_state=tx.init(variables["params"]),
      aux=variables["aux"],
      rng=_init_rngs(seed)[1],
    )

  abstract = jax.eval_shape(init_fn)
  replicated = parallel.replicated(mesh)
  # optax.multi_transform (optim.frozen, frozen_until, constant_lr) leaves a MaskedNode where a
  # group's state skips a parameter: it has no arrays, so it stands for its own sharding.
  masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
  opt_shardings = optax.tree_map_params(
    tx,
    lambda p, sharding: p if masked(p) else sharding,
    abstract.opt_state,
    variable_shardings["params"],
    transform_non_params=lambda _: replicated,
    is_leaf=masked,
  )
  shardings = TrainState(
    step=replicated,
    params=variable_shardings["params"],
    opt_state=opt_shardings,
    aux=variable_shardings["aux"],
    rng=replicated,
  )
  return init_fn, abstract, shardings


def create_train_state(method, tx, batch_spec, mesh, rules, seed: int):
  """Initialises the state directly into its shardings. Returns (state, shardings)."""
  init_fn, _, shardings = abstract_and_shardings(method, tx, batch_spec, mesh, rules, seed)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(init_fn, out_shardings=shardings)()
  return state, shardings


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
