"""Noise schedules (the betas of the forward process) and their respacing.

Everything here is numpy float64, as in guided-diffusion: products of up to
thousands of alphas lose digits in float32. `process.Diffusion` casts the
derived tables to float32 once.

Time indices are 0-based as in guided-diffusion: `betas[0]` is the first
forward step (the paper's beta_1), `betas[T - 1]` the last (beta_T).
"""

import itertools
import math
from typing import Iterable

import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine")


def linear_betas(num_steps: int, beta_start: float, beta_end: float
                 ) -> np.ndarray:
  """beta rising linearly from beta_start to beta_end (Ho et al. 2020).

  The paper uses 1e-6..1e-2 over T = 2,000 steps.
  """
  if not 0.0 < beta_start <= beta_end < 1.0:
    raise ValueError(
        f"beta_start={beta_start} and beta_end={beta_end}: expected "
        "0 < beta_start <= beta_end < 1")
  return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def scaled_linear_betas(num_steps: int) -> np.ndarray:
  """guided-diffusion's "linear": Ho et al.'s 1e-4..0.02 scaled by 1000/T.

  The scaling keeps the total noise similar for any T (Nichol & Dhariwal
  2021, Sec. 3); for T = 1000 it is exactly Ho et al.'s schedule.
  """
  if num_steps <= 20:
    raise ValueError(f"num_steps={num_steps}: the 'scaled_linear' schedule "
                     "needs more than 20 steps (its last beta is 20 / T)")
  scale = 1000.0 / num_steps
  return linear_betas(num_steps, scale * 1e-4, scale * 0.02)


def betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999
                        ) -> np.ndarray:
  """Betas whose cumulative product follows alpha_bar(s), s in [0, 1].

  beta_i = 1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), capped at
  `max_beta` to avoid the singularity at s = 1 (Nichol & Dhariwal, Eq. 17).
  """
  s = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  abar = alpha_bar(s)
  return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def cosine_betas(num_steps: int) -> np.ndarray:
  """Nichol & Dhariwal (2021) Eq. 17: abar(s) = cos^2((s+.008)/1.008 pi/2)."""
  return betas_for_alpha_bar(
      num_steps, lambda s: np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2)


