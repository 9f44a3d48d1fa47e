"""The network and its inpainting sampler as `jax.export` artifacts:
serialized StableHLO for CPU, CUDA and TPU, lowered on this machine (no
device of the platform needed) and run with jax alone.

Two functions are exported, each the library's own code traced, with the
weights as constants, so a file is the whole model:
- "denoiser": (x_t, noise_level, masked_image, mask) -> the network's output
  (eps; eps and v with model.learn_sigma), the call every sampler step makes
  (`inference.inference_apply` on `process.inpainting_condition`); an
  unconditional model takes (x_t, noise_level). noise_level is abar_t for
  model.noise_conditioning "abar", the original step for "timestep".
- "sampler": (image, mask, key) -> (samples (N, K, H, W, 3), their mean,
  their std): `inference.draw` with the keys the inpaint command draws
  from a seed. key is `jax.random.key_data(jax.random.key(seed))`, from
  which example i's keys are drawn as `inpaint.Inpainter` draws photo i's.
The batch dimension is symbolic, so one artifact serves any batch size.

Lowering is also a check: `jax.export` refuses host callbacks and custom
calls without a compatibility guarantee, and a platform without a lowering
rule for an operation fails, so `lower` tells whether code runs there.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp

from ffc_ddpm import files, inference, models
from ffc_ddpm.diffusion import process, samplers

PLATFORMS = ("cpu", "cuda", "tpu")
FORMAT = "ffc_ddpm.export.v1"
METADATA_FILE = "export.json"
SUFFIX = ".jaxexport"
CHANNELS = 3  # RGB
BATCH = "b"  # the symbolic batch dimension


def lower(fn: Callable, args: Sequence[Any], platforms: Sequence[str]
          ) -> jax_export.Exported:
  """`fn` (jitted) lowered for `platforms` (one artifact serving each)
  with `args`' shapes; raises on anything that would not run there."""
  return jax_export.export(fn, platforms=tuple(platforms))(*args)


# ---------------------------------------------------------- what is exported
def denoiser_function(config, model) -> Callable:
  """(params, x_t, noise_level[, masked_image, mask]) -> float32 output."""
  apply = inference.inference_apply(model)
  if config.diffusion.conditioning == "concat":
    return lambda params, x, level, masked, mask: apply(
        params, x, level,
        process.inpainting_condition(masked, mask, config.diffusion.prefill)
    ).astype(jnp.float32)
  return lambda params, x, level: apply(params, x, level, None).astype(
      jnp.float32)


def sampler_function(loaded: inference.Inference, num_samples: int
                     ) -> Callable:
  """(params, image, mask, key data) -> (samples, mean, std) of K samples
  of each example (`inference.draw`), keyed as `inpaint.Inpainter` keys
  them."""

  def sample(params, image, mask, key_data):
    drawn = inference.draw(dataclasses.replace(loaded, params=params),
                           image, mask, jnp.arange(image.shape[0]),
                           jax.random.wrap_key_data(key_data),
                           inference.Purpose.INPAINT, num_samples)
    return drawn.samples, drawn.mean, drawn.std

  return sample


def input_names(config, name: str) -> tuple[str, ...]:
  if name == "sampler":
    return ("image", "mask", "key")
  if config.diffusion.conditioning == "concat":
    return ("x_t", "noise_level", "masked_image", "mask")
  return ("x_t", "noise_level")


OUTPUT_NAMES = {"denoiser": ("output",), "sampler": ("samples", "mean", "std")}


def input_specs(config, name: str) -> list[jax.ShapeDtypeStruct]:
  """The inputs of `name` ("denoiser" or "sampler"), batch symbolic."""
  b, = jax_export.symbolic_shape(BATCH)
  size = config.data.image_size
  image = jax.ShapeDtypeStruct((b, size, size, CHANNELS), jnp.float32)
  mask = jax.ShapeDtypeStruct((b, size, size, 1), jnp.float32)
  if name == "sampler":
    key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    return [image, mask, key]
  level = jax.ShapeDtypeStruct((b,), jnp.float32)
  return [image, level, image, mask][:len(input_names(config, name))]


def functions(config, loaded: inference.Inference, num_samples: int
              ) -> dict[str, Callable]:
  """{"denoiser", "sampler"}: each `(params, *inputs)`."""
  model = models.create_model(config.model)
  return {"denoiser": denoiser_function(config, model),
          "sampler": sampler_function(loaded, num_samples)}


# ----------------------------------------------------------------- writing
def _avals(names: Sequence[str], avals) -> dict[str, dict]:
  """{name: {"shape": [b, 64, ...], "dtype"}}, symbolic dimensions as text."""
  return {n: {"shape": [d if isinstance(d, int) else str(d)
                        for d in a.shape], "dtype": str(a.dtype)}
          for n, a in zip(names, avals)}


def settings(config, num_samples: int) -> dict:
  """The model and sampler settings an artifact was traced with."""
  options = dataclasses.asdict(samplers.options_from_config(config))
  return {"image_size": config.data.image_size,
          "model": json.loads(config.model.to_json_best_effort()),
          "diffusion": json.loads(config.diffusion.to_json_best_effort()),
          "sampler": {**options, "num_steps": config.eval.num_steps,
                      "timestep_spacing": config.eval.timestep_spacing,
                      "num_samples": num_samples}}


def export_model(config, loaded: inference.Inference, out_dir: str,
                 num_samples: int = 8,
                 platforms: Sequence[str] = PLATFORMS) -> dict:
  """Writes OUT_DIR/{denoiser,sampler}.PLATFORM.jaxexport of `loaded`'s
  weights and, last, OUT_DIR/export.json describing them; returns it."""
  os.makedirs(out_dir, exist_ok=True)
  meta = {"format": FORMAT, "jax_version": jax.__version__,
          "weights": loaded.weights, "step": loaded.step,
          **settings(config, num_samples),
          "key": "jax.random.key_data(jax.random.key(seed))",
          "functions": {}}
  for name, fn in functions(config, loaded, num_samples).items():
    jitted = jax.jit(functools.partial(fn, loaded.params))
    written = {}
    for platform in platforms:
      exported = lower(jitted, input_specs(config, name), [platform])
      blob = bytes(exported.serialize())
      written[platform] = {"file": f"{name}.{platform}{SUFFIX}",
                           "bytes": len(blob),
                           "sha256": hashlib.sha256(blob).hexdigest()}
      with files.atomic_write(os.path.join(out_dir, written[platform][
          "file"]), "wb") as f:
        f.write(blob)
    meta["functions"][name] = {
        "inputs": _avals(input_names(config, name), exported.in_avals),
        "outputs": _avals(OUTPUT_NAMES[name], exported.out_avals),
        "files": written}
  files.write_json(os.path.join(out_dir, METADATA_FILE), meta, indent=2)
  return meta
