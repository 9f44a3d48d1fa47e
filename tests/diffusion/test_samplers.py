"""Samplers: reference steps, exact Gaussian chains, inpainting, determinism.

The networks are exact noise predictors for Gaussian data (gaussian_oracle),
for which every sampler is a linear Gaussian chain: the moments of its output
follow from a scalar recursion written here from the papers' equations.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussian_oracle as go
from ffc_ddpm import configuration, inference, models
from ffc_ddpm.diffusion import process, samplers, schedules

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
N = 64  # examples in the statistical tests: 64 * 8 * 8 * 3 = 12,288 values


def nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)


def respaced(schedule, total, spec):
  """(float64 betas, timestep_map) of `schedule` respaced by `spec`."""
  betas = schedules.get_betas(schedule, total, 1e-6, 1e-2)
  return schedules.respace(betas, schedules.space_timesteps(total, spec))


def chain_moments(betas, table, method="ddpm", eta=0.0, mean=go.MEAN,
                  std=go.STD):
  """Mean and std of a sampler's output for N(mean, std^2) data.

  With the exact eps-predictor x_{t-1} = A x_t + B + sigma z, so the moments
  follow from x_T ~ N(0, 1) step by step (Ho et al. Eq. 7 and 11; Song et al.
  Eq. 12; RePaint's forward jumps, Ho et al. Eq. 2).
  """
  abar = np.cumprod(1 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  m, v = 0.0, 1.0
  for kind, t in zip(table["kind"], table["t"]):
    b, a, ap = betas[t], abar[t], abar_prev[t]
    if kind == samplers.FORWARD:
      m, v = np.sqrt(1 - b) * m, (1 - b) * v + b
      continue
    k = np.sqrt(1 - a) / (a * std**2 + 1 - a)  # eps = k (x - sqrt(a) mean)
    p = (1 - np.sqrt(1 - a) * k) / np.sqrt(a)  # x0 = p x + q
    q = np.sqrt(1 - a) * k * mean
    tilde = b * (1 - ap) / (1 - a)
    if method == "ddpm":
      c1 = b * np.sqrt(ap) / (1 - a)
      c2 = (1 - ap) * np.sqrt(1 - b) / (1 - a)
      gain, shift, var = c1 * p + c2, c1 * q, tilde if t > 0 else 0.0
    else:
      var = eta**2 * tilde
      c = np.sqrt(1 - ap - var)
      gain = np.sqrt(ap) * p + c * k
      shift = np.sqrt(ap) * q - c * k * np.sqrt(a) * mean
    m, v = gain * m + shift, gain**2 * v + var
  return m, np.sqrt(v)


def gaussian_sampler(betas, timestep_map, method, noise_conditioning,
                     abar_table, **options):
  diffusion = process.from_betas(betas, timestep_map)
  opts = samplers.SamplerOptions(
      method=method, conditioning=options.pop("conditioning", "none"),
      noise_conditioning=noise_conditioning, clip_denoised=False, **options)
  return samplers.Sampler(
      diffusion, go.gaussian_eps_fn(noise_conditioning, abar_table), opts)


def generate(sampler, n=N, seed=0):
  keys = samplers.example_keys(jax.random.key(seed), np.arange(n))
  return np.asarray(sampler(None, None, None, keys,
                            shape=(n,) + go.IMAGE_SHAPE))


def assert_moments(samples, mean, std, bias=0.0):
  """Sample mean/variance within 4 standard errors (+ a known bias)."""
  n = samples.size
  assert abs(samples.mean() - mean) < 4 * std / np.sqrt(n)
  rel = samples.var() / std**2 - 1
  assert abs(rel) < 4 * np.sqrt(2 / n) + bias, (samples.var(), std**2)


# ------------------------------------------------- guided-diffusion refs
def test_ddim_step_matches_guided_diffusion(shared_dir):
  ref = np.load(shared_dir / "reference" / "guided_diffusion" /
                "gaussian_diffusion_ref.npz")
  betas = schedules.get_betas("scaled_linear", 1000)
  diffusion = process.from_betas(betas)
  x_t, t = nhwc(ref["step_x_t"]), jnp.asarray(ref["step_t"])
  pmv = process.p_mean_variance(diffusion, nhwc(ref["ddim_eps"]), x_t, t,
                                learn_sigma=False, clip_denoised=True)
  got = samplers.ddim_update(diffusion, x_t, t, pmv["pred_x0"], 0.0, None)
  np.testing.assert_allclose(pmv["pred_x0"], nhwc(ref["ddim_pred_xstart"]),
                             atol=1e-5)
  # The reference ran in float32 torch: at t = 1 it rounds abar_prev =
  # 0.9999 before 1 - abar_prev, an error of 1.5e-4 on |eps| ~ 190 that
  # float64 tables avoid. So: the reference to 2e-4, and Song et al. Eq. 12
  # in float64 to float32 precision.
  np.testing.assert_allclose(got, nhwc(ref["ddim_sample"]), atol=2e-4)
  abar = np.cumprod(1 - betas)[ref["step_t"], None, None, None]
  abar_prev = np.cumprod(1 - betas)[ref["step_t"] - 1, None, None, None]
  abar_prev[ref["step_t"] == 0] = 1.0
  x, e = (np.transpose(ref[k], (0, 2, 3, 1)) for k in ("step_x_t", "ddim_eps"))
  x0 = np.clip((x - np.sqrt(1 - abar) * e) / np.sqrt(abar), -1, 1)
  eps = (x - np.sqrt(abar) * x0) / np.sqrt(1 - abar)
  expected = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


def test_repaint_schedule_matches_reference(shared_dir):
  times = np.load(shared_dir / "reference" / "guided_diffusion" /
                  "repaint_schedule_250_j10_n10.npz")["times"]
  np.testing.assert_array_equal(samplers.repaint_times(250, 10, 10), times)
  table = samplers.step_table("repaint", 250, 10, 10)
  reverse = table["kind"] == samplers.REVERSE
  # 250 steps down plus 24 jumps x 9 repeats x 10 steps back down.
  assert reverse.sum() == 250 + 24 * 9 * 10
  assert (~reverse).sum() == 24 * 9 * 10
  np.testing.assert_array_equal(table["t"][reverse], times[:-1][reverse])
  np.testing.assert_array_equal(table["t"][~reverse], times[1:][~reverse])


def test_chunks_cover_the_table_once_with_skip_padding():
  table = samplers.step_table("ddpm", 13)
  chunks = samplers.chunk_table(table, 3)
  assert [len(c["t"]) for c in chunks] == [5, 5, 5]
  rows = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  np.testing.assert_array_equal(rows["t"][:13], np.arange(12, -1, -1))
  np.testing.assert_array_equal(rows["kind"][13:], samplers.SKIP)
  np.testing.assert_array_equal(rows["index"], np.arange(15))


def test_replace_known():
  """Clean known pixels (concat), or q(x_t | x_known) with the given noise."""
  diffusion = process.from_betas(schedules.get_betas("cosine", 10))
  rng = np.random.default_rng(0)
  x, x_known, noise = rng.normal(size=(3, 2, 4, 4, 3)).astype(np.float32)
  mask = (rng.uniform(size=(2, 4, 4, 1)) < 0.5).astype(np.float32)
  t = jnp.asarray(6)
  hole = np.broadcast_to(mask, x.shape) > 0
  for conditioning in ("concat", "none"):
    got = np.asarray(samplers.replace_known(diffusion, x, t, x_known, mask,
                                            conditioning, noise))
    abar = np.cumprod(1 - schedules.get_betas("cosine", 10))[6]
    known = x_known if conditioning == "concat" else (
        np.sqrt(abar) * x_known + np.sqrt(1 - abar) * noise)
    np.testing.assert_array_equal(got[hole], x[hole])
    np.testing.assert_allclose(got[~hole], known[~hole], rtol=1e-6,
                               atol=1e-6)


# ------------------------------------------------- exact Gaussian chains
@pytest.mark.parametrize("method, noise_conditioning", [
    ("ddpm", "abar"), ("ddim", "timestep")])
def test_samplers_reproduce_gaussian_data(method, noise_conditioning):
  """All 1000 steps of a cosine process give back N(0.3, 0.2^2).

  Allowed bias: the chain's own, 2% of the variance for DDPM with the fixed
  posterior variance, 0.8% for DDIM (from `chain_moments`).
  """
  betas, timestep_map = respaced("cosine", 1000, "1000")
  sampler = gaussian_sampler(betas, timestep_map, method, noise_conditioning,
                             go.original_abar("cosine", 1000))
  samples = generate(sampler)
  assert_moments(samples, go.MEAN, go.STD, bias=0.02)
  # ...and a different seed gives other samples
  assert np.abs(generate(sampler, seed=1) - samples).min() > 0


@pytest.fixture(scope="module")
def respaced_runs():
  """25 of 1000 cosine steps: DDPM (timestep net), DDIM eta=1 (abar net)."""
  betas, timestep_map = respaced("cosine", 1000, "25")
  abar = go.original_abar("cosine", 1000)
  ddpm = gaussian_sampler(betas, timestep_map, "ddpm", "timestep", abar)
  ddim = gaussian_sampler(betas, timestep_map, "ddim", "abar", abar, eta=1.0)
  return betas, {"ddpm": generate(ddpm), "ddim": generate(ddim)}


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_respaced_samplers_follow_the_exact_chain(respaced_runs, method):
  betas, samples = respaced_runs
  table = samplers.step_table(method, 25)
  mean, std = chain_moments(betas, table, method, eta=1.0)
  assert_moments(samples[method], mean, std)
  # the test has power: without DDIM's eta noise the std would differ
  _, std_eta0 = chain_moments(betas, table, "ddim", eta=0.0)
  assert abs(std - std_eta0) > 8 * std / np.sqrt(2 * samples[method].size)


def test_ddim_eta_one_is_ddpm(respaced_runs):
  """eta = 1 turns Song et al.'s update into Ho et al.'s, noise included."""
  _, samples = respaced_runs
  np.testing.assert_allclose(samples["ddim"], samples["ddpm"], atol=1e-4)


# ---------------------------------------------------------------- RePaint
@pytest.fixture(scope="module")
def repaint_run():
  """RePaint on 20 of 200 cosine steps, recording every network call."""
  betas, timestep_map = respaced("cosine", 200, "20")
  abar = go.original_abar("cosine", 200)
  oracle = go.gaussian_eps_fn("timestep", abar)
  calls = []

  def recording_oracle(params, x_t, noise_level, cond):
    jax.debug.callback(lambda *a: calls.append(jax.device_get(a)), x_t,
                       noise_level, ordered=True)
    return oracle(params, x_t, noise_level, cond)

  options = samplers.SamplerOptions(
      method="repaint", conditioning="none", noise_conditioning="timestep",
      clip_denoised=False, jump_length=4, jump_n_sample=3)
  sampler = samplers.Sampler(process.from_betas(betas, timestep_map),
                             recording_oracle, options)
  rng = np.random.default_rng(0)
  x_known = rng.uniform(-1, 1, (N,) + go.IMAGE_SHAPE).astype(np.float32)
  mask = np.ones((N, 8, 8, 1), np.float32)
  mask[:, :2] = 0  # 16 known pixels, 48 to inpaint
  keys = samplers.example_keys(jax.random.key(5), np.arange(N))
  out = np.asarray(sampler(None, x_known, mask, keys))
  jax.effects_barrier()
  return dict(betas=betas, timestep_map=timestep_map, calls=calls, out=out,
              x_known=x_known, mask=mask, sampler=sampler, keys=keys)


def test_repaint_hole_follows_the_exact_chain(repaint_run):
  r = repaint_run
  table = samplers.step_table("repaint", 20, 4, 3)
  mean, std = chain_moments(r["betas"], table)
  hole = r["out"][np.broadcast_to(r["mask"], r["out"].shape) > 0]
  assert_moments(hole, mean, std)
  np.testing.assert_array_equal(r["out"][:, :2], r["x_known"][:, :2])


def test_repaint_injects_freshly_noised_known_pixels(repaint_run):
  """Before each network call the known region is q(x_t | x_known)."""
  r = repaint_run
  table = samplers.step_table("repaint", 20, 4, 3)
  steps = table["t"][table["kind"] == samplers.REVERSE]
  levels = np.stack([level for _, level in r["calls"]])
  np.testing.assert_array_equal(levels,
                                np.repeat(r["timestep_map"][steps, None], N, 1))
  abar = np.cumprod(1 - r["betas"])
  noises = []
  for (x_t, _), t in zip(r["calls"], steps):
    z = ((x_t[:, :2] - np.sqrt(abar[t]) * r["x_known"][:, :2]) /
         np.sqrt(1 - abar[t]))
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    noises.append(z.ravel())
  # fresh noise at every step: consecutive draws are uncorrelated
  corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(noises, noises[1:])]
  assert max(np.abs(corr)) < 5 / np.sqrt(noises[0].size)


def test_repaint_jumps_change_the_result(repaint_run):
  r = repaint_run
  options = samplers.SamplerOptions(
      method="repaint", conditioning="none", noise_conditioning="timestep",
      clip_denoised=False, jump_length=4, jump_n_sample=1)
  sampler = samplers.Sampler(r["sampler"].diffusion, go.gaussian_eps_fn(
      "timestep", go.original_abar("cosine", 200)), options)
  assert sampler.total_steps == 20 < r["sampler"].total_steps
  out = np.asarray(sampler(None, r["x_known"], r["mask"], r["keys"]))
  assert np.abs(out - r["out"]).max() > 0.1


# ----------------------------------------------------------- DPM-Solver++
def flow_then_denoise(x_T, abar_T, abar_0, mean=go.MEAN, std=go.STD):
  """The exact probability-flow ODE from abar_T to abar_0, then E[x_0 | x].

  For N(mean, std^2) data, x_t ~ N(sqrt(a_t) mean, v_t) with v_t = a_t std^2
  + 1 - a_t. The ODE's drift (Song et al. 2021, Eq. 13, with this Gaussian's
  score) is affine in x, so its flow is the increasing affine map between
  the two marginals. The samplers' last step, from t = 0 to the data, is
  the data prediction at t = 0: the posterior mean (Tweedie).
  """
  v_T, v_0 = (a * std**2 + 1 - a for a in (abar_T, abar_0))
  x = np.sqrt(abar_0) * mean + np.sqrt(v_0 / v_T) * (
      x_T - np.sqrt(abar_T) * mean)
  return mean + np.sqrt(abar_0) * std**2 / v_0 * (x - np.sqrt(abar_0) * mean)


def lambda_even_betas(num_steps, lambda_max=5.0, lambda_min=-5.0):
  """Betas whose log-SNR lambda_t = log(sqrt(abar_t / (1 - abar_t))) falls
  evenly from lambda_max (t = 0) to lambda_min (t = T - 1): the step grid of
  DPM-Solver's convergence analysis (Lu et al. 2022)."""
  abar = 1 / (1 + np.exp(-2 * np.linspace(lambda_max, lambda_min,
                                          num_steps)))
  return 1 - abar / np.append(1.0, abar[:-1])


