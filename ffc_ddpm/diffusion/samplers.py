"""Samplers: DDPM, DDIM, RePaint and DPM-Solver++ as jitted `lax.scan` loops.

Every sampler walks a precomputed step table, one row per step: a reverse
(denoising) step at t, a forward re-noising step to t (RePaint's jumps back
in time), or a no-op that pads the table to equal chunks. The scan runs in a
few equal chunks, each the same jitted call, so a progress callback can
report between chunks without breaking the compiled loop.

A reverse step is the same for every sampler but its last line: the
known-region projection (`KnownRegion`), one network call, the model's x_0
and eps (`process.p_mean_variance`), then the sampler's own update from x_t
to the previous step (`ddpm_update`, `ddim_update`, `dpm_solver_update`).
The scan carries x_t and the x_0 prediction of the last network call, which
the multistep DPM-Solver++ reuses.

Inpainting, at every reverse step, before the network is called
(`KnownRegion`, one constraint for every sampler):
- conditioning "concat" (Palette): the known pixels of x_t are replaced by
  the clean known pixels, and the network also sees
  `inpainting_condition(x_known, mask, prefill)` -- exactly as in training;
- conditioning "none" (RePaint): the known pixels of x_t are replaced by a
  freshly forward-noised copy of the original, q(x_t | x_known).
The hole starts from pure noise; the result is clipped to [-1, 1] and the
known pixels are pasted back bit-exactly. x_known is never read in the hole.

Determinism: all noise of example i comes from keys[i] (see `example_keys`),
so an image gets the same result in a batch of 1 or 64, on 1 device or 8.
"""

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ffc_ddpm.diffusion import process

SAMPLERS = ("ddpm", "ddim", "repaint", "dpm_solver")
CONDITIONINGS = ("concat", "none")

# Row kinds of a step table (branch indices of the scan body).
SKIP, REVERSE, FORWARD = 0, 1, 2

Progress = Callable[[int, int], None]


# ------------------------------------------------------------ randomness
def example_keys(key: jax.Array, global_indices) -> jax.Array:
  """One key per example: `key` folded with the example's global index."""
  indices = jnp.asarray(global_indices, jnp.uint32)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def per_example_normal(keys: jax.Array, data, shape: tuple[int, ...]
                       ) -> jax.Array:
  """Standard normal noise (N, *shape); row i depends on keys[i] and data.

  data 0 draws the starting noise, data r + 1 the noise of table row r.
  """
  draw = lambda key: jax.random.normal(jax.random.fold_in(key, data), shape)
  return jax.vmap(draw)(keys)


# ----------------------------------------------------------- step tables
def repaint_times(t_T: int, jump_length: int, jump_n_sample: int
                  ) -> np.ndarray:
  """RePaint's time sequence (Lugmayr et al. 2022, Alg. 1 and Sec. 4.2).

  Walks down from t_T - 1 to -1; after reaching each multiple j of
  jump_length below t_T - jump_length it jumps back up jump_length steps,
  jump_n_sample - 1 times. A step from t to t - 1 denoises at t; from t to
  t + 1 re-noises to t + 1.
  """
  jumps = {j: jump_n_sample - 1
           for j in range(0, t_T - jump_length, jump_length)}
  t, times = t_T, []
  while t >= 1:
    t -= 1
    times.append(t)
    if jumps.get(t, 0) > 0:
      jumps[t] -= 1
      for _ in range(jump_length):
        t += 1
        times.append(t)
  times.append(-1)
  return np.asarray(times, np.int64)


def step_table(method: str, num_steps: int, jump_length: int = 10,
               jump_n_sample: int = 10) -> dict[str, np.ndarray]:
  """Rows {"kind", "t"} of the sampler's loop over a `num_steps` process."""
  if method != "repaint":
    t = np.arange(num_steps - 1, -1, -1)
    return {"kind": np.full_like(t, REVERSE), "t": t}
  times = repaint_times(num_steps, jump_length, jump_n_sample)
  last, cur = times[:-1], times[1:]
  reverse = cur < last
  return {"kind": np.where(reverse, REVERSE, FORWARD),
          "t": np.where(reverse, last, cur)}


