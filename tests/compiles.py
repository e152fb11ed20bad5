"""Counting the backend compiles of the trainer's jitted step (shared by the tests that check a
run compiles its step once)."""

import contextlib

import jax

STEP_FUNCTION = "jit(step_fn)"  # jaxssl.step.make_train_step's jitted function


@contextlib.contextmanager
def step_compiles():
  """Yields a list that gets one entry per backend compile of the train step inside the block."""
  compiles = []

  def on_duration(event, _, fun_name=None, **__):
    if event == "/jax/core/compile/backend_compile_duration" and fun_name == STEP_FUNCTION:
      compiles.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