def ode_error(method, betas, timestep_map=None, abar_table=None, n=8):
  """RMS distance of a deterministic sampler's output from
  `flow_then_denoise` of its own x_T, clipped to [-1, 1] as the samplers'
  results are (timestep-conditioned oracle when abar_table is given, else
  abar-conditioned)."""
  conditioning = "abar" if abar_table is None else "timestep"
  sampler = gaussian_sampler(betas, timestep_map, method, conditioning,
                             abar_table)
  out = generate(sampler, n)
  keys = samplers.example_keys(jax.random.key(0), np.arange(n))
  x_T = np.asarray(samplers.per_example_normal(keys, 0, go.IMAGE_SHAPE),
                   np.float64)
  abar = np.cumprod(1 - np.asarray(betas, np.float64))
  exact = np.clip(flow_then_denoise(x_T, abar[-1], abar[0]), -1, 1)
  return np.sqrt(np.mean((out - exact)**2))


@pytest.mark.parametrize("method, conditioning", [
    ("ddpm", "concat"), ("ddim", "concat"), ("dpm_solver", "concat"),
    ("repaint", "none"), ("dpm_solver", "none")])
def test_every_sampler_projects_the_known_region(method, conditioning):
  """Every network call sees the clean known pixels ("concat") or a fresh
  draw from q(x_t | x_known) ("none"), whatever the update."""
  options = samplers.SamplerOptions(
      method=method, conditioning=conditioning, noise_conditioning="abar",
      jump_length=3, jump_n_sample=2)
  calls, oracle = [], go.gaussian_eps_fn("abar")

  def recording_oracle(params, x_t, noise_level, cond):
    jax.debug.callback(lambda *a: calls.append(a), x_t, noise_level,
                       ordered=True)
    return oracle(params, x_t, noise_level, cond)

  x_known, mask, keys = _inputs(8)
  samplers.Sampler(go.concat_sampler().diffusion, recording_oracle, options)(
      None, x_known, mask, keys)
  jax.effects_barrier()
  known = np.broadcast_to(mask, x_known.shape) == 0
  for x_t, abar in calls:
    if conditioning == "concat":
      np.testing.assert_array_equal(x_t[known], x_known[known])
      continue
    a = abar[:, None, None, None]
    z = ((x_t - np.sqrt(a) * x_known) / np.sqrt(1 - a))[known]
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)