def chunk_table(table: dict[str, np.ndarray], num_chunks: int
                ) -> list[dict[str, np.ndarray]]:
  """The table split into equal chunks, padded with SKIP rows at the end.

  Each row also gets its global "index", which seeds its noise.
  """
  rows = len(table["t"])
  length = math.ceil(rows / max(1, min(num_chunks, rows)))
  padded = length * math.ceil(rows / length)
  pad = lambda a, v: np.concatenate([a, np.full(padded - rows, v, a.dtype)])
  full = {"kind": pad(table["kind"], SKIP), "t": pad(table["t"], 0),
          "index": np.arange(padded)}
  full = {k: v.astype(np.int32) for k, v in full.items()}
  return [{k: v[i:i + length] for k, v in full.items()}
          for i in range(0, padded, length)]


# ---------------------------------------------------------- single steps
def ddpm_update(pmv: dict[str, jax.Array], t: jax.Array, noise: jax.Array
                ) -> jax.Array:
  """x_{t-1} = mean + sigma_t z, with z = 0 at t = 0 (Ho et al. Alg. 2)."""
  sigma = jnp.where(t > 0, jnp.exp(0.5 * pmv["log_variance"]), 0.0)
  return pmv["mean"] + sigma * noise


def ddim_update(diffusion: process.Diffusion, x_t: jax.Array, t: jax.Array,
                pred_x0: jax.Array, eta: float, noise: jax.Array | None
                ) -> jax.Array:
  """One DDIM step (Song et al. 2021, Eq. 12) from x_t to the previous step.

  x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
  sigma^2 = eta^2 beta-tilde_t; eps is re-derived from the (clipped) x_0.
  With eta = 0 the step is deterministic and `noise` may be None.
  """
  n = x_t.ndim
  eps = process.predict_eps_from_x0(diffusion, x_t, t, pred_x0)
  variance = eta**2 * process.at(diffusion.posterior_variance, t, n)
  keep = jnp.maximum(
      process.at(diffusion.one_minus_alphas_cumprod_prev, t, n) - variance,
      0.0)
  x_prev = (jnp.sqrt(process.at(diffusion.alphas_cumprod_prev, t, n)) *
            pred_x0 + jnp.sqrt(keep) * eps)
  if eta == 0:
    return x_prev
  return x_prev + jnp.sqrt(variance) * noise


def dpm_solver_coefficients(diffusion: process.Diffusion
                            ) -> dict[str, jax.Array]:
  """Per-step coefficients of DPM-Solver++(2M) (Lu et al. 2022, Alg. 2).

  With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), the log-SNR
  lambda_t = log(alpha_t / sigma_t) and h_t = lambda_{t-1} - lambda_t, the
  step from t to t - 1 (to the data at t = 0: sigma_{-1} = 0, h_0 = inf):
    "x":  sigma_{t-1} / sigma_t,
    "x0": alpha_{t-1} (1 - e^{-h_t}),
    "correction": 1 / (2 r_t), r_t = h_{t+1} / h_t (the previous step's
      length over this one's); 0 makes the step first order, i.e. DDIM.
  First order are the first step (t = T - 1: no earlier x_0) and, at any
  step count, the last two (our choice; LuChengTHU/dpm-solver's
  `lower_order_final` lowers only the final step, and only below 10 steps):
  into t = 0 (on an evenly respaced grid the longest step in lambda, r << 1,
  where the extrapolation is unstable) and from t = 0 to the data (h = inf,
  where the step returns x_0 itself). Float64 arithmetic, float32 tables.
  """
  alpha = np.asarray(diffusion.sqrt_alphas_cumprod, np.float64)
  sigma = np.asarray(diffusion.sqrt_one_minus_alphas_cumprod, np.float64)
  alpha_prev = np.append(1.0, alpha[:-1])
  sigma_prev = np.append(0.0, sigma[:-1])
  lam = np.log(alpha) - np.log(sigma)
  h = np.append(np.inf, lam[:-1] - lam[1:])
  correction = np.zeros_like(h)
  correction[2:-1] = h[2:-1] / (2.0 * h[3:])
  exp_minus_h = sigma_prev * alpha / (alpha_prev * sigma)
  tables = {"x": sigma_prev / sigma, "x0": alpha_prev * (1.0 - exp_minus_h),
            "correction": correction}
  return {k: jnp.asarray(v, jnp.float32) for k, v in tables.items()}


