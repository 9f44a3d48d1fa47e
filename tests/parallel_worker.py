"""Trains the reference run's first steps on 8 host devices (run by a test).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 \
  python tests/parallel_worker.py OUT_DIR

Two meshes: "data" (8 x 1: the batch split, parameters replicated) and
"model" (4 x 2: the batch split 8 ways, every parameter of 2**12 elements or
more sharded over the second axis). Both start from the same initial state
and see the batches of tests/training_runs.py's reference run, through the
same functions `train.train` uses. OUT_DIR/NAME.npz gets the losses and the
state after NUM_STEPS updates (keyed by leaf path); OUT_DIR/sharding.json the
layout of the "model" run.
"""

import concurrent.futures
import json
import pathlib
import sys

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
# pylint: disable=g-import-not-at-top,wrong-import-position
import training_runs
from ffc_ddpm import checkpoint, models, parallel, train
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import process

NUM_STEPS = 2


def compiled_steps(config, model, tx, meshes: dict) -> dict:
  """Each mesh's jitted train step, compiled in parallel threads."""
  step_fn = train.make_train_step(config, model,
                                  process.from_config(config.diffusion), tx)
  sample = next(pipeline.create_train_iterator(config))
  lowered = {}
  for name, mesh in meshes.items():
    state = train.abstract_train_state(config, model, tx, mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                     sharding=parallel.data_sharding(mesh))
             for k, v in sample.items()}
    lowered[name] = train.jit_train_step(
        step_fn, jax.tree.map(lambda a: a.sharding, state), mesh).lower(
            state, batch)
  with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
    futures = {k: pool.submit(v.compile) for k, v in lowered.items()}
    return {k: f.result() for k, f in futures.items()}


def arrays(state) -> dict:
  """{path: leaf} of the weights, EMA and optimizer state, paths as stored."""
  items = train.checkpoint_items(state)
  return checkpoint.leaf_paths({k: items[k] for k in (
      "params", "ema_params", "opt_state")})


def layout(state) -> dict:
  """{leaf path: [global shape, shard shape, spec]} of the sharded leaves."""
  out = {}
  for path, leaf in arrays(state).items():
    shard = leaf.sharding.shard_shape(leaf.shape)
    if shard != leaf.shape:
      out[path] = [list(leaf.shape), list(shard), str(leaf.sharding.spec)]
  return out


def main(out_dir: str) -> None:
  if jax.device_count() != 8:
    raise SystemExit(f"expected 8 devices, got {jax.device_count()}")
  out = pathlib.Path(out_dir)
  config = training_runs.tiny_config()
  config.train.num_steps = training_runs.STEPS
  parallel.MIN_SHARDED_SIZE = 2**12
  meshes = {"data": parallel.create_mesh(1), "model": parallel.create_mesh(2)}
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  steps = compiled_steps(config, model, tx, meshes)
  initial = train.create_train_state(config, model, tx, meshes["data"])
  for name, mesh in meshes.items():
    shardings = jax.tree.map(
        lambda a: a.sharding,
        train.abstract_train_state(config, model, tx, mesh))
    state = jax.device_put(initial, shardings, may_alias=False)
    batches = pipeline.create_train_iterator(config, mesh)
    losses = []
    for _ in range(NUM_STEPS):
      state, metrics = steps[name](
          state, parallel.global_batch(next(batches), mesh))
      losses.append(metrics["loss"])
    if name == "model":
      (out / "sharding.json").write_text(json.dumps(layout(state)))
    np.savez(out / f"{name}.npz", losses=np.asarray(jax.device_get(losses)),
             **jax.device_get(arrays(state)))


if __name__ == "__main__":
  main(sys.argv[1])
