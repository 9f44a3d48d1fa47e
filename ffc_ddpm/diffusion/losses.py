"""The training objective: eps-prediction over the region to be inpainted.

L = || eps - eps_theta(x_t, noise level, condition) ||^2 averaged over the
masked values only (the paper's masked eps-MSE; Ho et al.'s L_simple
restricted to the hole), with L1 and a full-image loss as options. Two
normalisations of the masked sum: by the hole's values (each example's mean
over its hole, the default) or by all values (Palette's `mse_loss(mask *
noise, mask * prediction)`, so larger holes weigh more).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from ffc_ddpm.diffusion import process

KINDS = ("mse", "l1")
REGIONS = ("hole", "full")
NORMALISATIONS = ("hole", "all")
CONDITIONINGS = ("concat", "none")


def masked_loss(target: jax.Array, prediction: jax.Array, mask: jax.Array,
                kind: str = "mse", region: str = "hole",
                normalisation: str = "hole") -> jax.Array:
  """Per-example loss, shape (N,): sum_region e / D.

  e is the squared (mse) or absolute (l1) error; the region is the masked
  (mask = 1) values ("hole") or every value ("full"). D is the number of
  values in the region ("hole": each example's mean over its region, so small
  and large holes weigh the same; an example without a hole scores 0) or all
  H x W x C values ("all": Palette's mean over all values). With region
  "full" both are the plain mean.
  """
  if kind == "mse":
    error = jnp.square(target - prediction)
  elif kind == "l1":
    error = jnp.abs(target - prediction)
  else:
    raise ValueError(f"diffusion.loss={kind!r}: expected one of "
                     f"{', '.join(KINDS)}")
  if region not in REGIONS:
    raise ValueError(f"diffusion.loss_region={region!r}: expected one of "
                     f"{', '.join(REGIONS)}")
  if normalisation not in NORMALISATIONS:
    raise ValueError(f"diffusion.loss_normalisation={normalisation!r}: "
                     f"expected one of {', '.join(NORMALISATIONS)}")
  axes = tuple(range(1, error.ndim))
  weight = jnp.ones_like(error) if region == "full" else jnp.broadcast_to(
      mask, error.shape).astype(error.dtype)
  count = (jnp.sum(weight, axis=axes) if normalisation == "hole" else
           weight[0].size)
  return jnp.sum(error * weight, axis=axes) / jnp.maximum(count, 1.0)


def sample_timesteps(diffusion: process.Diffusion, key: jax.Array, n: int):
  """t ~ U{0..T-1}: (noise level = original step, sqrt abar, sqrt(1-abar))."""
  t = jax.random.randint(key, (n,), 0, diffusion.num_steps)
  return (process.model_noise_level(diffusion, t, "timestep"),
          diffusion.sqrt_alphas_cumprod[t],
          diffusion.sqrt_one_minus_alphas_cumprod[t])


def sample_continuous_abar(diffusion: process.Diffusion, key: jax.Array,
                           n: int):
  """abar drawn between neighbouring steps, as Palette and WaveGrad do.

  t ~ U{1..T-1}, abar ~ U(abar_t, abar_{t-1}) (Palette's indices), so the
  network sees a continuum of noise levels covering [abar_{T-1}, abar_0],
  exactly the levels any sampler visits. 1 - abar is interpolated from its
  own table to keep its digits near abar = 1.

  Returns:
    (abar, sqrt abar, sqrt(1 - abar)), each of shape (n,).
  """
  if diffusion.num_steps < 2:
    raise ValueError("continuous abar needs diffusion.num_steps >= 2")
  t_key, u_key = jax.random.split(key)
  t = jax.random.randint(t_key, (n,), 1, diffusion.num_steps)
  u = jax.random.uniform(u_key, (n,), jnp.float32)
  lerp = lambda table: table[t] + u * (table[t - 1] - table[t])
  abar = lerp(diffusion.alphas_cumprod)
  one_minus = lerp(diffusion.one_minus_alphas_cumprod)
  return abar, jnp.sqrt(abar), jnp.sqrt(one_minus)


def sample_noise_level(diffusion, key, n, noise_conditioning):
  """The noise level the network sees, and the matching x_t scales."""
  if noise_conditioning == "abar":
    return sample_continuous_abar(diffusion, key, n)
  if noise_conditioning == "timestep":
    return sample_timesteps(diffusion, key, n)
  raise ValueError(f"model.noise_conditioning={noise_conditioning!r}: "
                   f"expected one of {', '.join(process.NOISE_CONDITIONINGS)}")


def check_loss_options(conditioning: str, region: str) -> None:
  """Rejects conditioning/region pairs that would train nothing useful."""
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"diffusion.conditioning={conditioning!r}: expected one "
                     f"of {', '.join(CONDITIONINGS)}")
  if conditioning == "concat" and region == "full":
    raise ValueError(
        "diffusion.loss_region='full' with conditioning='concat': the known "
        "pixels of x_t are clean (Palette), so their noise cannot be "
        "predicted; use 'hole', or 'full' with conditioning='none'")


def inpainting_loss(apply_fn: Callable, params, diffusion: process.Diffusion,
                    x0: jax.Array, mask: jax.Array, key: jax.Array, *,
                    conditioning: str = "concat", prefill: str = "zeros",
                    noise_conditioning: str = "abar", kind: str = "mse",
                    region: str | None = None, normalisation: str = "hole"):
  """The batch's training loss and per-example diagnostics.

  One noise level and one eps per example; x_t = sqrt(abar) x_0 +
  sqrt(1 - abar) eps. With conditioning "concat" (Palette) the known pixels
  of x_t are replaced by the clean x_0, exactly as the samplers do at every
  step, and the network also gets `inpainting_condition(x0, mask, prefill)`.
  With "none" (an unconditional model for RePaint) it sees x_t alone.

  Args:
    apply_fn: `apply_fn(params, x_t, noise_level, cond) -> eps`, 3 channels
      (learn_sigma models are for import only and cannot be trained here).
    x0: clean images (N, H, W, 3) in [-1, 1]; mask: (N, H, W, 1), 1 = hole.
    key: the step's key; every example's draws derive from it.
    region: "hole" (the paper) or "full"; None picks "hole" for "concat" and
      "full" for "none", whose network never sees the mask. "full" with
      "concat" is rejected (the clean known pixels hide their noise).
    normalisation: "hole" (each example's mean over its region) or "all"
      (Palette: divided by all values); see `masked_loss`.

  Returns:
    (scalar mean loss, {"loss": per-example (N,), "noise_level": (N,)}).
  """
  if region is None:
    region = "hole" if conditioning == "concat" else "full"
  check_loss_options(conditioning, region)
  level_key, noise_key = jax.random.split(key)
  n = x0.shape[0]
  noise_level, sqrt_abar, sqrt_one_minus = sample_noise_level(
      diffusion, level_key, n, noise_conditioning)
  noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
  per_image = (n,) + (1,) * (x0.ndim - 1)
  x_t = process.diffuse(x0, sqrt_abar.reshape(per_image),
                        sqrt_one_minus.reshape(per_image), noise)
  cond = None
  if conditioning == "concat":
    x_t = jnp.where(mask > 0.5, x_t, x0)
    cond = process.inpainting_condition(x0, mask, prefill)
  output = apply_fn(params, x_t, noise_level, cond)
  if output.shape != x0.shape:
    raise ValueError(
        f"model output shape {output.shape}: expected {x0.shape} (eps only; "
        "learn_sigma models can be imported for sampling but not trained)")
  per_example = masked_loss(noise, output, mask, kind, region, normalisation)
  return jnp.mean(per_example), {"loss": per_example,
                                 "noise_level": noise_level}
