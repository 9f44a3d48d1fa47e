"""The diffusion process against guided-diffusion's numbers and closed forms."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from ffc_ddpm.diffusion import process, schedules


def nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)


@pytest.fixture(scope="module")
def ref(shared_dir):
  path = shared_dir / "reference" / "guided_diffusion"
  return dict(np.load(path / "gaussian_diffusion_ref.npz"))


@pytest.fixture(scope="module")
def linear_1000():
  return process.from_betas(schedules.get_betas("scaled_linear", 1000))


def diffusion_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      schedule="scaled_linear", num_steps=1000, beta_start=1e-6,
      beta_end=1e-2))
  config.update(overrides)
  return config


def test_q_sample_matches_guided_diffusion(ref, linear_1000):
  x_t = process.q_sample(linear_1000, nhwc(ref["q_x0"]),
                         jnp.asarray(ref["step_t"]), nhwc(ref["q_noise"]))
  np.testing.assert_allclose(x_t, nhwc(ref["q_xt"]), rtol=1e-6, atol=1e-6)


def test_posterior_matches_guided_diffusion(ref, linear_1000):
  mean, var, log_var = process.q_posterior_mean_variance(
      linear_1000, nhwc(ref["q_x0"]), nhwc(ref["step_x_t"]),
      jnp.asarray(ref["step_t"]))
  np.testing.assert_allclose(mean, nhwc(ref["post_mean"]), rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(var, nhwc(ref["post_var"]), rtol=1e-6, atol=0)
  np.testing.assert_allclose(log_var, nhwc(ref["post_log_var"]), rtol=1e-6)


def test_learned_sigma_step_matches_guided_diffusion(ref, linear_1000):
  out = process.p_mean_variance(
      linear_1000, nhwc(ref["step_model_output"]), nhwc(ref["step_x_t"]),
      jnp.asarray(ref["step_t"]), learn_sigma=True, clip_denoised=True)
  # x_0 = sqrt(1/abar) x_t - ...: at t = 999 sqrt(1/abar) = 158 multiplies
  # the float32 rounding of x_t, hence the absolute tolerance.
  np.testing.assert_allclose(out["pred_x0"], nhwc(ref["step_pred_xstart"]),
                             rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(out["mean"], nhwc(ref["step_mean"]), rtol=1e-6,
                             atol=1e-5)
  np.testing.assert_allclose(out["log_variance"],
                             nhwc(ref["step_log_variance"]), rtol=1e-6)
  np.testing.assert_allclose(out["variance"],
                             np.exp(nhwc(ref["step_log_variance"])), rtol=1e-5)


def test_fixed_variance_step_is_ho_equation_11():
  """mean = (x_t - beta / sqrt(1 - abar) eps) / sqrt(alpha), var beta-tilde."""
  betas = schedules.get_betas("cosine", 100)
  diffusion = process.from_betas(betas)
  rng = np.random.default_rng(0)
  x_t = rng.normal(size=(3, 2, 2, 3)).astype(np.float32)
  eps = rng.normal(size=(3, 2, 2, 3)).astype(np.float32)
  t = np.array([1, 50, 99])
  out = process.p_mean_variance(diffusion, jnp.asarray(eps), jnp.asarray(x_t),
                                jnp.asarray(t), learn_sigma=False,
                                clip_denoised=False)
  abar = np.cumprod(1 - betas)
  b, a = betas[t, None, None, None], abar[t, None, None, None]
  expected = (x_t - b / np.sqrt(1 - a) * eps) / np.sqrt(1 - b)
  np.testing.assert_allclose(out["mean"], expected, rtol=1e-5, atol=1e-5)
  a_prev = abar[t - 1, None, None, None]
  np.testing.assert_allclose(out["variance"][:, 0, 0, 0],
                             (b * (1 - a_prev) / (1 - a)).ravel(), rtol=1e-5)
  np.testing.assert_array_equal(out["eps"], eps)


def test_clipping_x0_only_when_asked():
  diffusion = process.from_betas(schedules.get_betas("cosine", 10))
  x_t = jnp.full((1, 1, 1, 3), 3.0)
  eps = jnp.zeros((1, 1, 1, 3))
  t = jnp.asarray([0])
  raw = process.predict_x0_from_eps(diffusion, x_t, t, eps)
  clipped = process.predict_x0_from_eps(diffusion, x_t, t, eps, clip=True)
  abar0 = 1 - schedules.get_betas("cosine", 10)[0]
  np.testing.assert_allclose(raw, 3.0 / np.sqrt(abar0), rtol=1e-6)
  np.testing.assert_array_equal(clipped, 1.0)


def test_tables_are_float32_from_float64():
  """1 - abar_0 = beta_0 = 1e-6 survives; float32 arithmetic would not."""
  diffusion = process.from_config(diffusion_config(
      schedule="linear", num_steps=2000))
  assert diffusion.alphas_cumprod.dtype == jnp.float32
  np.testing.assert_allclose(diffusion.one_minus_alphas_cumprod[0], 1e-6,
                             rtol=1e-6)
  np.testing.assert_allclose(diffusion.sqrt_recipm1_alphas_cumprod[0], 1e-3,
                             rtol=1e-6)
  naive = 1 - np.float32(1 - 1e-6)
  assert abs(naive / 1e-6 - 1) > 1e-3


def test_respaced_process_from_config(ref):
  original = np.cumprod(1 - schedules.get_betas("scaled_linear", 1000))
  diffusion = process.from_config(diffusion_config(), respacing="250")
  timestep_map = ref["respaced_250_timestep_map"]
  assert diffusion.num_steps == 250
  np.testing.assert_array_equal(diffusion.timestep_map, timestep_map)
  np.testing.assert_allclose(diffusion.alphas_cumprod,
                             original[timestep_map], rtol=1e-6)
  np.testing.assert_allclose(diffusion.betas, ref["respaced_250_betas"],
                             rtol=1e-6)


def test_process_respaced_by_a_spacing():
  config = diffusion_config()
  betas = schedules.get_betas("scaled_linear", 1000)
  diffusion = process.from_config(config, respacing=12, spacing="log_snr")
  expected = sorted(schedules.spaced_timesteps(betas, 12, "log_snr"))
  np.testing.assert_array_equal(diffusion.timestep_map, expected)
  np.testing.assert_allclose(diffusion.alphas_cumprod,
                             np.cumprod(1 - betas)[expected], rtol=1e-6)


def test_model_noise_level():
  diffusion = process.from_config(diffusion_config(), respacing=[4])
  t = jnp.asarray([0, 1, 3])
  timestep = process.model_noise_level(diffusion, t, "timestep")
  assert timestep.dtype == jnp.float32
  np.testing.assert_array_equal(timestep, [0.0, 333.0, 999.0])
  abar = np.cumprod(1 - schedules.get_betas("scaled_linear", 1000))
  np.testing.assert_allclose(process.model_noise_level(diffusion, t, "abar"),
                             abar[[0, 333, 999]], rtol=1e-6)


def test_inpainting_condition_hides_the_hole():
  x_known = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
  x_known[0, 0, 0] = np.nan  # whatever the hole holds never leaks
  mask = np.zeros((2, 2, 2, 1), np.float32)
  mask[0, 0, 0] = mask[1, 1, :] = 1
  cond = process.inpainting_condition(jnp.asarray(x_known), jnp.asarray(mask))
  expected = np.concatenate([np.where(mask > 0, 0, x_known), mask], -1)
  np.testing.assert_array_equal(cond, expected)


@pytest.mark.parametrize("call, message", [
    (lambda: process.from_config(diffusion_config(schedule="sigmoid")),
     "config.diffusion: schedule='sigmoid'"),
    (lambda: process.from_config(diffusion_config(), respacing="ddim7x"),
     "config.diffusion: respacing"),
    (lambda: process.from_config(diffusion_config(), respacing="10,10",
                                 spacing="quadratic"), "takes one step count"),
    (lambda: process.from_betas(np.array([0.1, 0.0])), "betas"),
    (lambda: process.p_mean_variance(
        process.from_betas(np.full(3, 0.1)), jnp.zeros((1, 2, 2, 3)),
        jnp.zeros((1, 2, 2, 3)), jnp.zeros(1, jnp.int32), learn_sigma=True,
        clip_denoised=True), "3 channels: expected 6"),
    (lambda: process.model_noise_level(
        process.from_betas(np.full(3, 0.1)), 0, "sigma"),
     "model.noise_conditioning='sigma'"),
])
def test_bad_input_is_a_one_line_error(call, message):
  with pytest.raises(ValueError) as err:
    call()
  assert message in str(err.value) and "\n" not in str(err.value)


def _harmonic_reference(x: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """Laplace's equation on the hole, solved exactly with SciPy: each hole
  pixel equals the mean of its four neighbours (a neighbour beyond the frame
  is the pixel itself), known pixels fixed."""
  h, w = hole.shape
  cells = np.argwhere(hole)
  index = -np.ones((h, w), int)
  index[hole] = np.arange(len(cells))
  a = sparse.lil_matrix((len(cells), len(cells)))
  b = np.zeros((len(cells), x.shape[-1]))
  for k, (i, j) in enumerate(cells):
    for ni, nj in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
      ni, nj = min(max(ni, 0), h - 1), min(max(nj, 0), w - 1)
      if hole[ni, nj]:
        a[k, index[ni, nj]] -= 1
      else:
        b[k] += x[ni, nj]
      a[k, k] += 1
  filled = x.copy()
  filled[hole] = sparse_linalg.spsolve(a.tocsc(), b)
  return filled


@pytest.mark.parametrize("hole_kind", ["centre", "strokes"])
def test_harmonic_fill_solves_laplace_s_equation_in_the_hole(hole_kind):
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:64, 0:64] / 64
  x = np.stack([np.sin(3 * xx + 1) * np.cos(2 * yy), xx * yy,
                np.cos(5 * yy)], -1) + 0.1 * rng.normal(size=(64, 64, 3))
  hole = np.zeros((64, 64), bool)
  if hole_kind == "centre":
    hole[16:48, 16:48] = True
  else:
    hole = rng.random((64, 64)) < 0.3
    hole[5:20, 30:60] = True
  expected = _harmonic_reference(x, hole)
  x_in = np.where(hole[..., None], 7.0, x)  # the hole's content is ignored
  got = np.asarray(process.harmonic_fill(
      jnp.asarray(x_in[None], jnp.float32),
      jnp.asarray(hole[None, ..., None], jnp.float32)))[0]
  np.testing.assert_array_equal(got[~hole], x[~hole].astype(np.float32))
  error = np.abs(got - expected)[hole]
  assert error.max() < 0.02 and error.mean() < 0.003, (error.max(),
                                                       error.mean())
  # and it is a fill worth having: far closer than the zeros it replaces
  assert error.mean() < 0.1 * np.abs(expected[hole]).mean()


def test_harmonic_fill_of_an_image_with_no_known_pixel_is_zero():
  got = process.harmonic_fill(jnp.ones((1, 8, 12, 3)), jnp.ones((1, 8, 12, 1)))
  np.testing.assert_array_equal(got, 0)


def test_the_harmonic_condition_hides_the_hole_too():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  mask = np.zeros((2, 16, 16, 1), np.float32)
  mask[:, 4:12, 4:12] = 1
  other = np.where(mask > 0, rng.normal(size=x.shape), x).astype(np.float32)
  cond = process.inpainting_condition(jnp.asarray(x), jnp.asarray(mask),
                                      "harmonic")
  np.testing.assert_array_equal(
      cond, process.inpainting_condition(jnp.asarray(other),
                                         jnp.asarray(mask), "harmonic"))
  np.testing.assert_array_equal(cond[..., 3:], mask)
  np.testing.assert_array_equal(np.where(mask > 0, 0, cond[..., :3]),
                                np.where(mask > 0, 0, x))
  assert np.abs(np.asarray(cond[..., :3])[np.broadcast_to(mask > 0, x.shape)]
                ).min() > 0  # the hole is filled, not zeroed


def test_an_unknown_prefill_is_named():
  with pytest.raises(ValueError, match="config.diffusion.prefill='telea'"):
    process.inpainting_condition(jnp.zeros((1, 4, 4, 3)),
                                 jnp.zeros((1, 4, 4, 1)), "telea")