def dpm_solver_update(coefficients: dict[str, jax.Array], x_t: jax.Array,
                      t: jax.Array, pred_x0: jax.Array, prev_x0: jax.Array
                      ) -> jax.Array:
  """One DPM-Solver++(2M) step (Lu et al. 2022, Alg. 2) from x_t to t - 1.

  x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} (1 - e^{-h_t}) D_t,
  D_t = x0_t + (x0_t - x0_{t+1}) / (2 r_t): this step's data prediction
  x0_t = (x_t - sigma_t eps) / alpha_t (pred_x0; clipped when clip_denoised,
  the thresholding a data prediction admits) extrapolated along lambda with
  the previous step's (prev_x0).
  `coefficients` from `dpm_solver_coefficients`.
  """
  n = x_t.ndim
  d = pred_x0 + process.at(coefficients["correction"], t, n) * (
      pred_x0 - prev_x0)
  return (process.at(coefficients["x"], t, n) * x_t +
          process.at(coefficients["x0"], t, n) * d)


def renoise(diffusion: process.Diffusion, x: jax.Array, t: jax.Array,
            noise: jax.Array) -> jax.Array:
  """One forward step to t: sqrt(1 - beta_t) x + sqrt(beta_t) z (Ho Eq. 2)."""
  beta = diffusion.betas[t]
  return jnp.sqrt(1.0 - beta) * x + jnp.sqrt(beta) * noise


# --------------------------------------------------------------- sampler
@dataclasses.dataclass(frozen=True)
class SamplerOptions:
  """How to sample; field names follow the config they come from."""
  method: str = "ddim"  # eval.sampler
  conditioning: str = "concat"  # diffusion.conditioning
  prefill: str = "zeros"  # diffusion.prefill
  noise_conditioning: str = "abar"  # model.noise_conditioning
  learn_sigma: bool = False  # model.learn_sigma
  clip_denoised: bool = True  # diffusion.clip_denoised
  eta: float = 0.0  # eval.eta (ddim only)
  jump_length: int = 10  # eval.jump_length (repaint only)
  jump_n_sample: int = 10  # eval.jump_n_sample (repaint only)

  def check(self) -> None:
    """One-line ValueError for any unknown name or invalid combination."""
    def fail(field, value, expected):
      raise ValueError(f"config.{field}={value!r}: expected {expected}")
    if self.method not in SAMPLERS:
      fail("eval.sampler", self.method, f"one of {', '.join(SAMPLERS)}")
    if self.conditioning not in CONDITIONINGS:
      fail("diffusion.conditioning", self.conditioning,
           f"one of {', '.join(CONDITIONINGS)}")
    if self.prefill not in process.PREFILLS:
      fail("diffusion.prefill", self.prefill,
           f"one of {', '.join(process.PREFILLS)}")
    if self.noise_conditioning not in process.NOISE_CONDITIONINGS:
      fail("model.noise_conditioning", self.noise_conditioning,
           f"one of {', '.join(process.NOISE_CONDITIONINGS)}")
    if self.method == "repaint" and self.conditioning != "none":
      fail("eval.sampler", self.method, "ddpm, ddim or dpm_solver for a "
           "conditional model (repaint needs diffusion.conditioning='none')")
    if not 0.0 <= self.eta <= 1.0:
      fail("eval.eta", self.eta, "a number in [0, 1]")
    if self.eta and self.method != "ddim":
      fail("eval.eta", self.eta, "0 unless eval.sampler='ddim'")
    if self.method == "repaint" and (self.jump_length < 1 or
                                     self.jump_n_sample < 1):
      fail("eval.jump_length/jump_n_sample",
           (self.jump_length, self.jump_n_sample), "positive integers")


def replace_known(diffusion: process.Diffusion, x: jax.Array, t: jax.Array,
                  x_known: jax.Array | None, mask: jax.Array | None,
                  conditioning: str, noise: jax.Array | None) -> jax.Array:
  """x_t with its known pixels set as the network expects them.

  "concat": the clean known pixels (Palette, as in training); "none": a
  draw from q(x_t | x_known) with `noise` (RePaint, Lugmayr et al. Alg. 1).
  """
  if mask is None:
    return x
  known = x_known
  if conditioning == "none":
    known = process.q_sample(diffusion, x_known, t, noise)
  return jnp.where(mask > 0.5, x, known)


