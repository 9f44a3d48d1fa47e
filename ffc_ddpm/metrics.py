"""PSNR and SSIM on 8-bit values, as the paper scores inpainting.

Images are first quantised to 8 bits (`to_uint8`: round, clip to 0..255), then
scored per image:
- PSNR = 10 log10(255^2 / MSE), the MSE over every pixel and channel; it is
  +inf for identical images, as in scikit-image. Means over a test set count
  such an image as PSNR_CAP, so that one exact copy cannot make them +inf.
- SSIM (Wang et al. 2004) exactly as scikit-image's `structural_similarity`
  with `channel_axis=-1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255`: an 11x11 Gaussian window
  (truncated at 3.5 sigma), SSIM maps cropped by the window radius, averaged
  over pixels and then over channels.

Everything here is jittable and acts on each image alone, so a batch sharded
over devices along N is scored where it lies and only the (N,) results move.
Values agree with scikit-image (float64) to about 1e-6 (SSIM) and 1e-5 dB.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

MAX_VALUE = 255.0
# What an identical pair (PSNR +inf) counts as in a mean over images: far above
# any real inpainting (20-35 dB); one pixel one level off in a 256x256 RGB image
# scores 101 dB.
PSNR_CAP = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # 11 taps at sigma 1.5, as Wang et al. and scikit-image
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def capped_psnr(psnr):
  """PSNR values with +inf (an exact copy) counted as PSNR_CAP, as every
  mean over images counts them. NumPy in, NumPy out."""
  return np.minimum(np.asarray(psnr, np.float64), PSNR_CAP)


def mean_psnr(psnr) -> float:
  """The mean PSNR of a set of images, an exact copy counting as PSNR_CAP:
  the one mean of every table, the training monitor and the tools (NaN for
  no images)."""
  values = capped_psnr(psnr)
  return float(np.mean(values)) if values.size else float("nan")


def to_uint8(images):
  """Images in [-1, 1] -> uint8 0..255 by rounding and clipping.

  The one quantisation used for metrics and for saved PNGs. NumPy in, NumPy
  out (on the host); a JAX array or tracer in, a JAX array out (on device).
  """
  xp = jnp if isinstance(images, jax.Array) else np
  images = xp.asarray(images)
  if images.dtype != xp.float64:  # bfloat16 cannot hold 8-bit steps
    images = images.astype(xp.float32)
  scaled = (images + 1.0) * (MAX_VALUE / 2.0)
  return xp.clip(xp.round(scaled), 0, MAX_VALUE).astype(xp.uint8)


def _check_pair(a, b, name: str, uint8: bool):
  """One-line error unless a, b are (N, H, W, C) of one shape and kind."""
  if a.shape != b.shape or len(a.shape) != 4:
    raise ValueError(f"{name}: expected two (N, H, W, C) batches of one "
                     f"shape, got {tuple(a.shape)} and {tuple(b.shape)}")
  expected = "uint8" if uint8 else "floating-point"
  for x in (a, b):
    if uint8 and x.dtype != jnp.uint8 or not uint8 and not jnp.issubdtype(
        x.dtype, jnp.floating):
      raise TypeError(f"{name}: expected {expected} images, got {x.dtype}")


def _mean_per_image(x: jax.Array) -> jax.Array:
  """Mean over (H, W, C) of a (N, H, W, C) float array, one axis at a time.

  Short float32 sums keep the rounding error near 1e-7 on 256x256 images.
  """
  return x.mean(axis=2).mean(axis=1).mean(axis=1)


@jax.jit
def psnr_uint8(a: jax.Array, b: jax.Array) -> jax.Array:
  """PSNR (dB, MAX = 255) of each pair of uint8 (N, H, W, C) images -> (N,)."""
  _check_pair(a, b, "psnr_uint8", uint8=True)
  diff = a.astype(jnp.int32) - b.astype(jnp.int32)
  # Exact integer sums along rows, then a float mean over the rows.
  row_sums = jnp.sum(diff * diff, axis=(2, 3)).astype(jnp.float32)
  mse = row_sums.mean(axis=1) / (a.shape[2] * a.shape[3])
  return 10.0 * jnp.log10(MAX_VALUE**2 / mse)


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
  """Normalised 1-D Gaussian, radius int(truncate * sigma + 0.5) as in scipy."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / sigma)**2)
  return taps / taps.sum()


def _filter_valid(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
  """1-D correlation along `axis`, keeping only fully covered positions.

  Written as a sum of shifted slices: exact float32 products on every backend
  (a convolution may run in reduced precision on GPUs and TPUs).
  """
  axis %= x.ndim
  size = x.shape[axis] - len(taps) + 1
  shifted = (jax.lax.slice_in_dim(x, k, k + size, axis=axis) * float(w)
             for k, w in enumerate(taps))
  return functools.reduce(jnp.add, shifted)


def _gaussian_blur_valid(x: jax.Array) -> jax.Array:
  """SSIM window over H and W of (..., H, W, C); borders cropped by its radius.

  scikit-image filters with reflected borders and then crops the window radius,
  so only fully covered positions ever count: filtering without borders is
  exactly the same.
  """
  taps = _gaussian_taps(SSIM_SIGMA, SSIM_TRUNCATE)
  return _filter_valid(_filter_valid(x, taps, axis=-3), taps, axis=-2)


@jax.jit
def ssim_uint8(a: jax.Array, b: jax.Array) -> jax.Array:
  """SSIM of each pair of uint8 (N, H, W, C) images -> (N,).

  Wang et al. (2004), eq. 13, with Gaussian-weighted population statistics.
  Values are shifted by 128 before the second moments (exact for integers):
  variances do not change and float32 cancellation shrinks.
  """
  _check_pair(a, b, "ssim_uint8", uint8=True)
  window = len(_gaussian_taps(SSIM_SIGMA, SSIM_TRUNCATE))
  if min(a.shape[1:3]) < window:
    raise ValueError(f"ssim_uint8: images must be at least {window}x{window}, "
                     f"got {a.shape[1]}x{a.shape[2]}")
  x = a.astype(jnp.float32) - 128.0
  y = b.astype(jnp.float32) - 128.0
  stats = _gaussian_blur_valid(jnp.stack([x, y, x * x, y * y, x * y]))
  mx, my, mxx, myy, mxy = stats
  vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
  ux, uy = mx + 128.0, my + 128.0
  c1 = (SSIM_K1 * MAX_VALUE)**2
  c2 = (SSIM_K2 * MAX_VALUE)**2
  ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2) /
              ((ux * ux + uy * uy + c1) * (vx + vy + c2)))
  return _mean_per_image(ssim_map)


@jax.jit
def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """PSNR of float images in [-1, 1], quantised to 8 bits first -> (N,)."""
  _check_pair(a, b, "psnr", uint8=False)
  return psnr_uint8(to_uint8(a), to_uint8(b))


@jax.jit
def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """SSIM of float images in [-1, 1], quantised to 8 bits first -> (N,)."""
  _check_pair(a, b, "ssim", uint8=False)
  return ssim_uint8(to_uint8(a), to_uint8(b))
