"""Noise schedules and respacing against guided-diffusion and closed forms."""

import math

import numpy as np
import pytest

from ffc_ddpm.diffusion import schedules


@pytest.fixture(scope="module")
def ref(shared_dir):
  path = shared_dir / "reference" / "guided_diffusion"
  return dict(np.load(path / "gaussian_diffusion_ref.npz"))


@pytest.mark.parametrize("key, args", [
    ("betas_linear_1000", ("scaled_linear", 1000)),
    ("betas_cosine_1000", ("cosine", 1000)),
    ("betas_paper_2000", ("linear", 2000, 1e-6, 1e-2)),
])
def test_named_schedules_match_guided_diffusion(ref, key, args):
  betas = schedules.get_betas(*args)
  assert betas.dtype == np.float64
  np.testing.assert_allclose(betas, ref[key], rtol=1e-12, atol=0)


def test_scaled_linear_is_ho_schedule_scaled_by_1000_over_t():
  betas = schedules.get_betas("scaled_linear", 2000, 0.5, 0.6)  # range unused
  np.testing.assert_allclose(betas[[0, 1, -1]],
                             [5e-5, 5e-5 + (1e-2 - 5e-5) / 1999, 1e-2])


def test_cosine_follows_its_alpha_bar_and_caps_the_last_beta():
  betas = schedules.get_betas("cosine", 50)
  f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2)**2
  abar = np.cumprod(1 - betas)
  expected = [f((t + 1) / 50) / f(0) for t in range(49)]
  np.testing.assert_allclose(abar[:49], expected, rtol=1e-10)
  assert betas[-1] == 0.999


@pytest.mark.parametrize("spec", ["250", "ddim50"])
def test_respacing_matches_guided_diffusion(ref, spec):
  betas = schedules.get_betas("scaled_linear", 1000)
  new_betas, timestep_map = schedules.respace(
      betas, schedules.space_timesteps(1000, spec))
  np.testing.assert_array_equal(timestep_map,
                                ref[f"respaced_{spec}_timestep_map"])
  np.testing.assert_allclose(new_betas, ref[f"respaced_{spec}_betas"],
                             rtol=1e-10)


def test_respacing_keeps_abar_of_the_kept_steps():
  betas = schedules.get_betas("cosine", 300)
  new_betas, timestep_map = schedules.respace(betas, {0, 7, 150, 299})
  np.testing.assert_array_equal(timestep_map, [0, 7, 150, 299])
  np.testing.assert_allclose(np.cumprod(1 - new_betas),
                             np.cumprod(1 - betas)[timestep_map], rtol=1e-9)


def test_respacing_every_step_is_the_identity():
  betas = schedules.get_betas("linear", 100, 1e-4, 2e-2)
  new_betas, timestep_map = schedules.respace(betas, range(100))
  np.testing.assert_allclose(new_betas, betas, rtol=1e-10)
  np.testing.assert_array_equal(timestep_map, np.arange(100))


@pytest.mark.parametrize("num, counts, expected", [
    # Sections of 4, 3, 3 steps (the first gets the remainder), 2 from each.
    (10, [2, 2, 2], {0, 3, 4, 6, 7, 9}),
    # Stride 1.5: 0, 1.5, 3, 4.5, 6 round half to even -> 0, 2, 3, 4, 6.
    (7, "5", {0, 2, 3, 4, 6}),
    (12, 1, {0}),
    (20, "ddim5", {0, 4, 8, 12, 16}),
])
def test_space_timesteps_by_hand(num, counts, expected):
  assert schedules.space_timesteps(num, counts) == expected


def test_space_timesteps_sections_span_their_ranges():
  steps = sorted(schedules.space_timesteps(300, "10,15,20"))
  assert len(steps) == 45
  first, second, third = steps[:10], steps[10:25], steps[25:]
  assert (first[0], first[-1], second[0], second[-1]) == (0, 99, 100, 199)
  assert (third[0], third[-1]) == (200, 299)
  assert np.ptp(np.diff(first)) == 0  # 99 / 9 = 11 exactly


# Outputs of guided-diffusion's respace.space_timesteps (openai/guided-
# diffusion at its main branch), run once and written down here.
GUIDED_DIFFUSION_RESPACING = {
    (1000, "10,15,20"): [
        0, 37, 74, 111, 148, 185, 222, 259, 296, 333, 334, 358, 381, 405, 429,
        453, 476, 500, 524, 547, 571, 595, 619, 642, 666, 667, 684, 702, 719,
        737, 754, 772, 789, 807, 824, 842, 859, 877, 894, 912, 929, 947, 964,
        982, 999],
    (2000, "25"): [
        0, 83, 167, 250, 333, 416, 500, 583, 666, 750, 833, 916, 999, 1083,
        1166, 1249, 1333, 1416, 1499, 1583, 1666, 1749, 1832, 1916, 1999],
    (1000, "ddim50"): list(range(0, 1000, 20)),
    (300, "7,3"): [0, 25, 50, 74, 99, 124, 149, 150, 224, 299],
}


@pytest.mark.parametrize("num_timesteps, counts",
                         sorted(GUIDED_DIFFUSION_RESPACING))
def test_space_timesteps_equals_guided_diffusions(num_timesteps, counts):
  assert sorted(schedules.space_timesteps(num_timesteps, counts)) == (
      GUIDED_DIFFUSION_RESPACING[num_timesteps, counts])


