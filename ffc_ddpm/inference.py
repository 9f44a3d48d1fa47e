"""The trained network as samplers use it, and its weights from a checkpoint
or a weights file.

`load(config, workdir)` is what evaluation, inpainting and sampling start
from: the mesh, the weights laid out on it, and the sampler of `config.eval`.
Samplers are cached by the settings that define them, so a second evaluation
or inpainting in one process (a notebook, training followed by evaluation)
reuses the compiled sampling loop instead of compiling it again.
"""

import collections
import dataclasses
import enum
import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from ffc_ddpm import checkpoint, models, parallel, weights
from ffc_ddpm.diffusion import samplers

# The config.eval fields a sampler is built from (see samplers.create_sampler).
_SAMPLER_FIELDS = ("sampler", "num_steps", "timestep_spacing", "eta",
                   "jump_length", "jump_n_sample")
_CACHE_SIZE = 4
_sampler_cache: collections.OrderedDict = collections.OrderedDict()


def inference_apply(model):
  """The model function samplers call: (params, x_t, noise_level, cond)."""
  return lambda params, x, noise_level, cond: model.apply(
      {"params": params}, x, noise_level, cond)


def _sampler_key(config, model) -> tuple:
  settings = {"diffusion": config.diffusion.to_dict(),
              "model": config.model.to_dict(),
              "eval": {f: config.eval[f] for f in _SAMPLER_FIELDS}}
  return model, json.dumps(settings, sort_keys=True, default=str)


def create_sampler(config, model) -> samplers.Sampler:
  """`config.eval`'s sampler around `model`, cached by its settings."""
  key = _sampler_key(config, model)
  if key not in _sampler_cache:
    _sampler_cache[key] = samplers.create_sampler(config,
                                                  inference_apply(model))
    while len(_sampler_cache) > _CACHE_SIZE:
      _sampler_cache.popitem(last=False)
  _sampler_cache.move_to_end(key)
  return _sampler_cache[key]


def load_weights(config, workdir: str | None, mesh: Mesh,
                 step: int | None = None, weights_file: str | None = None):
  """(module, params, step, source) from WORKDIR's checkpoint, or from
  `weights_file` (`weights.load`), on `mesh`.

  The EMA weights when `config.eval.use_ema` and the checkpoint has them
  (a converted guided-diffusion / RePaint checkpoint has `params` only).
  Without `step`, the newest checkpoint that reads: damaged newer ones are
  skipped and left in place. Reads only: nothing in the workdir is created
  or moved, so it may be read-only.
  """
  stored = None if weights_file is None else _read_file(config, weights_file)
  model = models.create_model(config.model)
  abstract = jax.eval_shape(
      lambda: models.init_params(model, config.model, jax.random.key(0)))
  shardings = parallel.param_sharding(mesh, abstract)
  if stored is not None:
    meta, params = stored
    weights.check_shapes(params, abstract, weights_file)
    params = jax.tree.map(lambda p, a: p.astype(a.dtype), params, abstract)
    logging.info("Loaded %s of step %d from %s", meta["source"], meta["step"],
                 weights_file)
    return (model, jax.device_put(params, shardings), meta["step"],
            f"{os.path.basename(weights_file)}:{meta['source']}")
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)
  with checkpoint.Checkpointer(workdir, writable=False) as ckpt:
    params, step, name = ckpt.restore_weights(abstract, step,
                                              use_ema=config.eval.use_ema)
  logging.info("Loaded %s of step %d from %s", name, step, workdir)
  return model, params, step, name


def _read_file(config, path: str) -> tuple[dict, Any]:
  """(metadata, params) of a weights file whose model is `config`'s (main
  applies the file's config with `weights.model_config` first)."""
  meta, params = weights.load(path)
  _, differing = weights.model_config(config, meta, path)
  if differing:
    raise weights.WeightsError(
        f"--weights={path}: the config differs from the file's in "
        f"{'; '.join(differing)}")
  return meta, params


@dataclasses.dataclass(frozen=True)
class Inference:
  """A checkpoint ready to sample: weights on a mesh and a sampler."""
  mesh: Mesh
  params: Any
  step: int
  weights: str  # the checkpoint item, "ema_params" or "params" (for a
  #              weights file: "FILE_NAME:ema_params")
  sampler: samplers.Sampler