@dataclasses.dataclass(frozen=True)
class KnownRegion:
  """Inpainting's constraint, one for every sampler: how the known pixels
  enter each network call.

  "concat" (Palette): x_t's known pixels are the clean known pixels, and the
  network also sees `inpainting_condition(x_known, mask, prefill)`; "none"
  (RePaint, Lugmayr et al. Alg. 1 lines 5-8): they are a fresh draw from
  q(x_t | x_known), and the network sees x_t alone. Without a mask (plain
  generation) nothing is constrained.
  """
  diffusion: process.Diffusion
  x_known: jax.Array | None
  mask: jax.Array | None
  conditioning: str
  prefill: str = "zeros"  # what the condition holds in the hole

  @property
  def noisy(self) -> bool:
    """Whether `project` draws on noise (q(x_t | x_known))."""
    return self.mask is not None and self.conditioning == "none"

  def condition(self) -> jax.Array | None:
    """The network's extra input ("concat"), or None."""
    if self.mask is None or self.conditioning != "concat":
      return None
    return process.inpainting_condition(self.x_known, self.mask, self.prefill)

  def project(self, x: jax.Array, t: jax.Array, noise: jax.Array | None
              ) -> jax.Array:
    """x_t as the network sees it at step t (see `replace_known`)."""
    return replace_known(self.diffusion, x, t, self.x_known, self.mask,
                         self.conditioning, noise)


def _update_fn(diffusion: process.Diffusion, opts: SamplerOptions):
  """update(x_t, t, pmv, noise, prev_x0) -> x_{t-1}: the sampler's own step.

  pmv: `process.p_mean_variance` of this step's network call; noise: the
  step's N(0, I) draw (None for deterministic updates); prev_x0: the x_0
  prediction of the previous network call.
  """
  if opts.method == "ddim":
    return lambda x, t, pmv, noise, prev_x0: ddim_update(
        diffusion, x, t, pmv["pred_x0"], opts.eta, noise)
  if opts.method == "dpm_solver":
    coefficients = dpm_solver_coefficients(diffusion)
    return lambda x, t, pmv, noise, prev_x0: dpm_solver_update(
        coefficients, x, t, pmv["pred_x0"], prev_x0)
  return lambda x, t, pmv, noise, prev_x0: ddpm_update(pmv, t, noise)


def _scan_chunk(diffusion, apply_fn, opts: SamplerOptions):
  """chunk(params, state, rows, x_known, mask, keys) -> state after the rows.

  state: (x_t, the x_0 prediction of the last network call). Each row draws
  its noise once, (draws, N, H, W, C) from keys and the row index: draw 0
  for the step, the last draw for the known region ("none").
  """
  update = _update_fn(diffusion, opts)
  step_noise = opts.method in ("ddpm", "repaint") or opts.eta > 0

  def chunk(params, state, rows, x_known, mask, keys):
    known = KnownRegion(diffusion, x_known, mask, opts.conditioning,
                        opts.prefill)
    cond = known.condition()
    draws = int(step_noise) + int(known.noisy)

    def reverse(state, t, noise):
      x = known.project(state[0], t, noise[-1] if known.noisy else None)
      level = process.model_noise_level(diffusion, t, opts.noise_conditioning)
      output = apply_fn(params, x, jnp.full((x.shape[0],), level), cond)
      pmv = process.p_mean_variance(
          diffusion, output.astype(jnp.float32), x, t,
          learn_sigma=opts.learn_sigma, clip_denoised=opts.clip_denoised)
      x = update(x, t, pmv, noise[0] if step_noise else None, state[1])
      return x, pmv["pred_x0"]

    def forward(state, t, noise):
      return renoise(diffusion, state[0], t, noise[0]), state[1]

    branches = [lambda state, t, noise: state, reverse]
    if opts.method == "repaint":
      branches.append(forward)

    def body(state, row):
      noise = None
      if draws:
        noise = jnp.moveaxis(per_example_normal(
            keys, row["index"] + 1, (draws,) + state[0].shape[1:]), 1, 0)
      return jax.lax.switch(row["kind"], branches, state, row["t"],
                            noise), None

    return jax.lax.scan(body, state, rows)[0]

  return chunk


@functools.partial(jax.jit, static_argnums=1)
def _start(keys, image_shape):
  """The first state: x_T, pure noise from each example's key, and a zero
  x_0 prediction (no network call yet)."""
  x = per_example_normal(keys, 0, image_shape)
  return x, jnp.zeros_like(x)


@jax.jit
def _finish(x, x_known, mask):
  """Clips to the image range and pastes the known pixels back exactly."""
  x = jnp.clip(x, -1.0, 1.0)
  if mask is None:
    return x
  return jnp.where(mask > 0.5, x, x_known)


