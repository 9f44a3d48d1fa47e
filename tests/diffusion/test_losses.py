"""The masked eps-loss and what the network is shown during training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffc_ddpm.diffusion import losses, process, schedules

T = 1000
BETAS = schedules.get_betas("scaled_linear", T)
ABAR = np.cumprod(1 - BETAS)


@pytest.fixture(scope="module")
def diffusion():
  return process.from_betas(BETAS)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
  mask = np.zeros((16, 8, 8, 1), np.float32)
  for i in range(16):  # holes of different sizes, from 1 to 16 pixels
    mask[i, :1 + i // 4, :1 + i % 4] = 1
  return x0, mask


def run_losses(diffusion, x0, mask, variants):
  """inpainting_loss of each (model, options) variant, in one jit.

  Returns [(loss, aux, seen)], `seen` being what the model was given. One
  compilation for all variants keeps the tests fast (XLA shares the draws).
  """

  @jax.jit
  def run(x0, mask):
    results = []
    for model, options in variants:
      seen = {}

      def apply_fn(params, x_t, noise_level, cond, model=model, seen=seen):
        seen.update(x_t=x_t, noise_level=noise_level, cond=cond)
        return model(x_t, noise_level, x0, mask)

      loss, aux = losses.inpainting_loss(apply_fn, None, diffusion, x0, mask,
                                         jax.random.key(7), **options)
      results.append((loss, aux, seen))
    return results

  return jax.device_get(run(x0, mask))


def exact_eps(x_t, abar, x0):
  abar = abar[:, None, None, None]
  return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)


def abar_oracle(x_t, noise_level, x0, mask):
  return exact_eps(x_t, noise_level, x0)


def timestep_oracle(x_t, noise_level, x0, mask):
  abar = jnp.asarray(ABAR, jnp.float32)[noise_level.astype(jnp.int32)]
  return exact_eps(x_t, abar, x0)


def zero_model(x_t, noise_level, x0, mask):
  return jnp.zeros_like(x_t)


def hole_oracle(x_t, noise_level, x0, mask):
  """Exact in the hole, wrong by 10 outside it."""
  exact = exact_eps(x_t, noise_level, x0)
  return jnp.where(mask > 0, exact, exact + 10)


@pytest.fixture(scope="module")
def concat_runs(diffusion, batch):
  return dict(zip(["abar", "timestep"], run_losses(diffusion, *batch, [
      (abar_oracle, dict(conditioning="concat", noise_conditioning="abar")),
      (timestep_oracle, dict(conditioning="concat",
                             noise_conditioning="timestep")),
  ])))


def test_the_network_sees_the_harmonic_prefill(diffusion, batch):
  """diffusion.prefill='harmonic' reaches the training condition: the
  hole holds the harmonic fill of the clean known pixels."""
  x0, mask = batch
  (_, _, seen), = run_losses(diffusion, x0, mask, [
      (abar_oracle, dict(conditioning="concat", prefill="harmonic"))])
  expected = np.asarray(process.harmonic_fill(jnp.asarray(x0),
                                              jnp.asarray(mask)))
  np.testing.assert_allclose(seen["cond"][..., :3], expected, atol=1e-6)
  np.testing.assert_array_equal(seen["cond"][..., 3:], mask)


@pytest.fixture(scope="module")
def unconditional_runs(diffusion, batch):
  variants = {
      "mse": (zero_model, dict(conditioning="none", kind="mse")),
      "l1": (zero_model, dict(conditioning="none", kind="l1")),
      "hole": (hole_oracle, dict(conditioning="none", region="hole")),
      "full": (hole_oracle, dict(conditioning="none", region="full")),
  }
  return dict(zip(variants, run_losses(diffusion, *batch,
                                       list(variants.values()))))


@pytest.mark.parametrize("kind", ["mse", "l1"])
@pytest.mark.parametrize("region", ["hole", "full"])
def test_masked_loss_matches_numpy(kind, region):
  rng = np.random.default_rng(1)
  target, prediction = rng.normal(size=(2, 4, 5, 5, 3)).astype(np.float32)
  mask = (rng.uniform(size=(4, 5, 5, 1)) < 0.3).astype(np.float32)
  mask[3] = 0  # an example without a hole
  error = (target - prediction)**2 if kind == "mse" else np.abs(
      target - prediction)
  if region == "full":
    expected = error.mean(axis=(1, 2, 3))
  else:
    weight = np.broadcast_to(mask, error.shape)
    count = weight.sum(axis=(1, 2, 3))
    expected = (error * weight).sum(axis=(1, 2, 3)) / np.maximum(count, 1)
    assert expected[3] == 0 and count[0] == 3 * mask[0].sum()
  got = losses.masked_loss(target, prediction, mask, kind, region)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_all_values_normalisation_is_palettes_mean(kind):
  """Palette: loss_fn(mask * eps, mask * prediction), the mean over all
  values; per example it is the hole mean times the hole's share."""
  rng = np.random.default_rng(2)
  target, prediction = rng.normal(size=(2, 4, 5, 5, 3)).astype(np.float32)
  mask = (rng.uniform(size=(4, 5, 5, 1)) < 0.3).astype(np.float32)
  mask[3] = 0
  error = (mask * target - mask * prediction)
  error = error**2 if kind == "mse" else np.abs(error)
  got = losses.masked_loss(target, prediction, mask, kind, "hole", "all")
  np.testing.assert_allclose(got, error.mean(axis=(1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(float(jnp.mean(got)), error.mean(), rtol=1e-6)
  per_hole = losses.masked_loss(target, prediction, mask, kind, "hole")
  np.testing.assert_allclose(got, per_hole * mask.mean(axis=(1, 2, 3)),
                             rtol=1e-6)


def test_normalisation_reaches_the_training_loss(diffusion, batch):
  """The same draws: "all" is the hole mean scaled by each hole's share."""
  x0, mask = batch
  (hole, hole_aux, _), (all_, all_aux, _) = run_losses(diffusion, x0, mask, [
      (zero_model, dict(conditioning="none", region="hole")),
      (zero_model, dict(conditioning="none", region="hole",
                        normalisation="all"))])
  share = mask.mean(axis=(1, 2, 3))
  np.testing.assert_allclose(all_aux["loss"], hole_aux["loss"] * share,
                             rtol=1e-5)
  assert all_ < hole / 4


@pytest.mark.parametrize("noise_conditioning", ["abar", "timestep"])
def test_concat_training_input_and_exact_predictor(batch, concat_runs,
                                                   noise_conditioning):
  """The exact eps scores ~0 on the hole; the known pixels of x_t are clean."""
  x0, mask = batch
  loss, aux, seen = concat_runs[noise_conditioning]
  assert loss < 1e-5
  np.testing.assert_array_equal(np.where(mask > 0, 0, seen["x_t"]),
                                np.where(mask > 0, 0, x0))
  assert np.abs(seen["x_t"] - x0)[np.broadcast_to(mask, x0.shape) > 0].min(
  ) > 0  # the hole is noisy
  np.testing.assert_array_equal(
      seen["cond"], np.concatenate([x0 * (1 - mask), mask], -1))
  level = seen["noise_level"]
  np.testing.assert_array_equal(aux["noise_level"], level)
  if noise_conditioning == "timestep":
    np.testing.assert_array_equal(level, np.round(level))
    assert 0 <= level.min() and level.max() <= T - 1
  else:
    assert np.float32(ABAR[-1]) <= level.min()
    assert level.max() <= np.float32(ABAR[0])
    assert not np.isin(level, np.float32(ABAR)).any()  # continuous


def test_continuous_abar_is_uniform_between_neighbouring_steps():
  """Palette: t ~ U{1..T-1}, abar ~ U(abar_t, abar_{t-1})."""
  betas = np.linspace(0.05, 0.3, 10)
  abar = np.cumprod(1 - betas)
  draw = jax.jit(functools.partial(losses.sample_continuous_abar,
                                   process.from_betas(betas), n=20_000))
  level, sqrt_abar, sqrt_one_minus = jax.device_get(draw(jax.random.key(3)))
  t = np.searchsorted(-abar, -level)  # abar[t] <= level < abar[t - 1]
  counts = np.bincount(t, minlength=10)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / 20_000, 1 / 9, atol=0.012)
  u = (level - abar[t]) / (abar[t - 1] - abar[t])
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
  np.testing.assert_allclose(sqrt_abar**2, level, rtol=1e-6)
  np.testing.assert_allclose(sqrt_one_minus**2, 1 - level, rtol=1e-5)


@pytest.mark.parametrize("kind, moment", [("mse", 1.0),
                                          ("l1", np.sqrt(2 / np.pi))])
def test_unconditional_loss_defaults_to_the_full_image(batch,
                                                       unconditional_runs,
                                                       kind, moment):
  """A zero prediction scores E[eps^2] = 1 or E|eps| = sqrt(2/pi)."""
  x0, _ = batch
  loss, aux, seen = unconditional_runs[kind]
  assert seen["cond"] is None
  assert abs(loss - moment) < 4 * 1.0 / np.sqrt(x0.size)
  assert aux["loss"].shape == (16,)


def test_loss_region_is_honoured(batch, unconditional_runs):
  """Only "full" sees the predictor's error of 10 outside the hole."""
  _, mask = batch
  assert unconditional_runs["hole"][0] < 1e-5
  hole_share = (mask.sum(axis=(1, 2, 3)) / 64).mean()
  np.testing.assert_allclose(unconditional_runs["full"][0],
                             100 * (1 - hole_share), rtol=1e-3)


@pytest.mark.parametrize("options, output_channels, message", [
    (dict(conditioning="concat", region="full"), 3, "loss_region='full'"),
    (dict(conditioning="palette"), 3, "conditioning='palette'"),
    (dict(kind="huber"), 3, "loss='huber'"),
    (dict(region="edge"), 3, "loss_region='edge'"),
    (dict(normalisation="pixels"), 3, "loss_normalisation='pixels'"),
    (dict(noise_conditioning="sigma"), 3, "noise_conditioning='sigma'"),
    (dict(), 6, "learn_sigma models can be imported"),
])
def test_bad_options_are_one_line_errors(diffusion, options, output_channels,
                                         message):
  x0, mask = jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 1))
  apply_fn = lambda p, x, level, cond: jnp.zeros(x.shape[:3] +
                                                 (output_channels,))
  with pytest.raises(ValueError) as err:
    jax.eval_shape(functools.partial(
        losses.inpainting_loss, apply_fn, None, diffusion, **options),
                   x0, mask, jax.random.key(0))
  assert message in str(err.value) and "\n" not in str(err.value)