def test_dpm_solver_converges_at_second_order():
  """Error against the exact ODE solution ~ K^-p in K network calls: p ~ 2
  for DPM-Solver++(2M), p ~ 1 for DDIM (its first-order special case)."""
  steps = np.array([24, 48, 96])
  order = {}
  for method in ("ddim", "dpm_solver"):
    errors = [ode_error(method, lambda_even_betas(k)) for k in steps]
    order[method] = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
  assert order["dpm_solver"] > 1.8, order
  assert 0.9 < order["ddim"] < 1.1, order


@pytest.mark.parametrize("num_steps", [20, 50])
def test_dpm_solver_beats_ddim_on_the_papers_schedule(num_steps):
  """The paper's T = 2,000 steps evenly respaced, timestep-conditioned."""
  betas, timestep_map = respaced("linear", 2000, str(num_steps))
  abar = go.original_abar("linear", 2000)
  errors = {m: ode_error(m, betas, timestep_map, abar)
            for m in ("ddim", "dpm_solver")}
  assert errors["dpm_solver"] < 0.9 * errors["ddim"], errors


def test_dpm_solver_step_is_algorithm_2():
  """One step against Lu et al. (2022) Alg. 2 in float64: second order
  inside, first order at the first step and the last two (x_0 at t = 0)."""
  betas, _ = respaced("linear", 2000, "10")
  coefficients = samplers.dpm_solver_coefficients(process.from_betas(betas))
  abar = np.cumprod(1 - betas)
  alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
  lam = np.log(alpha / sigma)
  x, x0, prev = np.random.default_rng(0).normal(size=(3, 2, 4, 4, 3))
  for t in range(10):
    x_t, pred_x0, prev_x0 = (jnp.asarray(a, jnp.float32) for a in (x, x0, prev))
    got = samplers.dpm_solver_update(coefficients, x_t, jnp.asarray(t),
                                     pred_x0, prev_x0)
    if t == 0:
      np.testing.assert_allclose(got, x0, rtol=1e-6)
      continue
    h = lam[t - 1] - lam[t]
    d = x0
    if 2 <= t <= 8:
      r = (lam[t] - lam[t + 1]) / h
      d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev
    expected = sigma[t - 1] / sigma[t] * x - alpha[t - 1] * np.expm1(-h) * d
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("conditioning", ["concat", "none"])
def test_dpm_solver_inpaints_through_the_network(conditioning):
  """configs/test.py's U-Net (random weights, the zero-initialised output
  layer too): the known pixels come back exactly; the hole is not DDIM's."""
  config = configuration.load_config(str(REPO / "configs" / "test.py"))
  config.diffusion.conditioning = conditioning
  config.model.in_channels = 7 if conditioning == "concat" else 3
  config.eval.num_steps = 6
  model = models.create_model(config.model)
  shapes = jax.eval_shape(lambda: models.init_params(model, config.model,
                                                     jax.random.key(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: (0.05 * rng.normal(size=s.shape)).astype(np.float32), shapes)
  x_known = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  mask = np.zeros((2, 16, 16, 1), np.float32)
  mask[:, 4:12, 4:12] = 1.0
  keys = samplers.example_keys(jax.random.key(0), np.arange(2))
  outs = {}
  for method in ("dpm_solver", "ddim"):
    config.eval.sampler = method
    configuration.validate(config)
    sampler = samplers.create_sampler(config, inference.inference_apply(model))
    outs[method] = np.asarray(sampler(params, x_known, mask, keys))
  known = np.broadcast_to(mask, x_known.shape) == 0
  np.testing.assert_array_equal(outs["dpm_solver"][known], x_known[known])
  assert np.isfinite(outs["dpm_solver"]).all()
  assert np.abs(outs["dpm_solver"] - outs["ddim"])[~known].max() > 1e-3


def test_dpm_solver_from_the_config(config):
  """eval.sampler='dpm_solver' passes the config checks and calls the
  network eval.num_steps times, at the respaced steps' abar, in order."""
  config.eval.sampler, config.eval.num_steps = "dpm_solver", 10
  configuration.validate(config)
  levels = []
  oracle = go.gaussian_eps_fn("abar")

  def recording_oracle(params, x_t, noise_level, cond):
    jax.debug.callback(lambda a: levels.append(a[0]), noise_level,
                       ordered=True)
    return oracle(params, x_t, noise_level, cond)

  sampler = samplers.create_sampler(config, recording_oracle)
  sampler(None, *_inputs(8))
  jax.effects_barrier()
  abar = np.cumprod(1 - schedules.get_betas("linear", 2000, 1e-6, 1e-2))
  steps = sorted(schedules.space_timesteps(2000, [10]))[::-1]
  np.testing.assert_allclose(levels, abar[steps], rtol=1e-6)


# ------------------------------------------- inpainting and determinism
@pytest.fixture(scope="module")
def concat_run():
  """A conditional DDPM inpainting 8 examples, reporting its progress."""
  sampler = go.concat_sampler()
  reports = []
  x_known, mask, indices = go.inpainting_batch(8)
  keys = samplers.example_keys(jax.random.key(go.SEED), indices)
  out = np.asarray(sampler(None, x_known, mask, keys,
                           progress=lambda *a: reports.append(a)))
  return dict(sampler=sampler, out=out, reports=reports, x_known=x_known,
              mask=mask, keys=keys)


def test_concat_inpainting_keeps_known_pixels_exactly(concat_run):
  out, x_known, mask = concat_run["out"], concat_run["x_known"], concat_run[
      "mask"]
  known = np.broadcast_to(mask, out.shape) == 0
  np.testing.assert_array_equal(out[known], x_known[known])
  hole = out[~known]
  assert np.abs(hole - x_known[~known]).min() > 0
  assert abs(hole.mean() - go.MEAN) < 0.1 and np.abs(hole).max() < 1


def test_hole_content_of_x_known_is_never_read(concat_run):
  r = concat_run
  garbage = np.where(r["mask"] > 0, 1e6, r["x_known"]).astype(np.float32)
  out = np.asarray(r["sampler"](None, garbage, r["mask"], r["keys"]))
  np.testing.assert_array_equal(out, r["out"])


def test_same_example_same_result_in_any_batch(concat_run):
  out = np.asarray(go.sample_batch(concat_run["sampler"], 3, start=3))
  np.testing.assert_array_equal(out, concat_run["out"][3:6])


def test_same_result_on_eight_devices(concat_run, tmp_path):
  path = tmp_path / "sharded.npy"
  # Same compiler flags as this process, so only the sharding differs.
  flags = os.environ.get("XLA_FLAGS", "")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8")
  subprocess.run([sys.executable, str(HERE / "sharded_sampling.py"),
                  str(path)], check=True, env=env, cwd=REPO, timeout=300)
  np.testing.assert_array_equal(np.load(path), concat_run["out"])


def test_progress_is_reported_between_equal_chunks(concat_run, capsys):
  assert concat_run["reports"] == [(5, 13), (10, 13), (13, 13)]
  one_chunk = go.concat_sampler(num_chunks=1)
  r = concat_run
  out = one_chunk(None, r["x_known"], r["mask"], r["keys"],
                  progress=samplers.progress_bar("inpainting"))
  np.testing.assert_array_equal(np.asarray(out), r["out"])
  assert "inpainting: 100%" in capsys.readouterr().err


# ------------------------------------------ options change the result
def _inputs(n):
  x_known, mask, indices = go.inpainting_batch(n)
  return x_known, mask, samplers.example_keys(jax.random.key(go.SEED),
                                              indices)


def test_learned_variance_is_used(concat_run):
  """v = -1 is the fixed posterior variance; v = +1 is beta_t."""
  oracle = go.gaussian_eps_fn("abar")

  def with_v(params, x_t, noise_level, cond):
    eps = oracle(params, x_t, noise_level, cond)
    return jnp.concatenate([eps, jnp.full_like(eps, params["v"])], -1)

  options = samplers.SamplerOptions(method="ddpm", learn_sigma=True)
  learned = samplers.Sampler(concat_run["sampler"].diffusion, with_v,
                             options, 3)
  small = np.asarray(learned({"v": jnp.float32(-1)}, *_inputs(8)))
  np.testing.assert_array_equal(small, concat_run["out"])
  large = np.asarray(learned({"v": jnp.float32(1)}, *_inputs(8)))
  assert np.abs(large - small).max() > 0.05


def test_clip_denoised_changes_the_result():
  """Data near +1: clipping the predicted x_0 moves the chain.

  (DDPM: in a deterministic DDIM chain a clipped pixel ends clipped anyway.)
  """
  diffusion = go.concat_sampler().diffusion
  oracle = go.gaussian_eps_fn("abar", mean=0.9, std=0.5)
  outs = [
      np.asarray(samplers.Sampler(diffusion, oracle, samplers.SamplerOptions(
          method="ddpm", clip_denoised=clip))(None, *_inputs(8)))
      for clip in (True, False)]
  assert np.abs(outs[0] - outs[1]).max() > 0.01


# ------------------------------------------------------- from the config
@pytest.fixture()
def config():
  return configuration.load_config(str(REPO / "configs" / "default.py"))


def test_create_sampler_from_config(config):
  """The default: DDIM over 100 of the paper's 2000 steps, conditional."""
  seen = []

  def apply_fn(params, x_t, noise_level, cond):
    seen.append((x_t.shape, noise_level.shape, cond.shape))
    return jnp.zeros_like(x_t)

  sampler = samplers.create_sampler(config, apply_fn)
  expected_map = sorted(schedules.space_timesteps(2000, [100]))
  np.testing.assert_array_equal(sampler.diffusion.timestep_map, expected_map)
  assert sampler.total_steps == 100
  x_known, mask, keys = _inputs(8)
  out = np.asarray(sampler(None, x_known, mask, keys))
  assert seen == [((8, 8, 8, 3), (8,), (8, 8, 8, 4))]  # traced once
  known = np.broadcast_to(mask, out.shape) == 0
  np.testing.assert_array_equal(out[known], x_known[known])


def test_create_sampler_spreads_its_calls_by_the_spacing(config):
  config.eval.num_steps = 10
  config.eval.timestep_spacing = "quadratic"
  sampler = samplers.create_sampler(config, lambda *a: None)
  # (i / 9)^2 * 1999 rounded, for i = 0..9
  np.testing.assert_array_equal(
      sampler.diffusion.timestep_map,
      [0, 25, 99, 222, 395, 617, 888, 1209, 1579, 1999])


@pytest.mark.parametrize("overrides, message", [
    ({"eval.sampler": "euler"}, "config.eval.sampler='euler'"),
    ({"eval.num_steps": 2001}, "config.eval.num_steps=2001"),
    ({"eval.num_steps": 0}, "config.eval.num_steps=0"),
    ({"eval.sampler": "repaint"}, "repaint needs diffusion.conditioning"),
    ({"eval.sampler": "ddpm", "eval.eta": 0.5}, "config.eval.eta=0.5"),
    ({"eval.eta": 1.5}, "config.eval.eta=1.5"),
    ({"model.noise_conditioning": "sigma"}, "noise_conditioning='sigma'"),
    ({"diffusion.conditioning": "palette"}, "conditioning='palette'"),
    ({"diffusion.schedule": "sigmoid"}, "config.diffusion: schedule"),
    ({"diffusion.conditioning": "none", "eval.sampler": "repaint",
      "eval.jump_length": 0}, "config.eval.jump_length"),
])
def test_bad_config_is_a_one_line_error(config, overrides, message):
  for field, value in overrides.items():
    section, name = field.split(".")
    config[section][name] = value
  with pytest.raises(ValueError) as err:
    samplers.create_sampler(config, go.gaussian_eps_fn("abar"))
  assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("case, message", [
    ("no mask", "x_known and mask needed"),
    ("x_known only", "give both x_known and mask"),
    ("bad mask", "expected (N, H, W, C) and (N, H, W, 1)"),
    ("raw keys", "typed keys from example_keys"),
    ("no shape", "shape=None"),
])
def test_bad_call_is_a_one_line_error(concat_run, case, message):
  x_known, mask, keys = concat_run["x_known"], concat_run["mask"], concat_run[
      "keys"]
  sampler = concat_run["sampler"]
  call = {
      "no mask": lambda: sampler(None, None, None, keys, shape=x_known.shape),
      "x_known only": lambda: sampler(None, x_known, None, keys),
      "bad mask": lambda: sampler(None, x_known, mask[..., 0], keys),
      "raw keys": lambda: sampler(None, x_known, mask,
                                  jax.random.key_data(keys)),
      "no shape": lambda: samplers.Sampler(
          sampler.diffusion, go.gaussian_eps_fn("abar"),
          samplers.SamplerOptions(conditioning="none"))(None, None, None,
                                                        keys),
  }[case]
  with pytest.raises(ValueError) as err:
    call()
  assert message in str(err.value) and "\n" not in str(err.value)


def test_the_sampler_conditions_on_the_configured_prefill(config):
  """diffusion.prefill reaches every network call of the sampler."""
  config.diffusion.prefill = "harmonic"
  config.eval.num_steps = 3
  seen = []

  def apply_fn(params, x_t, noise_level, cond):
    jax.debug.callback(lambda c: seen.append(np.asarray(c)), cond,
                       ordered=True)
    return jnp.zeros_like(x_t)

  x_known, mask, keys = _inputs(4)
  samplers.create_sampler(config, apply_fn)(None, x_known, mask, keys)
  jax.effects_barrier()
  expected = process.inpainting_condition(jnp.asarray(x_known),
                                          jnp.asarray(mask), "harmonic")
  assert len(seen) == 3
  for cond in seen:
    np.testing.assert_allclose(cond, expected, atol=1e-6)
