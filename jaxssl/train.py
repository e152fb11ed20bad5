r"""Pretraining entry point: one linear trainer for every method.

  python -m jaxssl.train --config=configs/simclr.py:mnist5k --workdir=/tmp/simclr

Order (big_vision style): distributed init -> config checks -> mesh -> data -> method ->
abstract state + shardings -> jit(init) -> restore latest good checkpoint (state and data
iterator) -> jit(step) -> loop {step, log, checkpoint} -> final checkpoint. Re-running the same
command resumes where the last checkpoint left off.

Faults (see jaxssl/faults.py): config mistakes fail in `check_config`, before any data is read
or anything compiles, with one line saying what to change; a config that differs from the
workdir's recorded one is refused before anything in the workdir is written, except for the
keys that may change on resume (jaxssl/workdir.py); SIGTERM/SIGINT checkpoint at the next step
boundary and return; a NaN/inf loss stops with an error naming the step and the last good
checkpoint (or the update is skipped, config.nan_policy='skip'); an unreadable newest
checkpoint is skipped for the previous one, and another model's checkpoint is refused
(jaxssl/checkpoint.py). User mistakes are `jaxssl.errors.UserError`s: the command prints their
one line and exits 1 (config_lib.run_app).
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import ml_collections
from ml_collections import config_flags

from jaxssl import checkpoint
from jaxssl import config_lib
from jaxssl import errors
from jaxssl import faults
from jaxssl import kernels
from jaxssl import methods
from jaxssl import metrics as metrics_lib
from jaxssl import optim
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import step as step_lib
from jaxssl import workdir as workdir_lib
from jaxssl.data import datasets
from jaxssl.data import device_augment
from jaxssl.data import pipeline

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined when the entry point runs, not at import, so train and evaluate import together.
  config_flags.DEFINE_config_file("config", None, "Method config file[:preset].", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
  flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 for multi-process runs (auto-detected on TPU pods and SLURM).",
  )
  flags.DEFINE_integer("num_processes", None, "Processes in the job.")
  flags.DEFINE_integer("process_id", None, "This process's index.")


def _batch_spec(dataset, method) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes of the model inputs, from one element of a throwaway iterator."""
  example = next(iter(dataset))
  return {
    k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(),) + v.shape[1:], v.dtype)
    for k, v in example.items()
    if k in method.batch_keys
  }


ConfigError = errors.ConfigError


def _check_batch(config, mesh, rules) -> None:
  divisor = parallel.batch_divisor(mesh, rules)
  if config.batch_size % divisor or config.batch_size % jax.process_count():
    raise ValueError(
      f"batch_size={config.batch_size} must be divisible by the batch's mesh shards "
      f"({divisor}) and the process count ({jax.process_count()}); change "
      "config.batch_size or config.mesh."
    )


def check_config(config: ml_collections.ConfigDict):
  """Every check that needs no data and no compile: returns (method, mesh, rules).

  Raises ConfigError with one line naming the setting to change: unknown method, mesh that
  does not match the device count, unknown sharding rules, batch not divisible by the batch's
  mesh shards or the process count, duration, nan_policy. (Unknown `--config.x` keys are
  caught even earlier, by `config_lib.check_overrides`, before flags are parsed.)
  """
  try:
    methods.get(config.method)  # an unknown method is named before any mesh error
    mesh = parallel.make_mesh(config.mesh)
    method = methods.build(config, kernels.for_mesh(mesh))
    rules = parallel.get_rules(config.sharding_rules)
    if "placement" in config.get("augment", {}):
      device_augment.resolve(config.augment.placement, kernels.platform(mesh))
    _check_batch(config, mesh, rules)
    config_lib.total_steps(config, 1)  # exactly one duration is set, and it is positive
    if config.nan_policy not in step_lib.NAN_POLICIES:
      raise ValueError(
        f"config.nan_policy={config.nan_policy!r}; use one of {step_lib.NAN_POLICIES}."
      )
  except ConfigError:
    raise
  except (ValueError, KeyError, AttributeError) as e:
    raise ConfigError(str(e).strip("'\"")) from e
  return method, mesh, rules


