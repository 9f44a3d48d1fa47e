"""Synthetic faces: deterministic, varied, and shaped like faces."""

import numpy as np
import pytest

from ffc_ddpm.data import synthetic


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
  a = a.astype(np.float64).ravel() - a.mean()
  b = b.astype(np.float64).ravel() - b.mean()
  return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.fixture(scope="module")
def faces64():
  return [synthetic.render_face(0, i, 64) for i in range(60)]


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shape_and_dtype(size):
  image = synthetic.render_face(0, 1, size)
  assert image.shape == (size, size, 3)
  assert image.dtype == np.uint8


def test_same_arguments_same_bytes():
  a = synthetic.render_face(7, 3, 64)
  b = synthetic.render_face(7, 3, 64)
  np.testing.assert_array_equal(a, b)


def test_indices_and_seeds_differ(faces64):
  other_seed = synthetic.render_face(1, 0, 64)
  assert np.abs(faces64[0].astype(int) - faces64[1]).mean() > 10
  assert np.abs(faces64[0].astype(int) - other_seed).mean() > 10


def test_same_face_at_every_resolution():
  """Downsampled 256 render matches the 64 render (parameters are size-free)."""
  big = synthetic.render_face(0, 5, 256).astype(np.float64)
  small = synthetic.render_face(0, 5, 64).astype(np.float64)
  pooled = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
  assert np.abs(pooled - small).mean() < 4.0


def test_faces_are_mirror_symmetric(faces64):
  """A face correlates with its own mirror far more than with another face."""
  mirror = [_correlation(f, f[:, ::-1]) for f in faces64]
  others = [_correlation(a, b) for a, b in zip(faces64, faces64[1:])]
  assert np.mean(mirror) > np.mean(others) + 0.25


def test_head_differs_from_background(faces64):
  x = (np.arange(64) + 0.5) / 32 - 1
  xx, yy = np.meshgrid(x, x)
  corner = (np.abs(xx) > 0.85) & (yy < -0.85)
  for index, face in enumerate(faces64):
    p = synthetic.sample_params(0, index)
    inside = np.hypot(xx - p.centre[0], yy - p.centre[1]) < 0.3 * p.scale
    gap = np.abs(face[inside].mean(0) - face[corner].mean(0)).max()
    assert gap > 8, index


def test_features_lie_in_the_centre_hole():
  """Pupils, nose and mouth sit inside the middle 50% x 50% of the image."""
  for index in range(300):
    points = synthetic.landmarks(synthetic.sample_params(2, index))
    for name, (x, y) in points.items():
      assert max(abs(x), abs(y)) < 0.5, (index, name, x, y)


def test_pupils_are_drawn_at_their_landmarks():
  for index in range(6):
    p = synthetic.sample_params(0, index)
    image = synthetic.render_params(p, 256)
    for name in ("left_pupil", "right_pupil"):
      x, y = synthetic.landmarks(p)[name]
      row, col = int((y + 1) * 128), int((x + 1) * 128)
      assert image[row - 1:row + 2, col - 1:col + 2].max(axis=-1).min() < 30


def test_varied_colours():
  """Skin, hair and background colours vary from face to face."""
  params = [synthetic.sample_params(0, i) for i in range(200)]
  for field in ("skin", "hair", "clothes"):
    colours = np.stack([getattr(p, field) for p in params])
    assert colours.std(axis=0).min() > 0.08, field
  light_x = [p.light[0] for p in params]
  assert min(light_x) < -0.3 and max(light_x) > 0.3


def test_bad_arguments():
  with pytest.raises(ValueError, match="index"):
    synthetic.render_face(0, -1, 64)
  with pytest.raises(ValueError, match="image_size"):
    synthetic.render_face(0, 0, 4)