def _accumulate_then_round(num_timesteps, count):
  """guided-diffusion's rule for one section, restated as its explicit loop:
  a float index grows by the stride and each value is rounded when taken."""
  stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
  index, taken = 0.0, []
  while len(taken) < count:
    taken.append(round(index))
    index += stride
  return set(taken)


@pytest.mark.parametrize("num_timesteps", [1000, 2000])
def test_space_timesteps_accumulates_then_rounds_for_every_count(
    num_timesteps):
  for count in range(1, num_timesteps + 1):
    assert schedules.space_timesteps(num_timesteps, count) == (
        _accumulate_then_round(num_timesteps, count)), count


def test_space_timesteps_ties_follow_the_float_sums():
  """T = 2000, 25 steps: 12 strides of 1999 / 24 are 999.5 on paper, but
  their float sum lies below it, so step 999 is kept, not 1000."""
  steps = schedules.space_timesteps(2000, 25)
  assert 999 in steps and 1000 not in steps


def paper_betas():
  return schedules.get_betas("linear", 2000, 1e-6, 1e-2)


def test_quadratic_spacing_by_hand():
  """t_i = (i / 5)^2 * 100 for 6 of 101 steps."""
  betas = np.full(101, 0.01)
  assert schedules.spaced_timesteps(betas, 6, "quadratic") == {
      0, 4, 16, 36, 64, 100}


def test_log_snr_spacing_is_even_in_log_snr():
  """Each kept step's lambda = log(abar / (1 - abar)) lies within the grid's
  own resolution of an even ladder from lambda(T - 1) to lambda(0)."""
  betas = paper_betas()
  abar = np.exp(np.cumsum(np.log1p(-betas)))
  lam = np.log(abar / (1 - abar))
  steps = sorted(schedules.spaced_timesteps(betas, 10, "log_snr"))
  assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 1999
  ladder = np.linspace(lam[0], lam[-1], 10)
  resolution = np.abs(np.diff(lam)).max()  # the largest step-to-step change
  assert np.abs(lam[steps] - ladder).max() <= resolution / 2 + 1e-9


@pytest.mark.parametrize("spacing", ["quadratic", "log_snr"])
def test_dense_spacings_spend_fewer_calls_on_pure_noise(spacing):
  """On the paper's schedule, even respacing puts 4 of 10 calls where
  abar < 0.012; the low-noise spacings put fewer there."""
  betas = paper_betas()
  abar = np.cumprod(1 - betas)
  noisy = lambda steps: int((abar[sorted(steps)] < 0.012).sum())
  assert noisy(schedules.spaced_timesteps(betas, 10, "uniform")) == 4
  assert noisy(schedules.spaced_timesteps(betas, 10, spacing)) < 4


@pytest.mark.parametrize("spacing", schedules.SPACINGS)
@pytest.mark.parametrize("count", [1, 2, 7, 19, 20])
def test_every_spacing_keeps_exactly_count_distinct_steps(spacing, count):
  """Rounding ties (many at the dense end of a short process) are nudged
  apart: exactly `count` distinct steps in [0, T)."""
  betas = np.linspace(1e-4, 0.3, 20)
  steps = schedules.spaced_timesteps(betas, count, spacing)
  assert len(steps) == count and min(steps) >= 0 and max(steps) < 20


@pytest.mark.parametrize("spacing", schedules.SPACINGS)
@pytest.mark.parametrize("count", [10, 100, 1000])
def test_spacings_of_the_cosine_schedule_stay_in_range(spacing, count):
  """The cosine schedule's capped last beta (0.999) puts lambda(T - 1) far
  below lambda(T - 2): several log-SNR targets round to the last step and
  are nudged down, never past it (the demo config: cosine, T = 1,000)."""
  steps = schedules.spaced_timesteps(schedules.get_betas("cosine", 1000),
                                     count, spacing)
  assert len(steps) == count and min(steps) >= 0 and max(steps) == 999


def test_uniform_spacing_is_guided_diffusions_respacing():
  assert schedules.spaced_timesteps(paper_betas(), 25, "uniform") == (
      schedules.space_timesteps(2000, 25))


@pytest.mark.parametrize("call, message", [
    (lambda: schedules.get_betas("quadratic", 10), "schedule='quadratic'"),
    (lambda: schedules.get_betas("linear", 10, 0.1, 1.5), "beta_end=1.5"),
    (lambda: schedules.get_betas("linear", 0, 1e-4, 0.02), "num_steps=0"),
    (lambda: schedules.get_betas("scaled_linear", 10), "more than 20"),
    (lambda: schedules.space_timesteps(10, "ddim6"), "'ddim6'"),
    (lambda: schedules.space_timesteps(10, "ddimx"), "'ddimx'"),
    (lambda: schedules.space_timesteps(10, "5,x"), "'5,x'"),
    (lambda: schedules.space_timesteps(10, [6, 6]), "6 steps from a section"),
    (lambda: schedules.respace(np.full(5, 0.1), [2, 5]), "[0, 5)"),
    (lambda: schedules.spaced_timesteps(np.full(5, 0.1), 2, "cubic"),
     "spacing='cubic'"),
    (lambda: schedules.spaced_timesteps(np.full(5, 0.1), 6, "log_snr"),
     "6 of 5 steps"),
])
def test_bad_input_is_a_one_line_error(call, message):
  with pytest.raises(ValueError) as err:
    call()
  assert message in str(err.value) and "\n" not in str(err.value)
