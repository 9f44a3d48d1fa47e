"""Training: optimizer, train state, one sharded train step, and the loop.

Read top to bottom: optimizer -> state -> step -> periodic work -> writers
-> monitoring -> loop. The step is one `jax.jit` over a (data, model) mesh:
batches split over every device of every host, parameters replicated (or
sharded over `model`), the state donated. Randomness comes from
`fold_in(state.rng, state.step)`, the base key being part of the state and of
every checkpoint, so a resumed run draws exactly the noise an uninterrupted
run would have drawn.

Step numbers count updates: "step k" is the k-th update, and the checkpoint
and the metrics of step k describe the state after it.
"""

import json
import os
import signal
import threading
from typing import Any, Callable

from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ffc_ddpm import checkpoint, configuration, files, inference, lock
from ffc_ddpm import models, parallel, training_monitor, weights
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import losses, process
from ffc_ddpm.inference import Purpose

CONFIG_FILE = weights.RUN_CONFIG  # WORKDIR/config.json: the run's config


# ------------------------------------------------------------- optimizer
def create_learning_rate_fn(train_config) -> optax.Schedule:
  """Linear warm-up from 0 to the peak, then the paper's cosine decay (to
  peak * min_lr_ratio at num_steps) or a constant."""
  peak, warmup = train_config.learning_rate, train_config.warmup_steps
  if train_config.lr_schedule == "constant":
    decay = optax.constant_schedule(peak)
  else:
    decay = optax.cosine_decay_schedule(
        peak, max(train_config.num_steps - warmup, 1),
        alpha=train_config.min_lr_ratio)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def create_optimizer(train_config) -> optax.GradientTransformation:
  """Adam/AdamW on the schedule, after clipping by global norm (0 = none)."""
  lr = create_learning_rate_fn(train_config)
  if train_config.optimizer == "adamw":
    opt = optax.adamw(lr, b1=train_config.b1, b2=train_config.b2,
                      weight_decay=train_config.weight_decay)
  else:
    opt = optax.adam(lr, b1=train_config.b1, b2=train_config.b2)
  if train_config.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm),
                      opt)
  return opt


