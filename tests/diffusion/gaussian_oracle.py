"""Exact noise predictors for Gaussian data, standing in for a trained network.

For x_0 ~ N(MEAN, STD^2) independently per value and x_t = sqrt(a) x_0 +
sqrt(1 - a) eps, the best (MMSE) eps-predictor is linear:
  E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) MEAN) / (a STD^2 + 1 - a).
Shared by the sampler tests and the 8-device subprocess they start.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ffc_ddpm.diffusion import process, samplers, schedules

MEAN, STD = 0.3, 0.2
IMAGE_SHAPE = (8, 8, 3)
SEED = 1234


def original_abar(schedule: str, num_steps: int) -> np.ndarray:
  """abar of the unrespaced schedule, float64, straight from the betas."""
  return np.cumprod(1.0 - schedules.get_betas(schedule, num_steps, 1e-6,
                                               1e-2))


def gaussian_eps_fn(noise_conditioning: str, abar_table=None,
                    mean: float = MEAN, std: float = STD):
  """apply_fn(params, x_t, noise_level, cond) -> E[eps | x_t] for the data.

  The noise level is abar itself, or an original timestep looked up in
  `abar_table` -- so a sampler feeding the wrong level gets wrong samples.
  """
  table = None if abar_table is None else jnp.asarray(abar_table,
                                                     jnp.float32)

  def apply_fn(params, x_t, noise_level, cond):
    del params, cond
    if noise_conditioning == "timestep":
      abar = table[noise_level.astype(jnp.int32)]
    else:
      abar = noise_level
    abar = abar.reshape(-1, 1, 1, 1)
    return (jnp.sqrt(1.0 - abar) * (x_t - jnp.sqrt(abar) * mean) /
            (abar * std**2 + 1.0 - abar))

  return apply_fn


def inpainting_batch(n: int, start: int = 0):
  """Examples start..start+n-1: known images, centre-ish masks, indices.

  Each example depends on its global index only, like a real data set.
  """
  indices = np.arange(start, start + n)
  images, masks = [], []
  for i in indices:
    rng = np.random.default_rng([SEED, int(i)])
    images.append(rng.uniform(-1, 1, IMAGE_SHAPE).astype(np.float32))
    mask = np.zeros(IMAGE_SHAPE[:2] + (1,), np.float32)
    top = int(rng.integers(0, 4))
    mask[top:top + 4, 2:6] = 1.0
    masks.append(mask)
  return np.stack(images), np.stack(masks), indices


def concat_sampler(method: str = "ddpm", eta: float = 0.0, num_chunks=3):
  """A conditional sampler over 13 of 200 cosine steps (3 chunks: 5, 5, 3)."""
  diffusion = process.from_betas(*schedules.respace(
      schedules.get_betas("cosine", 200),
      schedules.space_timesteps(200, "13")))
  options = samplers.SamplerOptions(
      method=method, conditioning="concat", noise_conditioning="abar",
      clip_denoised=True, eta=eta)
  return samplers.Sampler(diffusion, gaussian_eps_fn("abar", None),
                          options, num_chunks)


def sample_batch(sampler, n: int, start: int = 0, put=lambda a: a):
  """Inpaints examples start..start+n-1; `put` places inputs on devices."""
  x_known, mask, indices = inpainting_batch(n, start)
  keys = samplers.example_keys(jax.random.key(SEED), indices)
  return sampler(None, put(x_known), put(mask), put(keys))
