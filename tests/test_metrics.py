"""PSNR / SSIM against scikit-image on real CelebA-HQ faces."""

import numpy as np
import pytest
from PIL import Image
from skimage import filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ffc_ddpm import metrics

TOL = 1e-4


def skimage_psnr(a, b):
  with np.errstate(divide="ignore"):
    return np.array([peak_signal_noise_ratio(x, y, data_range=255)
                     for x, y in zip(a, b)])


def skimage_ssim(a, b):
  return np.array([
      structural_similarity(x, y, channel_axis=-1, gaussian_weights=True,
                            sigma=1.5, use_sample_covariance=False,
                            data_range=255) for x, y in zip(a, b)
  ])


def quantise(x):
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blur(images, sigma):
  return quantise(np.stack([
      filters.gaussian(x, sigma=sigma, channel_axis=-1, preserve_range=True)
      for x in images
  ]))


@pytest.fixture(scope="module")
def faces(shared_dir):
  paths = sorted((shared_dir / "data" / "celebahq_256").glob("*.png"))[:4]
  return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def degrade(name, faces):
  rng = np.random.default_rng(0)
  if name == "identical":
    return faces.copy()
  if name == "noise":
    return quantise(faces + rng.normal(0, 8, faces.shape))
  if name == "heavy_noise":
    return quantise(faces + rng.normal(0, 60, faces.shape))
  if name == "blur":
    return blur(faces, 2.0)
  if name == "hole":  # centre filled with a blurred flat colour, seam and all
    out = faces.copy()
    out[:, 64:192, 64:192] = faces.mean(axis=(1, 2), keepdims=True).round()
    return blur(out, 1.0)
  if name == "inverted":
    return 255 - faces
  raise ValueError(name)


DEGRADATIONS = ("identical", "noise", "heavy_noise", "blur", "hole", "inverted")


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_matches_skimage_on_faces(faces, name):
  other = degrade(name, faces)
  np.testing.assert_allclose(
      metrics.psnr_uint8(faces, other), skimage_psnr(faces, other), atol=TOL)
  np.testing.assert_allclose(
      metrics.ssim_uint8(faces, other), skimage_ssim(faces, other), atol=TOL)


def test_identical_pair_is_infinite_psnr_and_unit_ssim(faces):
  assert np.all(np.isposinf(metrics.psnr_uint8(faces, faces)))
  np.testing.assert_allclose(metrics.ssim_uint8(faces, faces), 1.0, atol=1e-6)


def test_psnr_closed_form():
  a = np.zeros((2, 16, 16, 3), np.uint8)
  b = a.copy()
  b[0] += 10  # MSE 100
  b[1, :8] = 255  # MSE 255^2 / 2
  np.testing.assert_allclose(
      metrics.psnr_uint8(a, b),
      [10 * np.log10(255**2 / 100), 10 * np.log10(2)], rtol=1e-6)


def test_non_square_and_single_channel():
  rng = np.random.default_rng(1)
  base = quantise(filters.gaussian(rng.uniform(0, 255, (2, 23, 40, 1)),
                                   sigma=2, channel_axis=-1,
                                   preserve_range=True))
  other = quantise(base + rng.normal(0, 20, base.shape))
  np.testing.assert_allclose(
      metrics.ssim_uint8(base, other), skimage_ssim(base, other), atol=TOL)


def test_float_metrics_quantise_first(faces):
  """[-1, 1] floats, some out of range, score as their rounded 8-bit values."""
  rng = np.random.default_rng(2)
  a = faces / 127.5 - 1 + rng.normal(0, 0.004, faces.shape)
  b = degrade("noise", faces) / 127.5 - 1.05
  a, b = a.astype(np.float32), b.astype(np.float32)
  a8, b8 = quantise((a + 1) * 127.5), quantise((b + 1) * 127.5)
  np.testing.assert_allclose(metrics.psnr(a, b), skimage_psnr(a8, b8), atol=TOL)
  np.testing.assert_allclose(metrics.ssim(a, b), skimage_ssim(a8, b8), atol=TOL)


def test_to_uint8_rounds_and_clips():
  x = np.array([-1.5, -1.0, 0.0, 1.0, 1.7, 200.4 / 127.5 - 1,
                200.6 / 127.5 - 1], np.float32)
  want = np.array([0, 0, 128, 255, 255, 200, 201], np.uint8)  # 127.5 -> 128
  np.testing.assert_array_equal(metrics.to_uint8(x), want)
  assert metrics.to_uint8(x).dtype == np.uint8
  levels = np.arange(256) / 127.5 - 1
  np.testing.assert_array_equal(metrics.to_uint8(levels), np.arange(256))


def test_to_uint8_same_on_host_and_device():
  import jax.numpy as jnp
  x = np.random.default_rng(3).uniform(-1.1, 1.1, (1000,)).astype(np.float32)
  on_device = metrics.to_uint8(jnp.asarray(x))
  assert not isinstance(metrics.to_uint8(x), type(on_device))
  np.testing.assert_array_equal(np.asarray(on_device), metrics.to_uint8(x))


def test_bad_inputs_raise_clear_errors():
  a = np.zeros((1, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match="one shape"):
    metrics.psnr_uint8(a, a[:, :8])
  with pytest.raises(TypeError, match="uint8"):
    metrics.ssim_uint8(a.astype(np.float32), a.astype(np.float32))
  with pytest.raises(TypeError, match="floating-point"):
    metrics.psnr(a, a)
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim_uint8(a[:, :10], a[:, :10])
