"""Training: the train state, one sharded train step, and the loop.

Read top to bottom: optimizer -> state -> step -> loop. The step is one
`jax.jit` over a (data, model) mesh: batches split over every device of every
host, parameters replicated (or sharded over `model`), the state donated.
Randomness comes from `fold_in(key(config.seed), step)`, so a resumed run
draws exactly the noise an uninterrupted run would have drawn.
"""

import functools
import json
import os
import signal
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ffc_ddpm import checkpoint, images, inference, metrics, models, parallel
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import losses, process, samplers

# Purposes folded into the seed key, so no two uses share randomness.
INIT, TRAIN, MONITOR = 0, 1, 2


# ------------------------------------------------------------- optimizer
def create_learning_rate_fn(train_config) -> optax.Schedule:
  """Linear warm-up to the peak, then cosine decay (the paper) or constant."""
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
  """Adam/AdamW with global-norm gradient clipping."""
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
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def create_train_state(config, model, tx, mesh) -> TrainState:
  """Initialises the state directly into its shardings (no host copy)."""
  key = jax.random.fold_in(jax.random.key(config.seed), INIT)

  def init():
    params = models.init_params(model, config.model, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=params, opt_state=tx.init(params))

  shardings = state_shardings(jax.eval_shape(init), mesh)
  return jax.jit(init, out_shardings=shardings)()


def state_shardings(abstract_state: TrainState, mesh) -> TrainState:
  """Large parameters (and their optimizer moments) follow `param_sharding`."""
  shard = lambda tree: parallel.param_sharding(mesh, tree)
  return TrainState(step=parallel.replicated(mesh),
                    params=shard(abstract_state.params),
                    ema_params=shard(abstract_state.ema_params),
                    opt_state=shard(abstract_state.opt_state))


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
  """min(decay, (1 + n) / (10 + n)): a short run still gets a useful EMA."""
  n = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


# ------------------------------------------------------------------ step
def make_train_step(config, model, diffusion, tx) -> Callable:
  """Returns `step(state, batch) -> (state, metrics)`, not yet jitted.

  A step with a non-finite loss or gradient leaves the state unchanged and
  reports `finite = False`; the loop stops there with the step named.
  """
  base_key = jax.random.fold_in(jax.random.key(config.seed), TRAIN)
  lr_fn = create_learning_rate_fn(config.train)

  def step(state: TrainState, batch):
    key = jax.random.fold_in(base_key, state.step)
    noise_key, dropout_key = jax.random.split(key)

    def apply_fn(params, x, noise_level, cond):
      return model.apply({"params": params}, x, noise_level, cond, train=True,
                         rngs={"dropout": dropout_key})

    def loss_fn(params):
      return losses.inpainting_loss(
          apply_fn, params, diffusion, batch["image"], batch["mask"],
          noise_key, conditioning=config.diffusion.conditioning,
          noise_conditioning=config.model.noise_conditioning,
          kind=config.diffusion.loss, region=config.diffusion.loss_region)

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rate = ema_decay(state.step, config.train.ema_decay)
    ema = jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p,
                       state.ema_params, params)
    new = TrainState(step=state.step + 1, params=params, ema_params=ema,
                     opt_state=opt_state)
    keep_old = lambda n, o: jnp.where(finite, n, o)
    new = new.replace(params=jax.tree.map(keep_old, new.params, state.params),
                      ema_params=jax.tree.map(keep_old, new.ema_params,
                                              state.ema_params),
                      opt_state=jax.tree.map(keep_old, new.opt_state,
                                             state.opt_state))
    return new, {"loss": loss, "grad_norm": grad_norm,
                 "learning_rate": lr_fn(state.step), "finite": finite}

  return step


def jit_train_step(step_fn, state_sharding, mesh):
  batch_sharding = parallel.data_sharding(mesh)
  return jax.jit(step_fn,
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, parallel.replicated(mesh)),
                 donate_argnums=0)


# -------------------------------------------------------------- helpers
def is_time(step: int, every: int, last_step: int) -> bool:
  """Periodic work: every `every` steps (0 = never) and at the last step."""
  return bool(every) and (step % every == 0 or step == last_step)


class NonFiniteLossError(RuntimeError):
  """Training produced NaN or Inf."""


class Preemption:
  """Records SIGTERM so the loop can save once more and exit."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint, then exiting.")
    self.requested = True


def append_jsonl(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def summarise(pending: list[tuple[int, dict]]) -> dict:
  """Host-side means of the metrics of several steps; checks finiteness."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, fetched):
    if not m["finite"]:
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {step + 1} (loss="
          f"{float(m['loss'])}, grad_norm={float(m['grad_norm'])}); the state "
          "before it was kept and nothing after it was saved")
  keys = [k for k in fetched[0] if k != "finite"]
  return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