def get_betas(name: str, num_steps: int, beta_start: float | None = None,
              beta_end: float | None = None) -> np.ndarray:
  """The named schedule as float64 betas of shape (num_steps,).

  beta_start and beta_end are read by "linear" only; "scaled_linear" and
  "cosine" are fixed by their papers.
  """
  if isinstance(num_steps, bool) or not isinstance(
      num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps={num_steps!r}: expected a positive integer")
  if name == "linear":
    if beta_start is None or beta_end is None:
      raise ValueError("the 'linear' schedule needs beta_start and beta_end")
    return linear_betas(num_steps, beta_start, beta_end)
  if name == "scaled_linear":
    return scaled_linear_betas(num_steps)
  if name == "cosine":
    return cosine_betas(num_steps)
  raise ValueError(f"schedule={name!r}: expected one of {', '.join(SCHEDULES)}")


def _ddim_stride_steps(num_timesteps: int, count: int) -> set[int]:
  """DDIM's striding: range(0, T, k) for the integer k giving `count` steps."""
  for stride in range(1, num_timesteps):
    if len(range(0, num_timesteps, stride)) == count:
      return set(range(0, num_timesteps, stride))
  raise ValueError(f"'ddim{count}': cannot take exactly {count} of "
                   f"{num_timesteps} steps with an integer stride")


def _parse_section_counts(section_counts) -> list[int]:
  if isinstance(section_counts, (int, np.integer)):
    return [int(section_counts)]
  if isinstance(section_counts, str):
    try:
      return [int(x) for x in section_counts.split(",")]
    except ValueError:
      raise ValueError(
          f"respacing {section_counts!r}: expected 'ddimN' or comma-separated "
          "step counts such as '250' or '10,15,20'") from None
  return [int(x) for x in section_counts]


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
  """Which of the original steps to keep, with guided-diffusion's semantics.

  The T steps are cut into len(section_counts) near-equal sections (the first
  T % len sections one step longer) and each section of `size` steps is
  strided to its `count`: the float stride (size - 1) / (count - 1) is added
  up step by step and each running sum rounded (half to even), so the float
  sums decide the .5 ties exactly as guided-diffusion's loop does (T = 2000,
  25 steps keeps 999, where round(12 * stride) = round(999.5) would keep
  1000). "ddimN" instead takes DDIM's fixed integer stride (Song et al.
  2021), which must give exactly N steps.

  Args:
    num_timesteps: T, the number of steps of the original process.
    section_counts: an int, a sequence of ints, or a string: "250",
      "10,15,20" or "ddim50".
  """
  if isinstance(section_counts, str) and section_counts.startswith("ddim"):
    try:
      count = int(section_counts[len("ddim"):])
    except ValueError:
      raise ValueError(f"respacing {section_counts!r}: expected 'ddimN' with "
                       "an integer N") from None
    return _ddim_stride_steps(num_timesteps, count)
  counts = _parse_section_counts(section_counts)
  size_per, extra = divmod(num_timesteps, len(counts))
  start, steps = 0, []
  for i, count in enumerate(counts):
    size = size_per + (1 if i < extra else 0)
    if not 1 <= count <= size:
      raise ValueError(f"respacing {section_counts!r}: cannot take {count} "
                       f"steps from a section of {size} steps")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    offsets = itertools.accumulate([stride] * (count - 1), initial=0.0)
    steps += [start + round(offset) for offset in offsets]
    start += size
  return set(steps)


SPACINGS = ("uniform", "quadratic", "log_snr")


def _distinct_increasing(steps: np.ndarray, num_timesteps: int) -> set[int]:
  """Sorted rounded steps nudged apart so that all are distinct, in range."""
  steps = np.clip(np.sort(steps), 0, num_timesteps - 1)
  for i in range(1, steps.size):
    steps[i] = max(steps[i], steps[i - 1] + 1)
  steps[-1] = min(steps[-1], num_timesteps - 1)
  for i in range(steps.size - 1, 0, -1):
    steps[i - 1] = min(steps[i - 1], steps[i] - 1)
  return set(int(t) for t in steps)


def spaced_timesteps(betas: np.ndarray, count: int, spacing: str = "uniform"
                     ) -> set[int]:
  """`count` of the T steps of `betas`, from 0 to T - 1, spaced by `spacing`.

  - "uniform": guided-diffusion's even respacing (`space_timesteps`).
  - "quadratic": t_i = (i / (count - 1))^2 (T - 1), denser at low noise
    (Song et al. 2021, DDIM, Sec. D.2).
  - "log_snr": the steps nearest to equal spacing in
    lambda = log(abar / (1 - abar)) between lambda(T - 1) and lambda(0), as
    DPM-Solver's "logSNR" (Lu et al. 2022, Sec. 3.4) for low resolutions.
    Even respacing of a long linear schedule spends many calls where abar
    is ~0 (T = 2,000 at 1e-6..1e-2: 4 of 10 calls below abar = 0.012);
    for the celeba64 model that did not hurt (benchmarks/quality.md).
  Rounding ties are nudged apart so that exactly `count` steps are kept.
  """
  num_timesteps = len(betas)
  if not 1 <= count <= num_timesteps:
    raise ValueError(f"cannot take {count} of {num_timesteps} steps")
  if spacing == "uniform":
    return space_timesteps(num_timesteps, [count])
  fractions = np.linspace(0.0, 1.0, count)
  if spacing == "quadratic":
    steps = np.rint(fractions ** 2 * (num_timesteps - 1))
  elif spacing == "log_snr":
    abar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    log_snr = np.log(abar) - np.log1p(-abar)  # decreasing in t
    targets = log_snr[0] + fractions * (log_snr[-1] - log_snr[0])
    steps = np.abs(log_snr[None, :] - targets[:, None]).argmin(axis=1)
  else:
    raise ValueError(f"spacing={spacing!r}: expected one of "
                     f"{', '.join(SPACINGS)}")
  return _distinct_increasing(steps.astype(np.int64), num_timesteps)


def respace(betas: np.ndarray, use_timesteps: Iterable[int]
            ) -> tuple[np.ndarray, np.ndarray]:
  """A shorter process visiting only `use_timesteps` of the original.

  The kept steps' abar are unchanged; each new beta spans the skipped steps:
  beta'_k = 1 - abar[s_k] / abar[s_{k-1}] (Nichol & Dhariwal 2021, Sec. 4).

  Returns:
    (new_betas float64, timestep_map int64): timestep_map[k] is the original
    index s_k of the k-th kept step, what a timestep-conditioned network sees.
  """
  betas = np.asarray(betas, dtype=np.float64)
  timestep_map = np.array(sorted(set(int(t) for t in use_timesteps)),
                          dtype=np.int64)
  if timestep_map.size == 0:
    raise ValueError("respace: no timesteps to keep")
  if timestep_map[0] < 0 or timestep_map[-1] >= betas.shape[0]:
    raise ValueError(f"respace: timesteps must lie in [0, {betas.shape[0]}), "
                     f"got {timestep_map[0]}..{timestep_map[-1]}")
  abar = np.cumprod(1.0 - betas)[timestep_map]
  abar_prev = np.concatenate([[1.0], abar[:-1]])
  return 1.0 - abar / abar_prev, timestep_map