def train(
  config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
) -> dict[str, float]:
  """Trains (or resumes) `config` in `workdir`; returns the last logged metrics.

  `stop_at_step` ends this run early (after checkpointing) without changing the schedule,
  so a later call continues the same run. So does a SIGTERM/SIGINT (see the module docstring).
  """
  method, mesh, rules = check_config(config)
  hint = kernels.for_mesh(mesh).host_advice()
  if hint and jax.process_index() == 0:
    logging.info(hint)
  config_changes = workdir_lib.check(workdir, config)  # before anything is written there
  data_dir = config.data.data_dir or datasets.default_data_dir()

  # ---------------------------------------------------------------- data
  info = datasets.get_info(config.data.name, data_dir)
  num_steps = config_lib.total_steps(config, info.split_sizes[config.data.split])
  source = datasets.get_source(config.data.name, config.data.split, data_dir)
  platform = kernels.platform(mesh)
  transform, device_views = device_augment.place(method.train_transform(info), platform)
  if device_views is not None:
    logging.info("Augmenting %s on the %s devices", [k for k, _ in device_views.views], platform)
  dataset = pipeline.make_train_dataset(
    source, transform, global_batch_size=config.batch_size, seed=config.seed
  )
  batch_spec = _batch_spec(dataset, method)  # what the pipeline feeds (uint8 crops, ...)
  model_spec = device_views.output_spec(batch_spec) if device_views else batch_spec
  data_iter = pipeline.make_train_iterator(dataset, worker_count=config.data.worker_count)

  # ---------------------------------------------------------------- state
  schedule, tx = optim.build(config, num_steps, info.split_sizes[config.data.split])
  _, abstract, shardings = state_lib.abstract_and_shardings(
    method, tx, model_spec, mesh, rules, config.seed
  )
  ckpt = checkpoint.Checkpointer(
    workdir,
    max_to_keep=config.checkpoint.max_to_keep,
    keep_every=config.checkpoint.keep_every,
    async_save=config.checkpoint.async_save,
  )
  try:
    start_step, state = ckpt.restore_latest_good(abstract, shardings, data_iter)
  except BaseException:
    ckpt.close()
    raise
  workdir_lib.record(workdir, config, config_changes)
  checkpoint.write_input_spec(workdir, model_spec)
  if state is None:
    state, _ = state_lib.create_train_state(method, tx, model_spec, mesh, rules, config.seed)
    start_step = 0
    logging.info("Starting from scratch: %s params", f"{state_lib.count_params(state.params):,}")
  else:
    logging.info("Resumed from step %d of %d in %s", start_step, num_steps, ckpt.directory)

  # ---------------------------------------------------------------- loop
  train_step = step_lib.make_train_step(
    method,
    tx,
    shardings,
    mesh,
    rules,
    lr_schedule=schedule,
    nan_policy=config.nan_policy,
    device_views=device_views,
  )
  batch_sharding = parallel.batch_sharding(mesh, rules)
  writer = metrics_lib.MetricWriter(workdir)
  progress = metrics_lib.Progress(num_steps, config.batch_size, start_step)
  last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  nonfinite = faults.NonFiniteGuard(ckpt, enabled=config.nan_policy == "stop")
  logged: dict[str, float] = {}
  try:
    with faults.StopRequest() as stop, jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      if start_step < last_step:
        parallel.compile_then_sync(
          train_step,
          state,
          {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
            for k, v in batch_spec.items()
          },
          name="train_step_compiled",
        )
      for step in range(start_step + 1, last_step + 1):
        local = next(data_iter)
        batch = pipeline.global_batch({k: local[k] for k in method.batch_keys}, batch_sharding)
        state, step_metrics = train_step(state, batch)
        nonfinite.push(step, step_metrics)
        if step % config.log_every_steps == 0 or step == last_step or step == start_step + 1:
          scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
          scalars.update(progress.update(step))
          writer.write(step, scalars)
          metrics_lib.log_progress(progress, step, scalars)
          logged = scalars
        stopping = stop.should_stop(step)
        if step % config.checkpoint.every_steps == 0 or step == last_step or stopping:
          nonfinite.check_pending()  # never persist a diverged state
          ckpt.save(step, state, data_iter)
        if stopping:
          ckpt.wait()
          logging.warning(
            "Stopped by %s after saving the checkpoint of step %d in %s; "
            "re-run the same command to continue.",
            stop.received,
            step,
            ckpt.directory,
          )
          break
      nonfinite.check_pending()
  finally:
    ckpt.close()
    writer.close()
    if hasattr(data_iter, "close"):
      data_iter.close()  # stops Grain worker processes
  return logged


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  if FLAGS.config is None or not FLAGS.workdir:
    raise app.UsageError("Both --config=configs/<method>.py[:preset] and --workdir are needed.")
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  train(FLAGS.config, FLAGS.workdir)


def run() -> None:
  """Console script `jaxssl-train`."""
  config_lib.run_app(main, _define_flags)


if __name__ == "__main__":
  run()