# ----------------------------------------------------------------- state
@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly (with the data position)."""
  step: jax.Array  # int32 scalar: updates done
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array  # typed key; the step's key is fold_in(rng, step)


def check_trainable(config) -> None:
  """Train-only config checks, before any compute."""
  if config.model.learn_sigma:
    raise configuration.ConfigError(
        "config.model.learn_sigma=True: expected False for training (learned "
        "variances are supported for imported guided-diffusion models only)")


def initial_params(config, model) -> dict | None:
  """The parameters of `train.init_weights` for `model`, as float32 NumPy
  arrays, or None for a random start; one-line `weights.WeightsError` for a
  file that is missing, unreadable or holds another network."""
  path = config.train.init_weights
  if not path:
    return None
  try:
    meta, params = weights.load(path)
    abstract = jax.eval_shape(lambda: models.init_params(
        model, config.model, jax.random.key(0)))
    weights.check_shapes(params, abstract, path)
  except weights.WeightsError as e:  # named as the field the user set
    raise weights.WeightsError(str(e).replace(
        f"--weights={path}", f"config.train.init_weights={path}", 1)) from None
  logging.info("Starting from %s of step %d of %s", meta["source"],
               meta["step"], path)
  return params


def _init_fn(config, model, tx) -> Callable[[], TrainState]:
  def init():
    params = models.init_params(
        model, config.model, inference.purpose_key(config.seed, Purpose.INIT))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=params, opt_state=tx.init(params),
                      rng=inference.purpose_key(config.seed, Purpose.TRAIN))
  return init


def state_shardings(abstract_state: TrainState, mesh) -> TrainState:
  """Weights, EMA and optimizer moments follow `parallel.param_sharding`."""
  shard = lambda tree: parallel.param_sharding(mesh, tree)
  return TrainState(step=parallel.replicated(mesh),
                    params=shard(abstract_state.params),
                    ema_params=shard(abstract_state.ema_params),
                    opt_state=shard(abstract_state.opt_state),
                    rng=parallel.replicated(mesh))


def abstract_train_state(config, model, tx, mesh) -> TrainState:
  """Shapes, dtypes and shardings of the state, without allocating it."""
  shapes = jax.eval_shape(_init_fn(config, model, tx))
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      shapes, state_shardings(shapes, mesh))


def create_train_state(config, model, tx, mesh) -> TrainState:
  """A fresh state, initialised directly into its shardings; its weights
  and EMA are `initial_params` when the config names a file."""
  shardings = jax.tree.map(lambda a: a.sharding,
                           abstract_train_state(config, model, tx, mesh))
  state = jax.jit(_init_fn(config, model, tx), out_shardings=shardings)()
  params = initial_params(config, model)
  if params is None:
    return state
  params = jax.tree.map(lambda p, a: p.astype(a.dtype), params, state.params)
  # two copies: the step donates both trees, so they may not share buffers
  return state.replace(params=jax.device_put(params, shardings.params),
                       ema_params=jax.device_put(params, shardings.ema_params))


def checkpoint_items(state: TrainState) -> dict[str, Any]:
  """The state as `checkpoint.STATE_ITEMS`."""
  return {"params": state.params, "ema_params": state.ema_params,
          "opt_state": state.opt_state,
          "progress": {"step": state.step, "rng": state.rng}}


def restore_or_create(config, model, tx, mesh, ckpt: checkpoint.Checkpointer,
                      data_iterator) -> TrainState:
  """The newest readable checkpoint's state (and data position), or a fresh
  state when there is no checkpoint.

  A checkpoint is read straight into the state's shardings; nothing is
  initialised first. Damaged newer checkpoints are skipped and set aside
  (checkpoint.Checkpointer.newest_readable).
  """

  def check_seed(meta):
    seed = meta.get("seed", config.seed)
    if seed != config.seed:
      raise configuration.ConfigError(
          f"config.seed={config.seed}: expected {seed}, the seed of the run "
          f"in {ckpt.directory} (or start a new workdir)")

  abstract = abstract_train_state(config, model, tx, mesh)
  found = ckpt.restore_latest(checkpoint_items(abstract), data_iterator,
                              check_meta=check_seed)
  if found is None:
    return create_train_state(config, model, tx, mesh)
  step, items = found
  logging.info("Resumed from step %d in %s", step, ckpt.directory)
  progress = items.pop("progress")
  return TrainState(**items, **progress)


# ------------------------------------------------------------------ step
def ema_decay(step: jax.Array, decay: float) -> jax.Array:
  """min(decay, (1 + n) / (10 + n)) at update n (0-based).

  The warm-up (as TensorFlow's ExponentialMovingAverage with num_updates)
  lets a short run's EMA forget the random init; long runs reach `decay`.
  """
  n = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(ema_params: Any, params: Any, rate: jax.Array) -> Any:
  """ema <- rate * ema + (1 - rate) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params,
                      params)


def make_train_step(config, model, diffusion, tx) -> Callable:
  """Returns `step(state, batch) -> (state, metrics)`, not yet jitted.

  One update on the masked eps-MSE (losses.inpainting_loss), then the EMA.
  Metrics are scalars left on device: loss, grad_norm (before clipping) and
  learning_rate; the loop checks them for NaN/Inf when it fetches them.
  """
  lr_fn = create_learning_rate_fn(config.train)

  def step(state: TrainState, batch):
    noise_key, dropout_key = jax.random.split(
        jax.random.fold_in(state.rng, state.step))

    def apply_fn(params, x, noise_level, cond):
      return model.apply({"params": params}, x, noise_level, cond, train=True,
                         rngs={"dropout": dropout_key})

    def loss_fn(params):
      return losses.inpainting_loss(
          apply_fn, params, diffusion, batch["image"], batch["mask"],
          noise_key, conditioning=config.diffusion.conditioning,
          prefill=config.diffusion.prefill,
          noise_conditioning=config.model.noise_conditioning,
          kind=config.diffusion.loss, region=config.diffusion.loss_region,
          normalisation=config.diffusion.loss_normalisation)

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema_params, params,
                     ema_decay(state.step, config.train.ema_decay))
    new_state = state.replace(step=state.step + 1, params=params,
                              ema_params=ema, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                       "learning_rate": lr_fn(state.step)}

  return step