# ------------------------------------------------------------ monitoring
def monitor_batch(config, mesh) -> dict:
  """A fixed validation batch (centre masks) for grids and quick evaluation."""
  size = min(config.train.quick_eval_images, config.data.num_val or 1)
  size = max(size, jax.device_count())
  size -= size % jax.device_count()
  batch = next(pipeline.eval_batches(config, "validation", "center", size,
                                     size))
  return parallel.global_batch(
      {k: batch[k] for k in ("image", "mask", "index")}, mesh)


def monitor(config, model, sampler, state, batch, writer, workdir, step):
  """Inpaints the fixed batch with the EMA weights; logs PSNR/SSIM and grids."""
  keys = samplers.example_keys(
      jax.random.fold_in(jax.random.key(config.seed), MONITOR), batch["index"])
  out = sampler(state.ema_params, batch["image"], batch["mask"], keys)
  scores = {"val_psnr": float(jnp.mean(metrics.psnr(out, batch["image"]))),
            "val_ssim": float(jnp.mean(metrics.ssim(out, batch["image"])))}
  writer.write_scalars(step, scores)
  if jax.process_index() == 0:
    grid = images.inpainting_grid(*jax.device_get(
        (batch["image"], batch["mask"], out)))
    writer.write_images(step, {"inpainting": grid[None]})
    images.save_png(os.path.join(workdir, "images", f"step_{step:08d}.png"),
                    grid)
  return scores


# ------------------------------------------------------------------ loop
def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains, resuming from the latest checkpoint in `workdir` if any."""
  tc = config.train
  mesh = parallel.create_mesh(tc.model_axis_size)
  model = models.create_model(config.model)
  diffusion = process.from_config(config.diffusion)
  tx = create_optimizer(tc)
  lead = jax.process_index() == 0

  # -- input
  data_iter = pipeline.create_train_iterator(config, mesh)

  # -- state, resumed when a checkpoint exists
  state = create_train_state(config, model, tx, mesh)
  ckpt = checkpoint.Checkpointer(workdir, keep=tc.keep_checkpoints,
                                 keep_every=tc.keep_every)
  start = ckpt.latest_step()
  if start is not None:
    restored = ckpt.restore(start, _as_items(state), data_iter)
    state = TrainState(step=jnp.asarray(start, jnp.int32), **restored)
    logging.info("Resumed from step %d in %s", start, workdir)
  else:
    start = 0
    parameter_overview.log_parameter_overview(state.params)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("Network: %s parameters", f"{num_params:,}")

  # -- step, writers, periodic work
  sharding = jax.tree.map(lambda x: x.sharding, state)
  train_step = jit_train_step(make_train_step(config, model, diffusion, tx),
                              sharding, mesh)
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  progress = periodic_actions.ReportProgress(
      num_train_steps=tc.num_steps, writer=writer, every_steps=tc.log_every)
  sampler = inference.create_sampler(config, model)
  watch = monitor_batch(config, mesh) if (
      tc.image_every or tc.quick_eval_every) else None
  preemption = Preemption()
  jsonl = os.path.join(workdir, "metrics.jsonl")

  def save(step):
    ckpt.save(step, _as_items(state), {"step": step}, data_iter)

  pending, last_log = [], (start, time.time())
  step = start
  with metric_writers.ensure_flushes(writer):
    while step < tc.num_steps:
      batch = parallel.global_batch(next(data_iter), mesh)
      state, step_metrics = train_step(state, batch)
      pending.append((step, step_metrics))
      step += 1
      progress(step)
      stop = preemption.requested or ckpt.reached_preemption(step)
      if is_time(step, tc.log_every, tc.num_steps) or stop:
        summary = summarise(pending)
        pending = []
        now = time.time()
        summary["steps_per_sec"] = (step - last_log[0]) / (now - last_log[1])
        last_log = (step, now)
        writer.write_scalars(step, summary)
        if lead:
          append_jsonl(jsonl, {"step": step, **summary})
          _log_progress(step, tc.num_steps, summary)
      if is_time(step, tc.checkpoint_every, tc.num_steps) or stop:
        if pending:
          summarise(pending)  # never checkpoint a state that went bad
        save(step)
      if stop:
        break
      if is_time(step, tc.image_every, tc.num_steps) or is_time(
          step, tc.quick_eval_every, tc.num_steps):
        scores = monitor(config, model, sampler, state, watch, writer,
                         workdir, step)
        if lead:
          append_jsonl(jsonl, {"step": step, **scores})
  ckpt.wait()
  ckpt.close()
  return state


def _as_items(state: TrainState) -> dict:
  return {"params": state.params, "ema_params": state.ema_params,
          "opt_state": state.opt_state}


def _log_progress(step: int, total: int, summary: dict) -> None:
  rate = summary["steps_per_sec"]
  eta = (total - step) / rate if rate > 0 else float("inf")
  logging.info("step %d/%d  loss %.5f  %.2f steps/s  ETA %s", step, total,
               summary["loss"], rate, _format_seconds(eta))


def _format_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