class Sampler:
  """`sampler(params, x_known, mask, keys, progress=None, shape=None)`.

  Returns images in [-1, 1] with x_known's shape (or `shape`). x_known (N, H,
  W, C) and mask (N, H, W, 1), 1 = hole, may be None for plain unconditional
  generation (then pass shape=(N, H, W, C)). keys: (N,) typed keys from
  `example_keys`. Inputs may be global arrays sharded over a mesh along the
  batch; the output keeps that layout. progress(done_steps, total_steps) is
  called after every chunk (see `progress_bar`).
  """

  def __init__(self, diffusion: process.Diffusion, apply_fn: Callable,
               options: SamplerOptions, num_chunks: int = 10):
    options.check()
    self.diffusion, self.options = diffusion, options
    table = step_table(options.method, diffusion.num_steps,
                       options.jump_length, options.jump_n_sample)
    self.total_steps = len(table["t"])
    self._chunks = chunk_table(table, num_chunks)
    self._run_chunk = jax.jit(_scan_chunk(diffusion, apply_fn, options),
                              donate_argnums=1)

  def _check_inputs(self, x_known, mask, keys, shape) -> tuple[int, ...]:
    """The (N, H, W, C) to sample, after one-line checks of every input."""
    if (x_known is None) != (mask is None):
      raise ValueError("sampler: give both x_known and mask, or neither")
    if mask is None and (self.options.conditioning == "concat" or
                         self.options.method == "repaint"):
      raise ValueError(
          f"sampler: {self.options.method!r} with conditioning="
          f"{self.options.conditioning!r} inpaints: x_known and mask needed")
    if x_known is not None:
      shape = tuple(x_known.shape)
      if len(shape) != 4 or tuple(mask.shape) != shape[:3] + (1,):
        raise ValueError(f"sampler: x_known {shape} and mask "
                         f"{tuple(mask.shape)}: expected (N, H, W, C) and "
                         "(N, H, W, 1)")
    elif shape is None or len(shape) != 4:
      raise ValueError(f"sampler: shape={shape!r}: expected (N, H, W, C) "
                       "when x_known is None")
    if not (hasattr(keys, "dtype") and jax.dtypes.issubdtype(
        keys.dtype, jax.dtypes.prng_key)) or keys.shape != tuple(shape[:1]):
      raise ValueError(f"sampler: keys: expected ({shape[0]},) typed keys "
                       "from example_keys, got "
                       f"{getattr(keys, 'shape', keys)!r}")
    return tuple(shape)

  def __call__(self, params, x_known, mask, keys,
               progress: Progress | None = None, shape=None) -> jax.Array:
    shape = self._check_inputs(x_known, mask, keys, shape)
    state = _start(keys, shape[1:])
    done = 0
    for rows in self._chunks:
      state = self._run_chunk(params, state, rows, x_known, mask, keys)
      if progress is not None:
        state[0].block_until_ready()
        done = min(done + len(rows["t"]), self.total_steps)
        progress(done, self.total_steps)
    return _finish(state[0], x_known, mask)


def progress_bar(description: str = "sampling") -> Progress:
  """A `progress` callback drawing a tqdm bar (on process 0 only)."""
  bar = None

  def update(done: int, total: int) -> None:
    nonlocal bar
    if bar is None:
      bar = tqdm.tqdm(total=total, desc=description,
                      disable=jax.process_index() > 0)
    bar.update(done - bar.n)
    if done >= total:
      bar.close()

  return update


def options_from_config(config) -> SamplerOptions:
  """The sampler fields of config.eval, config.diffusion and config.model."""
  ev = config.eval
  return SamplerOptions(
      method=ev.sampler, conditioning=config.diffusion.conditioning,
      prefill=config.diffusion.prefill,
      noise_conditioning=config.model.noise_conditioning,
      learn_sigma=config.model.learn_sigma,
      clip_denoised=config.diffusion.clip_denoised, eta=float(ev.eta),
      jump_length=ev.jump_length, jump_n_sample=ev.jump_n_sample)


def create_sampler(config, apply_fn: Callable, num_chunks: int = 10
                   ) -> Sampler:
  """The sampler of `config`, over config.eval.num_steps respaced steps.

  apply_fn(params, x_t, noise_level, cond) -> eps (3 channels) or eps and the
  variance value v (6 channels, model.learn_sigma). The diffusion's
  num_steps are respaced to eval.num_steps (the number of network calls;
  for repaint, its t_T), spread by eval.timestep_spacing.
  """
  options = options_from_config(config)
  options.check()
  total = config.diffusion.num_steps
  if not 1 <= config.eval.num_steps <= total:
    raise ValueError(f"config.eval.num_steps={config.eval.num_steps!r}: "
                     f"expected 1..{total} (config.diffusion.num_steps)")
  diffusion = process.from_config(config.diffusion,
                                  respacing=config.eval.num_steps,
                                  spacing=config.eval.timestep_spacing)
  return Sampler(diffusion, apply_fn, options, num_chunks)