def load(config, workdir: str | None, step: int | None = None,
         mesh: Mesh | None = None, weights_file: str | None = None
         ) -> Inference:
  """The checkpoint of `workdir` (the latest, or `step`), or the weights
  file `weights_file`, and its sampler, on `mesh` (default: every device,
  config.train.model_axis_size)."""
  if mesh is None:
    mesh = parallel.create_mesh(config.train.model_axis_size)
  model, params, step, source = load_weights(config, workdir, mesh, step,
                                             weights_file)
  return Inference(mesh, params, int(step), source,
                   create_sampler(config, model))


# ------------------------------------------------------- K samples each
class Purpose(enum.IntEnum):
  """What a draw from config.seed is for, folded into its key so that no
  two uses of one seed share noise. The numbers are fixed: changing one
  changes every result made with it."""
  INIT = 0  # the network's initial weights
  TRAIN = 1  # the training steps' noise and timesteps
  MONITOR = 2  # the training monitor's validation fills
  EVAL = 3  # evaluation: sample 0 of each image
  INPAINT = 4  # the inpaint command: sample 0 of each photo
  SAMPLE = 5  # the sample command (unconditional)
  EVAL_EXTRA = 6  # evaluation: samples k > 0 of K
  INPAINT_EXTRA = 7  # the inpaint command: samples k > 0 of K


# The purpose of samples k > 0 of K, for the draws that take K.
_EXTRA = {Purpose.EVAL: Purpose.EVAL_EXTRA,
          Purpose.INPAINT: Purpose.INPAINT_EXTRA,
          Purpose.SAMPLE: Purpose.INPAINT_EXTRA}


def purpose_key(seed, purpose: Purpose) -> jax.Array:
  """The key of `purpose` under `seed`: config.seed, or the typed key
  jax.random.key(config.seed) (an exported sampler's input)."""
  is_key = isinstance(seed, jax.Array) and jax.dtypes.issubdtype(
      seed.dtype, jax.dtypes.prng_key)
  root = seed if is_key else jax.random.key(seed)
  return jax.random.fold_in(root, int(purpose))


class Draw(NamedTuple):
  """K samples of each example and what every caller reads of them."""
  samples: jax.Array  # (N, K, H, W, C) in [-1, 1]
  mean: jax.Array  # (N, H, W, C): `mean_of_samples`, known pixels exact
  std: jax.Array  # (N, H, W, 1): `std_of_samples`, 0 outside the hole

  @property
  def first(self) -> jax.Array:
    """Sample 0 of each example, the same for any K (`sample_keys`)."""
    return self.samples[:, 0]


def draw(inference: Inference, x_known: jax.Array, mask: jax.Array,
         indices: jax.Array, seed, purpose: Purpose,
         num_samples: int = 1, progress=None) -> Draw:
  """The one K-sample draw of every caller (evaluation, inpainting,
  sampling, the training monitor and the tools): K samples of each example
  (`sample_k`, keyed by `purpose` and the examples' indices), their mean
  over the hole and their standard deviation."""
  extra = (purpose_key(seed, _EXTRA[purpose]) if num_samples > 1 else None)
  samples = sample_k(inference, x_known, mask, indices,
                     purpose_key(seed, purpose), extra, num_samples,
                     progress=progress)
  return Draw(samples, mean_of_samples(samples, x_known, mask),
              std_of_samples(samples, mask))


def sample_keys(key: jax.Array, extra: jax.Array | None, indices,
                num_samples: int) -> jax.Array:
  """Keys of K samples of each example, (N K,), example i's in rows
  i K .. i K + K - 1.

  Sample 0 of example i has `example_keys(key, i)`, the key of a single
  sample, so the first of K samples does not depend on K; sample k > 0 has
  `example_keys(fold_in(extra, k), i)`. `extra` must be a key nothing else
  derives from (its own purpose folded into the seed); with K = 1 it is
  not read.
  """
  first = samplers.example_keys(key, indices)[None]
  more = [samplers.example_keys(jax.random.fold_in(extra, k), indices)[None]
          for k in range(1, num_samples)]
  return jnp.concatenate([first] + more).T.reshape(-1)


