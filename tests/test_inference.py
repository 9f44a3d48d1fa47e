"""K samples per image: keys, the mean of K and the uncertainty map.

The network is the exact noise predictor of Gaussian data (values i.i.d.
N(MEAN, STD^2)), whose posterior given the known pixels is the prior in the
hole: posterior mean MEAN, standard deviation STD.
"""

import sys
import pathlib

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "diffusion"))
import gaussian_oracle as go  # pylint: disable=wrong-import-position
from ffc_ddpm import configuration, inference, models, parallel  # pylint: disable=wrong-import-position
from ffc_ddpm.diffusion import process, samplers, schedules  # pylint: disable=wrong-import-position

N = 8


@pytest.fixture(scope="module")
def loaded():
  """An Inference around DDPM with the exact eps (50 of 200 cosine steps)."""
  diffusion = process.from_betas(*schedules.respace(
      schedules.get_betas("cosine", 200), schedules.space_timesteps(200, 50)))
  options = samplers.SamplerOptions(method="ddpm", conditioning="concat",
                                    clip_denoised=False)
  sampler = samplers.Sampler(diffusion, go.gaussian_eps_fn("abar"), options)
  return inference.Inference(parallel.create_mesh(), None, 0, "params",
                             sampler)


def draw(loaded, num_samples):
  x_known, mask, indices = go.inpainting_batch(N)
  key = jax.random.key(go.SEED)
  samples = inference.sample_k(loaded, x_known, mask, indices, key,
                               jax.random.key(go.SEED + 1), num_samples)
  return np.asarray(samples), x_known, mask


@pytest.fixture(scope="module")
def many(loaded):
  return draw(loaded, 32)


def test_mean_of_k_approaches_the_posterior_mean(loaded, many):
  """Sample 0 is off the posterior mean by about STD; the mean of K by
  about STD / sqrt(K), and known pixels are exact."""
  samples, x_known, mask = many
  hole = np.broadcast_to(mask, x_known.shape) > 0.5
  mean = np.asarray(inference.mean_of_samples(samples, x_known, mask))
  rms = lambda a: float(np.sqrt(np.mean((a[hole] - go.MEAN)**2)))
  assert rms(samples[:, 0]) == pytest.approx(go.STD, rel=0.2)
  assert rms(mean) == pytest.approx(go.STD / np.sqrt(32), rel=0.25)
  assert np.abs(mean - samples[:, 0])[hole].mean() > go.STD / 2
  np.testing.assert_array_equal(mean[~hole], x_known[~hole])
  few, _, _ = draw(loaded, 2)
  assert rms(np.asarray(inference.mean_of_samples(few, x_known, mask))) > (
      2 * rms(mean))


def test_the_first_of_k_samples_is_the_single_sample(loaded, many):
  samples, _, _ = many
  single, _, _ = draw(loaded, 1)
  np.testing.assert_allclose(samples[:, 0], single[:, 0], atol=1e-6)
  assert len({samples[0, k].tobytes() for k in range(32)}) == 32


def test_uncertainty_is_numpy_sample_std_and_zero_outside_the_hole(many):
  samples, x_known, mask = many
  std = np.asarray(inference.std_of_samples(samples, mask))
  assert std.shape == mask.shape
  expected = np.sqrt(np.mean(np.var(samples.astype(np.float64), axis=1,
                                    ddof=1), axis=-1, keepdims=True))
  hole = mask > 0.5
  np.testing.assert_allclose(std[hole], expected[hole], rtol=1e-5)
  np.testing.assert_array_equal(std[~hole], 0)
  assert std[hole].mean() == pytest.approx(go.STD, rel=0.2)


def test_sample_keys_are_distinct_and_example_major():
  key, extra = jax.random.key(0), jax.random.key(1)
  keys = inference.sample_keys(key, extra, np.arange(5), 3)
  data = jax.random.key_data(keys).reshape(5, 3, -1)
  assert len({d.tobytes() for d in data.reshape(15, -1)}) == 15
  np.testing.assert_array_equal(
      data[:, 0], jax.random.key_data(samplers.example_keys(key,
                                                            np.arange(5))))


@pytest.mark.parametrize("field, value", [
    ("sampler", "ddpm"), ("num_steps", 5), ("timestep_spacing", "quadratic"),
    ("eta", 0.5), ("jump_length", 3), ("jump_n_sample", 2)])
def test_cached_samplers_differ_in_every_sampler_setting(field, value):
  """The sampler cache hands back a new sampler when any field that shapes
  its steps changes (a stale one would score the wrong sampler)."""
  config = configuration.load_config(
      str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "test.py"))
  model = models.create_model(config.model)
  first = inference.create_sampler(config, model)
  assert inference.create_sampler(config, model) is first
  assert config.eval[field] != value
  config.eval[field] = value
  assert inference.create_sampler(config, model) is not first


def test_a_spaced_sampler_walks_the_spaced_steps():
  config = configuration.load_config(
      str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "test.py"))
  config.eval.timestep_spacing = "quadratic"
  spaced = inference.create_sampler(config, models.create_model(config.model))
  # (i / 3)^2 * 99 for i = 0..3: the test config's 4 of 100 steps
  np.testing.assert_array_equal(spaced.diffusion.timestep_map,
                                [0, 11, 44, 99])
