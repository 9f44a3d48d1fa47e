"""The Gaussian diffusion process: forward noising, posterior, x_0 from eps.

Notation follows Ho et al. (2020) with guided-diffusion's 0-based time index:
table[t] for t = 0..T-1 belongs to the paper's step t + 1, so
  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),
  abar_t = prod_{s<=t} alpha_s.
All tables are computed in float64 from the betas and stored in float32, so
quantities such as 1 - abar_t keep their digits when abar_t is within 1e-6 of 1
(the paper's schedule starts at beta = 1e-6).

Inpainting conventions: images float32 in [-1, 1], NHWC; masks (N, H, W, 1)
with 1 = the pixel is MISSING (to be inpainted), 0 = known.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ffc_ddpm.diffusion import schedules

NOISE_CONDITIONINGS = ("abar", "timestep")
# What the condition holds in the hole (`inpainting_condition`).
PREFILLS = ("zeros", "harmonic")
HARMONIC_ITERATIONS = 16  # red-black sweeps per pyramid level
SOR_OMEGA = 1.8  # over-relaxation of each sweep


@flax.struct.dataclass
class Diffusion:
  """Float32 tables of a (possibly respaced) process, indexed by t in [0, T).

  Build it with `from_config` or `from_betas`; it is an immutable pytree, so it
  can be closed over or passed through `jax.jit`.
  """
  betas: jax.Array
  log_betas: jax.Array
  alphas_cumprod: jax.Array  # abar_t
  alphas_cumprod_prev: jax.Array  # abar_{t-1}, with abar_{-1} = 1
  one_minus_alphas_cumprod: jax.Array
  one_minus_alphas_cumprod_prev: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array
  sqrt_recipm1_alphas_cumprod: jax.Array
  posterior_variance: jax.Array  # beta-tilde_t (Ho et al. Eq. 7)
  posterior_log_variance_clipped: jax.Array  # log beta-tilde, t = 0 -> t = 1
  posterior_mean_coef1: jax.Array  # multiplies x_0 (Ho et al. Eq. 7)
  posterior_mean_coef2: jax.Array  # multiplies x_t
  timestep_map: jax.Array  # int32: original step of each (respaced) step

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def _float64_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
  """Every table of `Diffusion` except timestep_map, in float64."""
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  # 1 - abar as a sum of logs keeps its digits when abar is within 1e-7 of 1.
  one_minus = -np.expm1(np.cumsum(np.log1p(-betas)))
  one_minus_prev = np.append(0.0, one_minus[:-1])
  post_var = betas * one_minus_prev / one_minus
  return {
      "betas": betas,
      "log_betas": np.log(betas),
      "alphas_cumprod": abar,
      "alphas_cumprod_prev": abar_prev,
      "one_minus_alphas_cumprod": one_minus,
      "one_minus_alphas_cumprod_prev": one_minus_prev,
      "sqrt_alphas_cumprod": np.sqrt(abar),
      "sqrt_one_minus_alphas_cumprod": np.sqrt(one_minus),
      "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
      "sqrt_recipm1_alphas_cumprod": np.sqrt(one_minus / abar),
      "posterior_variance": post_var,
      "posterior_log_variance_clipped": np.log(
          np.append(post_var[1:2], post_var[1:]) if len(betas) > 1
          else betas),
      "posterior_mean_coef1": betas * np.sqrt(abar_prev) / one_minus,
      "posterior_mean_coef2": one_minus_prev * np.sqrt(1.0 - betas) / one_minus,
  }


def from_betas(betas: np.ndarray, timestep_map: np.ndarray | None = None
               ) -> Diffusion:
  """The process of float64 `betas`; timestep_map defaults to 0..T-1."""
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1 or betas.size == 0 or not (
      np.all(betas > 0) and np.all(betas <= 1)):
    raise ValueError("betas: expected a non-empty 1-D array in (0, 1], got "
                     f"shape {betas.shape}, range [{betas.min(initial=0)}, "
                     f"{betas.max(initial=0)}]")
  if timestep_map is None:
    timestep_map = np.arange(betas.size)
  if np.shape(timestep_map) != betas.shape:
    raise ValueError(f"timestep_map: expected shape {betas.shape}, got "
                     f"{np.shape(timestep_map)}")
  tables = {k: jnp.asarray(v, jnp.float32)
            for k, v in _float64_tables(betas).items()}
  return Diffusion(timestep_map=jnp.asarray(timestep_map, jnp.int32), **tables)


def from_config(diffusion_config, respacing: Any = None,
                spacing: str = "uniform") -> Diffusion:
  """The process of `config.diffusion`, respaced when `respacing` is given.

  Args:
    diffusion_config: `config.diffusion` (schedule, num_steps, beta_start,
      beta_end).
    respacing: None, or `space_timesteps` section counts ("250", "ddim50",
      [10, 15, 20], 100): the subset of steps to keep.
    spacing: how an int `respacing` count is spread over the steps
      (`schedules.spaced_timesteps`); other spacings than "uniform" take an
      int count only.
  """
  c = diffusion_config
  try:
    betas = schedules.get_betas(c.schedule, c.num_steps, c.beta_start,
                                c.beta_end)
    if respacing is None:
      return from_betas(betas)
    if spacing == "uniform":
      use = schedules.space_timesteps(c.num_steps, respacing)
    elif isinstance(respacing, (int, np.integer)):
      use = schedules.spaced_timesteps(betas, int(respacing), spacing)
    else:
      raise ValueError(f"respacing {respacing!r}: spacing {spacing!r} takes "
                       "one step count")
    return from_betas(*schedules.respace(betas, use))
  except ValueError as e:
    raise ValueError(f"config.diffusion: {e}") from None


def at(table: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """table[t] shaped to broadcast against an array of rank `ndim`.

  t is a scalar (one step for the whole batch) or (N,) (one per example).
  """
  values = table[t]
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def diffuse(x0: jax.Array, sqrt_abar: jax.Array, sqrt_one_minus_abar: jax.Array,
            noise: jax.Array) -> jax.Array:
  """x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (Ho et al. Eq. 4)."""
  return sqrt_abar * x0 + sqrt_one_minus_abar * noise


def q_sample(diffusion: Diffusion, x0: jax.Array, t: jax.Array,
             noise: jax.Array) -> jax.Array:
  """A draw from q(x_t | x_0) with the given standard normal noise."""
  return diffuse(x0, at(diffusion.sqrt_alphas_cumprod, t, x0.ndim),
                 at(diffusion.sqrt_one_minus_alphas_cumprod, t, x0.ndim),
                 noise)


def q_posterior_mean_variance(diffusion: Diffusion, x0: jax.Array,
                              x_t: jax.Array, t: jax.Array):
  """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0).

  Ho et al. Eq. 6-7. The log-variance at t = 0 (where the variance is 0) is
  that of t = 1, as in guided-diffusion.
  """
  n = x_t.ndim
  mean = (at(diffusion.posterior_mean_coef1, t, n) * x0 +
          at(diffusion.posterior_mean_coef2, t, n) * x_t)
  variance = jnp.broadcast_to(at(diffusion.posterior_variance, t, n),
                              x_t.shape)
  log_variance = jnp.broadcast_to(
      at(diffusion.posterior_log_variance_clipped, t, n), x_t.shape)
  return mean, variance, log_variance


def predict_x0_from_eps(diffusion: Diffusion, x_t: jax.Array, t: jax.Array,
                        eps: jax.Array, clip: bool = False) -> jax.Array:
  """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1]
  when `clip` (the data range; keeps early, noisy predictions in bounds)."""
  n = x_t.ndim
  x0 = (at(diffusion.sqrt_recip_alphas_cumprod, t, n) * x_t -
        at(diffusion.sqrt_recipm1_alphas_cumprod, t, n) * eps)
  return jnp.clip(x0, -1.0, 1.0) if clip else x0


def predict_eps_from_x0(diffusion: Diffusion, x_t: jax.Array, t: jax.Array,
                        x0: jax.Array) -> jax.Array:
  """The eps that maps x_0 to x_t; DDIM re-derives it from a clipped x_0."""
  n = x_t.ndim
  return ((at(diffusion.sqrt_recip_alphas_cumprod, t, n) * x_t - x0) /
          at(diffusion.sqrt_recipm1_alphas_cumprod, t, n))


def split_model_output(model_output: jax.Array, channels: int,
                       learn_sigma: bool) -> tuple[jax.Array, jax.Array | None]:
  """(eps, v): v is the variance interpolation value of learn_sigma models."""
  want = 2 * channels if learn_sigma else channels
  if model_output.shape[-1] != want:
    raise ValueError(
        f"model output has {model_output.shape[-1]} channels: expected {want} "
        f"(model.learn_sigma={learn_sigma}, image channels {channels})")
  if not learn_sigma:
    return model_output, None
  return model_output[..., :channels], model_output[..., channels:]


def learned_range_log_variance(diffusion: Diffusion, v: jax.Array,
                               t: jax.Array) -> jax.Array:
  """log sigma^2 = f log beta_t + (1 - f) log beta-tilde_t, f = (v + 1) / 2.

  Nichol & Dhariwal (2021) Eq. 15: v in [-1, 1] spans beta-tilde_t..beta_t.
  """
  frac = (v + 1.0) / 2.0
  return (frac * at(diffusion.log_betas, t, v.ndim) +
          (1.0 - frac) * at(diffusion.posterior_log_variance_clipped, t,
                            v.ndim))


def p_mean_variance(diffusion: Diffusion, model_output: jax.Array,
                    x_t: jax.Array, t: jax.Array, *, learn_sigma: bool,
                    clip_denoised: bool) -> dict[str, jax.Array]:
  """p(x_{t-1} | x_t) of an eps-prediction model, and its x_0 estimate.

  The mean is the posterior mean at the predicted x_0 (Ho et al. Eq. 11 in
  its x_0 form). The variance is learned (learn_sigma, Nichol & Dhariwal's
  learned range) or fixed to beta-tilde_t, the posterior variance ("fixed
  small", better than beta_t with few respaced steps).

  Returns:
    dict with "mean", "variance", "log_variance", "pred_x0" (x_t's shape) and
    "eps" (the model's noise prediction).
  """
  eps, v = split_model_output(model_output, x_t.shape[-1], learn_sigma)
  pred_x0 = predict_x0_from_eps(diffusion, x_t, t, eps, clip=clip_denoised)
  mean, variance, log_variance = q_posterior_mean_variance(
      diffusion, pred_x0, x_t, t)
  if v is not None:
    log_variance = learned_range_log_variance(diffusion, v, t)
    variance = jnp.exp(log_variance)
  return {"mean": mean, "variance": variance, "log_variance": log_variance,
          "pred_x0": pred_x0, "eps": eps}


def model_noise_level(diffusion: Diffusion, t: jax.Array,
                      noise_conditioning: str) -> jax.Array:
  """What the network sees of step t, float32 with t's shape.

  "timestep": the ORIGINAL integer step timestep_map[t] (guided-diffusion
  with rescale_timesteps=False), as a float; "abar": abar_t itself (the
  paper, after Palette/WaveGrad), which does not depend on the schedule.
  """
  if noise_conditioning == "timestep":
    return diffusion.timestep_map[t].astype(jnp.float32)
  if noise_conditioning == "abar":
    return diffusion.alphas_cumprod[t]
  raise ValueError(f"model.noise_conditioning={noise_conditioning!r}: "
                   f"expected one of {', '.join(NOISE_CONDITIONINGS)}")


def _neighbour_mean(x: jax.Array) -> jax.Array:
  """The mean of each pixel's four neighbours, edges replicated (a
  zero-flux border, so the fill meets the frame at a right angle)."""
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  return (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2]
          + p[:, 1:-1, 2:]) / 4


def harmonic_fill(x: jax.Array, mask: jax.Array,
                  iterations: int = HARMONIC_ITERATIONS) -> jax.Array:
  """x with its hole (mask = 1) filled by the harmonic interpolant of the
  known pixels: the solution of Laplace's equation (each hole pixel the mean
  of its four neighbours) with the known pixels fixed, the membrane that
  biharmonic inpainting's thin plate stiffens.

  Solved coarse to fine (cascadic multigrid, Bornemann & Deuflhard 1996):
  known pixels are averaged down a pyramid of 2x2 blocks (a block is known
  when any of its pixels is), the coarsest level starts at zero, and each
  finer level starts from the coarser solution resized up and relaxes
  `iterations` red-black sweeps of successive over-relaxation. Within 0.003
  of the exact solution on average for a 32x32 hole at 64x64 (the tests
  solve the sparse system with SciPy); a few 3x3 stencils per level, so it
  runs inside the jitted step. A hole with no known pixel is filled with 0.
  """
  known = (mask < 0.5).astype(x.dtype)
  values = jnp.where(known > 0, x, 0)
  levels = [(values, known)]
  while all(d % 2 == 0 and d > 1 for d in levels[-1][0].shape[1:3]):
    v, w = levels[-1]
    n, h, wd, _ = v.shape
    pool = lambda a: a.reshape(n, h // 2, 2, wd // 2, 2, -1).sum((2, 4))
    weight = pool(w)
    levels.append((pool(v * w) / jnp.maximum(weight, 1),
                   jnp.minimum(weight, 1)))
  solution = jnp.zeros_like(levels[-1][0])
  for v, w in reversed(levels):
    solution = jax.image.resize(solution, v.shape, "linear")
    solution = jnp.where(w > 0, v, solution)
    h, wd = v.shape[1:3]
    red = (jnp.arange(h)[:, None] + jnp.arange(wd)[None, :]) % 2 == 0
    def sweep(_, solution, w=w, red=red):
      for colour in (red, ~red):
        step = SOR_OMEGA * (_neighbour_mean(solution) - solution)
        solution = jnp.where((w == 0) & colour[None, :, :, None],
                             solution + step, solution)
      return solution
    solution = jax.lax.fori_loop(0, iterations, sweep, solution)
  return solution


def inpainting_condition(x_known: jax.Array, mask: jax.Array,
                         prefill: str = "zeros") -> jax.Array:
  """The conditional model's extra input: concat(known image, mask).

  The known image is x_known outside the hole (mask = 1) and, inside it,
  zeros (the paper, Palette) or `harmonic_fill` of the known pixels
  ("harmonic"), so the network learns what a smooth fill misses. Either
  way the ground truth of the hole never leaks into the condition. Shape
  (N, H, W, C + 1).
  """
  if prefill == "zeros":
    known = jnp.where(mask > 0.5, jnp.zeros_like(x_known), x_known)
  elif prefill == "harmonic":
    known = harmonic_fill(x_known, mask)
  else:
    raise ValueError(f"config.diffusion.prefill={prefill!r}: expected one "
                     f"of {', '.join(PREFILLS)}")
  return jnp.concatenate([known, mask.astype(x_known.dtype)], axis=-1)