def sample_k(inference: Inference, x_known: jax.Array, mask: jax.Array,
             indices: jax.Array, key: jax.Array, extra: jax.Array | None,
             num_samples: int, progress=None) -> jax.Array:
  """K independent samples of each example in one sampler call: the batch
  repeated K times, with `sample_keys`. Returns (N, K, H, W, C)."""
  repeat = lambda a: jnp.repeat(a, num_samples, axis=0)
  keys = sample_keys(key, extra, indices, num_samples)
  out = inference.sampler(inference.params, repeat(x_known), repeat(mask),
                          keys, progress=progress)
  return out.reshape((-1, num_samples) + out.shape[1:])


def mean_of_samples(samples: jax.Array, x_known: jax.Array,
                    mask: jax.Array) -> jax.Array:
  """The per-pixel mean of each example's K samples (N, K, H, W, C), in
  float, with the known pixels of x_known exactly (their mean may differ in
  the last bit). The distortion-optimal estimate: E[x_0 | known] minimises
  the expected squared error, which PSNR scores."""
  return jnp.where(mask > 0.5, jnp.mean(samples, axis=1), x_known)


def std_of_samples(samples: jax.Array, mask: jax.Array) -> jax.Array:
  """The uncertainty map (N, H, W, 1): the per-pixel sample standard
  deviation across the K samples, sqrt(mean over channels of the unbiased
  variance, ddof=1), in the units of the images ([-1, 1] images: 0..1); 0
  outside the hole (and everywhere for K = 1)."""
  ddof = 1 if samples.shape[1] > 1 else 0
  variance = jnp.mean(jnp.var(samples, axis=1, ddof=ddof), axis=-1,
                      keepdims=True)
  return jnp.where(mask > 0.5, jnp.sqrt(variance), 0.0)


def examples_per_call(batch_size: int, num_samples: int) -> int:
  """Examples in a sampler call of `batch_size` images when each example is
  drawn `num_samples` times: batch_size // K (at least 1), rounded up to a
  multiple of the devices. `config.eval.batch_size` is the images the
  network sees at once, whatever K, so it bounds memory."""
  devices = jax.device_count()
  examples = max(1, batch_size // num_samples)
  return -(-examples // devices) * devices


def padded_batch_size(batch_size: int, count: int) -> int:
  """The batch that `count` examples are sampled in: `batch_size`, or for
  fewer examples the next power of two (few shapes to compile, little
  padding), rounded up to a multiple of the devices."""
  devices = jax.device_count()
  size = min(batch_size, 1 << max(count - 1, 0).bit_length())
  return max(devices, -(-size // devices) * devices)


def sample_padded(inference: Inference, x_known: np.ndarray,
                  mask: np.ndarray, indices: np.ndarray, seed: int,
                  purpose: Purpose, batch_size: int, progress=None,
                  step_progress=None, num_samples: int = 1) -> Draw:
  """`draw` over host arrays of any length, in equal, sharded batches.

  Batches have `padded_batch_size(examples_per_call(batch_size,
  num_samples), len(indices))` examples (each drawn `num_samples` times),
  the last padded by repeating its final example. Example i's noise comes
  from `purpose` folded with indices[i], whatever the batch.
  `progress(done_images, total_images)` follows the batches,
  `step_progress(done_steps, total_steps)` the sampler within each.
  Returns the Draw as NumPy float32 arrays, on every host.
  """
  size = padded_batch_size(examples_per_call(batch_size, num_samples),
                          len(indices))
  outputs = []
  for start in range(0, len(indices), size):
    chunk = slice(start, start + size)
    n = len(indices[chunk])
    pad = lambda a, n=n: np.concatenate([a, np.repeat(a[-1:], size - n, 0)])
    local = {"x": pad(x_known[chunk]), "mask": pad(mask[chunk]),
             "index": pad(np.asarray(indices[chunk]))}
    local = {k: v[_process_rows(size)] for k, v in local.items()}
    batch = parallel.global_batch(local, inference.mesh)
    out = draw(inference, batch["x"], batch["mask"], batch["index"], seed,
               purpose, num_samples, progress=step_progress)
    outputs.append(jax.tree.map(lambda a, n=n: a[:n], fetch(out)))
    if progress is not None:
      progress((start + n) * num_samples, len(indices) * num_samples)
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def _process_rows(global_size: int) -> slice:
  """This process's rows of a global batch (processes hold equal slices)."""
  local = parallel.local_batch_size(global_size)
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def fetch(tree):
  """Global arrays (sharded over all hosts) as NumPy arrays on every host."""
  return multihost_utils.process_allgather(tree, tiled=True)