def jit_train_step(step_fn, state_sharding, mesh):
  """The step under jit: batch split over the mesh, state donated."""
  return jax.jit(step_fn,
                 in_shardings=(state_sharding, parallel.data_sharding(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)),
                 donate_argnums=0)


# --------------------------------------------------------- periodic work
def is_time(step: int, every: int, last_step: int) -> bool:
  """Periodic work: every `every` steps (0 = never) and at the last step."""
  return bool(every) and (step % every == 0 or step == last_step)


class NonFiniteLossError(ValueError):
  """Training produced NaN or Inf."""


class MetricBuffer:
  """Per-step metrics kept on device until a log or checkpoint step.

  Fetching only then keeps the host from copying every step's metrics; it
  still waits for the step before the newest, so it runs at most one step
  ahead of the device. Without that wait JAX's asynchronous dispatch lets
  the host queue every step up to the next fetch (50 at 7.5 s each in the
  128x128 run), and a SIGTERM's checkpoint waits for all of them, past a
  pre-emption's grace period.
  """

  def __init__(self):
    self._steps: list[tuple[int, Any]] = []

  def append(self, step: int, step_metrics: dict) -> None:
    if self._steps:
      jax.block_until_ready(self._steps[-1][1])
    self._steps.append((step, step_metrics))

  def fetch(self) -> list[tuple[int, dict]]:
    """Host copies (one transfer for all steps), checked for NaN and Inf."""
    host = jax.device_get([m for _, m in self._steps])
    self._steps = [(s, m) for (s, _), m in zip(self._steps, host)]
    for step, m in self._steps:
      if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {step} (loss="
            f"{float(m['loss'])}, grad_norm={float(m['grad_norm'])}); "
            "training stopped and nothing from this step on was saved")
    return self._steps

  def summary(self) -> dict[str, float]:
    """Means over the buffered steps; empties the buffer."""
    fetched, self._steps = self.fetch(), []
    return {k: float(np.mean([m[k] for _, m in fetched]))
            for k in fetched[0][1]}


class Preempted(SystemExit):
  """Raised after the pre-emption checkpoint: the program exits with 0."""


