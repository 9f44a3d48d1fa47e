"""Helpers for the model tests: tiny configs, random weights, fast jit."""

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ffc_ddpm import configuration, models

DEFAULT_CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "default.py"
# Correctness, not speed, is under test: skip XLA's slow CPU optimisations.
fast_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def small_config(**overrides):
  """configs/default.py's model (FFC U-Net on abar), shrunk to 16x16."""
  c = configuration.load_config(str(DEFAULT_CONFIG)).model
  c.image_size = 16
  c.model_channels = 32
  c.channel_mult = (1, 2)
  c.num_res_blocks = 1
  c.attention_resolutions = (8,)
  c.num_head_channels = 16
  c.ffc.num_blocks = 1
  c.ffc.decoder_blocks = 1
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = c
    for name in parents:
      node = node[name]
    node[leaf] = value
  return c


def param_shapes(model, model_config):
  return jax.eval_shape(
      lambda: models.init_params(model, model_config, jax.random.key(0)))


def random_params(shapes, seed):
  """Random weights of the given shapes; none zero, so every path shows.

  Kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.2^2), the rest
  ~ N(0, 0.2^2).
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(shapes).items():
    noise = rng.standard_normal(leaf.shape)
    if path[-1] == "kernel":
      value = noise / math.sqrt(math.prod(leaf.shape[:-1]))
    elif path[-1] == "scale":
      value = 1 + 0.2 * noise
    else:
      value = 0.2 * noise
    flat[path] = jnp.asarray(value, jnp.float32)
  return traverse_util.unflatten_dict(flat)


def relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()
