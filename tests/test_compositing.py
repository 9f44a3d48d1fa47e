"""compositing: the paste and the Poisson blend of a fill into a photo,
checked against closed forms and a dense solve written out pixel by pixel."""

import numpy as np
import pytest

from ffc_ddpm import compositing


def square_hole(size=24, top=6, side=10):
  hole = np.zeros((size, size), bool)
  hole[top:top + side, top:top + side] = True
  return hole


def smooth_photo(size=24, channels=3):
  """A smooth colour image (ramps and a bump), uint8."""
  y, x = np.mgrid[:size, :size] / size
  planes = [60 + 120 * x, 200 - 90 * y, 100 + 80 * np.exp(-((x - .5) ** 2 +
                                                             (y - .4) ** 2) * 8)]
  return np.round(np.stack(planes[:channels], -1)).astype(np.uint8)


def face_in_hole(size=24, channels=3):
  """Flat skin with features only inside square_hole() (away from its
  edge): nothing crosses the hole's edge, so a fill with the photo's own
  gradients must blend back to the photo exactly."""
  photo = np.full((size, size, channels), [180, 140, 120][:channels], float)
  photo[9:13, 8:11] -= 60  # an eye
  photo[9:13, 12:15] -= 50  # another
  photo[12:14, 9:14] += [40, -20, -10][:channels]  # a mouth
  return photo.astype(np.uint8)


def dense_reference(photo, fill, hole):
  """The Poisson system assembled entry by entry and solved densely."""
  f, known = fill.astype(float), photo.astype(float)
  pixels = list(zip(*np.nonzero(hole)))
  number = {p: i for i, p in enumerate(pixels)}
  a = np.zeros((len(pixels), len(pixels)))
  b = np.zeros((len(pixels), photo.shape[-1]))
  for i, (r, c) in enumerate(pixels):
    for q in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
      if not (0 <= q[0] < hole.shape[0] and 0 <= q[1] < hole.shape[1]):
        continue
      a[i, i] += 1
      if hole[q]:
        a[i, number[q]] -= 1
        b[i] += f[r, c] - f[q]
      else:
        b[i] += known[q]
  out = photo.copy()
  for (r, c), value in zip(pixels, np.linalg.solve(a, b)):
    out[r, c] = np.clip(np.round(value), 0, 255)
  return out


def test_paste_takes_the_fill_in_the_hole_only():
  photo, hole = smooth_photo(), square_hole()
  fill = np.full_like(photo, 7)
  out = compositing.composite("paste", photo, fill, hole)
  np.testing.assert_array_equal(out[hole], fill[hole])
  np.testing.assert_array_equal(out[~hole], photo[~hole])


def test_poisson_removes_a_fills_colour_offset_and_keeps_its_features():
  """A fill that is the photo shifted by a colour offset: its gradients are
  the photo's, so the blend is the photo itself (the paste is off by the
  offset everywhere in the hole)."""
  photo, hole = face_in_hole(), square_hole()
  fill = np.clip(photo.astype(int) + [25, -30, 12], 0, 255).astype(np.uint8)
  out = compositing.composite("poisson", photo, fill, hole)
  np.testing.assert_array_equal(out, photo)
  pasted = compositing.paste(photo, fill, hole)
  assert np.abs(pasted.astype(int) - photo)[hole].mean() > 10


def test_a_flat_fill_between_two_colours_becomes_a_linear_ramp():
  """A band of m rows across the image between colour a above and b below,
  filled flat: Laplace's equation in 1-D (no flow across the side borders),
  u_k = a + (b - a) (k + 1) / (m + 1)."""
  a, b, m = np.array([40., 200., 90.]), np.array([220., 20., 160.]), 9
  photo = np.zeros((20, 12, 3))
  photo[:6], photo[6 + m:] = a, b
  hole = np.zeros((20, 12), bool)
  hole[6:6 + m] = True
  fill = np.full((20, 12, 3), 123, np.uint8)
  out = compositing.poisson(photo.astype(np.uint8), fill, hole)
  ramp = a + (b - a) * (np.arange(m)[:, None] + 1) / (m + 1)
  np.testing.assert_array_equal(
      out[6:6 + m], np.broadcast_to(np.round(ramp)[:, None], (m, 12, 3)))


def test_poisson_equals_a_dense_solve_written_pixel_by_pixel():
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
  fill = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
  hole = np.zeros((16, 20), bool)
  hole[3:9, 2:8] = True
  hole[10:16, 12:20] = True  # touches the bottom and right borders
  out = compositing.poisson(photo, fill, hole)
  np.testing.assert_array_equal(out, dense_reference(photo, fill, hole))
  np.testing.assert_array_equal(out[~hole], photo[~hole])


def test_a_hole_part_without_known_neighbours_keeps_the_fill():
  photo = smooth_photo(8)
  fill = np.full_like(photo, 50)
  everything = np.ones((8, 8), bool)
  np.testing.assert_array_equal(
      compositing.poisson(photo, fill, everything), fill)


def test_grey_and_alpha_images_blend_colour_and_paste_alpha():
  photo, hole = face_in_hole(channels=1)[..., 0], square_hole()
  fill = np.clip(photo.astype(int) + 20, 0, 255).astype(np.uint8)
  grey = compositing.poisson(photo, fill, hole)
  np.testing.assert_array_equal(grey, photo)
  rgba_photo = np.dstack([smooth_photo(), np.full(photo.shape, 90, np.uint8)])
  rgba_fill = np.dstack([smooth_photo(), np.full(photo.shape, 255, np.uint8)])
  rgba = compositing.poisson(rgba_photo, rgba_fill, hole)
  np.testing.assert_array_equal(rgba[..., 3][hole], 255)
  np.testing.assert_array_equal(rgba[..., 3][~hole], 90)


def test_an_unknown_method_is_named():
  photo = smooth_photo(8)
  with pytest.raises(ValueError, match=r"--composite=blur: expected one of "
                     "paste, poisson"):
    compositing.composite("blur", photo, photo, np.ones((8, 8), bool))