class Preemption:
  """Whether to save and stop: SIGTERM (the usual pre-emption notice).

  One process: a SIGTERM handler sets a flag (installed in the main thread,
  the previous handler restored on exit). Several processes: JAX's
  distributed runtime catches SIGTERM on any of them and all agree on the
  step to stop at (`Checkpointer.reached_preemption`).
  """

  def __init__(self, ckpt: checkpoint.Checkpointer):
    self._ckpt, self._requested, self._previous = ckpt, False, None

  def __enter__(self) -> "Preemption":
    if (jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint, then exiting.")
    self._requested = True

  def reached(self, step: int) -> bool:
    """Call once per step (the multi-process protocol needs every step)."""
    if jax.process_count() > 1:
      return self._ckpt.reached_preemption(step)
    return self._requested


# --------------------------------------------------------------- writers
class JsonlWriter(metric_writers.MetricWriter):
  """Appends each scalar record to a JSON-lines file as {"step": ..., ...}.

  Written synchronously, one line per call, so a killed run loses nothing
  logged. Other kinds of summaries are left to the other writers.
  """

  def __init__(self, path: str):
    self.path = path

  def write_scalars(self, step: int, scalars) -> None:
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def _ignore(self, *args, **kwargs):
    """Images, histograms, ... go to TensorBoard only."""

  write_summaries = write_images = write_videos = write_audios = _ignore
  write_texts = write_histograms = write_hparams = flush = close = _ignore


def truncate_jsonl(path: str, last_step: int) -> None:
  """Drops records after `last_step` (and a torn last line): on resume the
  file keeps one trajectory, whatever was logged after the checkpoint."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      if line.endswith("\n") and json.loads(line)["step"] <= last_step:
        kept.append(line)
  files.write_text(path, "".join(kept))


def create_writer(workdir: str, start_step: int) -> metric_writers.MetricWriter:
  """Console + TensorBoard + WORKDIR/metrics.jsonl on process 0; the other
  processes only log to their own console."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  path = os.path.join(workdir, "metrics.jsonl")
  truncate_jsonl(path, start_step)
  return metric_writers.MultiWriter(
      [metric_writers.create_default_writer(workdir), JsonlWriter(path)])


# ------------------------------------------------------------------ loop
def train(config: ml_collections.ConfigDict, workdir: str,
          log_parameters: bool = False) -> TrainState:
  """Trains to config.train.num_steps, resuming from WORKDIR's newest
  readable checkpoint if any; returns the final state.

  WORKDIR/config.json is written once the config and the checkpoint are
  known to agree, so a refused resume changes nothing. `log_parameters`
  logs the table of the network's parameters.

  Holds the workdir (lock.hold_workdir): a second run on it stops at once.
  Raises NonFiniteLossError (naming the step) on NaN/Inf, keeping the last
  good checkpoint, and Preempted (exit status 0) after the checkpoint that
  a SIGTERM asked for.
  """
  check_trainable(config)
  tc = config.train
  mesh = parallel.create_mesh(tc.model_axis_size)
  model = models.create_model(config.model)
  tx = create_optimizer(tc)
  with lock.hold_workdir(workdir), checkpoint.Checkpointer(
      workdir, keep=tc.keep_checkpoints, keep_every=tc.keep_every) as ckpt:
    data_iterator = pipeline.create_train_iterator(config, mesh)
    state = restore_or_create(config, model, tx, mesh, ckpt, data_iterator)
    if jax.process_index() == 0:  # only once the checkpoint agrees with it
      configuration.save_json(config, os.path.join(workdir, CONFIG_FILE))
    if jax.process_index() == 0 and log_parameters:
      parameter_overview.log_parameter_overview(
          jax.eval_shape(lambda: state.params), include_stats=False)
    train_step = jit_train_step(
        make_train_step(config, model, process.from_config(config.diffusion),
                        tx),
        jax.tree.map(lambda x: x.sharding, state), mesh)
    writer = create_writer(workdir, int(state.step))
    monitor = training_monitor.create_monitor(config, model, mesh, workdir,
                                              writer)
    # steps/s and ETA between log steps, where the host waits for the device
    # anyway; the clock starts once the first step (and compiling) is done.
    progress = periodic_actions.ReportProgress(
        num_train_steps=tc.num_steps, writer=writer,
        every_steps=tc.log_every, every_secs=None)
    buffer = MetricBuffer()
    first = step = int(state.step)
    with metric_writers.ensure_flushes(writer), Preemption(ckpt) as stop:
      while step < tc.num_steps:
        batch = parallel.global_batch(next(data_iterator), mesh)
        state, step_metrics = train_step(state, batch)
        step += 1
        buffer.append(step, step_metrics)
        preempted = stop.reached(step)
        if is_time(step, tc.log_every, tc.num_steps) or preempted:
          writer.write_scalars(step, buffer.summary())
        if step == first + 1:
          jax.block_until_ready(step_metrics)
        progress(step)
        if is_time(step, tc.checkpoint_every, tc.num_steps) or preempted:
          buffer.fetch()  # never save a state that went bad
          ckpt.save(step, checkpoint_items(state),
                    {"step": step, "seed": config.seed}, data_iterator)
          logging.info("Saving the checkpoint of step %d", step)
        if preempted:
          ckpt.wait()
          logging.warning("Pre-empted: saved step %d in %s; exiting.", step,
                          ckpt.directory)
          raise Preempted(0)
        grids = is_time(step, tc.image_every, tc.num_steps)
        scores = is_time(step, tc.quick_eval_every, tc.num_steps)
        if monitor and (grids or scores):
          with progress.timed("monitor"):
            monitor(state.ema_params, step, grids, scores)
  return state
