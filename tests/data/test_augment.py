"""Augmentation: draws within the configured ranges, effects as references."""

import cv2
import numpy as np
import pytest
from skimage import color

from ffc_ddpm.data import augment
from ffc_ddpm.data import synthetic

SIZE = 32


def test_draws_stay_within_ranges(default_config):
  aug = default_config().data.augment
  ranges = augment.Ranges.from_config(aug)
  rng = np.random.default_rng(0)
  draws = [augment.sample(ranges, rng) for _ in range(2000)]
  for field in ("brightness", "contrast", "saturation"):
    values = np.array([getattr(d, field) for d in draws])
    x = getattr(aug, field)
    assert values.min() >= 1 - x and values.max() <= 1 + x
    assert values.max() - values.min() > 1.8 * x  # the range is used
  hues = np.array([d.hue for d in draws])
  assert np.abs(hues).max() <= aug.hue and hues.std() > aug.hue / 2
  scales = np.array([d.crop_scale for d in draws])
  assert scales.min() >= aug.crop_min_scale and scales.max() <= 1
  assert abs(np.mean([d.flip for d in draws]) - 0.5) < 0.05
  no_flip = augment.Ranges(hflip=False)
  assert not any(augment.sample(no_flip, rng).flip
                 for _ in range(100))


def _draw(**changes) -> augment.Draw:
  identity = dict(crop_scale=1.0, crop_top=0.0, crop_left=0.0, flip=False,
                  brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0)
  return augment.Draw(**(identity | changes))


@pytest.fixture(scope="module")
def face():
  return synthetic.render_face(0, 3, SIZE)


def test_augment_identity_and_flip(face):
  np.testing.assert_allclose(augment.apply(face, _draw()), face / 255.0,
                             atol=1e-6)
  np.testing.assert_allclose(augment.apply(face, _draw(flip=True)),
                             face[:, ::-1] / 255.0, atol=1e-6)


def test_colour_jitter_matches_references(face):
  x = face / 255.0
  np.testing.assert_allclose(
      augment.apply(face, _draw(brightness=1.3)),
      np.clip(x * 1.3, 0, 1), atol=1e-5)
  grey = x @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(
      augment.apply(face, _draw(contrast=0.5)),
      np.clip(grey.mean() + 0.5 * (x - grey.mean()), 0, 1), atol=1e-5)
  desaturated = augment.apply(face, _draw(saturation=0.0))
  np.testing.assert_allclose(desaturated, np.repeat(grey[..., None], 3, -1),
                             atol=1e-5)
  hsv = color.rgb2hsv(x)
  hsv[..., 0] = (hsv[..., 0] + 0.1) % 1.0
  np.testing.assert_allclose(augment.apply(face, _draw(hue=0.1)),
                             color.hsv2rgb(hsv), atol=2e-3)


def test_crop_keeps_the_chosen_corner():
  quadrants = np.zeros((SIZE, SIZE, 3), np.uint8)
  quadrants[:SIZE // 2, :SIZE // 2] = 200  # bright top-left quarter
  top_left = augment.apply(quadrants, _draw(crop_scale=0.5))
  bottom_right = augment.apply(quadrants,
                                  _draw(crop_scale=0.5, crop_top=1.0,
                                        crop_left=1.0))
  np.testing.assert_allclose(top_left[2:-2, 2:-2], 200 / 255, atol=1e-6)
  np.testing.assert_allclose(bottom_right[2:-2, 2:-2], 0, atol=1e-6)


def test_to_model_range():
  image = np.array([[[0, 255, 51]]], np.uint8)
  np.testing.assert_allclose(augment.to_model_range(image), [[[-1, 1, -0.6]]],
                             atol=1e-6)
  np.testing.assert_allclose(augment.to_model_range(np.float32([0.5])), [0.0])


def test_bad_ranges_are_named():
  with pytest.raises(ValueError, match="augment.crop_min_scale=0"):
    augment.Ranges(crop_min_scale=0.0).validate()
  with pytest.raises(ValueError, match="augment.hue=0.7"):
    augment.Ranges(hue=0.7).validate()


# ------------------------------------------------- zoom-out and rotation


def test_defaults_draw_exactly_the_crop_flip_and_jitter(default_config):
  """Zoom-out and rotation off: the same draws, in the same order, from the
  same generator, as crop, flip and jitter alone (so the mask drawn next
  from that generator is unchanged too)."""
  aug = default_config().data.augment
  ranges = augment.Ranges.from_config(aug)
  rng, twin = np.random.default_rng(7), np.random.default_rng(7)
  for _ in range(50):
    draw = augment.sample(ranges, rng)
    u = twin.random(8)

    def within(x, lo, hi):
      return lo + (hi - lo) * x

    assert draw.crop_scale == within(u[0], aug.crop_min_scale, 1.0)
    assert (draw.crop_top, draw.crop_left) == (u[1], u[2])
    assert draw.flip == (u[3] < 0.5)
    for x, field in zip(u[4:7], ("brightness", "contrast", "saturation")):
      value = getattr(aug, field)
      assert getattr(draw, field) == within(x, 1 - value, 1 + value)
    assert draw.hue == within(u[7], -aug.hue, aug.hue)
    assert draw.rotation == 0.0
  assert rng.random() == twin.random()


def test_crop_without_rotation_is_the_plain_crop(face):
  """crop_scale <= 1 and no rotation: slicing and bicubic resizing only."""
  draw = _draw(crop_scale=0.8, crop_top=0.3, crop_left=0.9, flip=True,
               brightness=1.1, hue=0.01)
  side = round(SIZE * 0.8)
  top, left = round(0.3 * (SIZE - side)), round(0.9 * (SIZE - side))
  square = np.ascontiguousarray(face[top:top + side, left:left + side])
  expected = cv2.resize(square, (SIZE, SIZE),
                        interpolation=cv2.INTER_CUBIC)[:, ::-1]
  expected = augment.colour_jitter(expected.astype(np.float32) / 255, draw)
  assert augment.apply(face, draw).tobytes() == expected.tobytes()


def _square(size: int, side: int) -> np.ndarray:
  """A white square of `side` pixels centred on black."""
  image = np.zeros((size, size, 3), np.uint8)
  start = (size - side) // 2
  image[start:start + side, start:start + side] = 255
  return image


def test_zoom_out_shrinks_a_centred_square_by_the_scale():
  size, side, scale = 64, 24, 0.75
  out = augment.apply(_square(size, side),
                      _draw(crop_scale=1 / scale, crop_top=0.5,
                            crop_left=0.5, pad_mode="black"))[..., 0]
  for line in (out[size // 2], out[:, size // 2]):
    assert abs((line > 0.5).sum() - side * scale) <= 1
  # Area averaging keeps the light: total brightness = (side * scale)^2.
  np.testing.assert_allclose(out.sum(), (side * scale) ** 2, rtol=0.01)
  rows, cols = np.indices(out.shape)
  centre = (size - 1) / 2
  for coordinate in (rows, cols):
    assert abs((coordinate * out).sum() / out.sum() - centre) < 0.5


@pytest.mark.parametrize("pad_mode,numpy_mode",
                         [("reflect", "reflect"), ("edge", "edge"),
                          ("black", "constant")])
def test_zoom_out_places_the_image_and_pads_it(face, pad_mode, numpy_mode):
  """crop_top=0, crop_left=1: the shrunk image at the top right, the
  margin filled as numpy.pad fills it."""
  side = 24  # SIZE / crop_scale
  small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
  expected = np.pad(small, ((0, SIZE - side), (SIZE - side, 0), (0, 0)),
                    mode=numpy_mode)
  out = augment.apply(face, _draw(crop_scale=SIZE / side, crop_top=0.0,
                                  crop_left=1.0, pad_mode=pad_mode))
  np.testing.assert_allclose(out, expected / 255, atol=1e-6)


def _blob(size: int, row: float, col: float) -> np.ndarray:
  """A small bright Gaussian dot (sigma 1.5 px) at (row, col)."""
  rows, cols = np.indices((size, size))
  dot = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 1.5 ** 2))
  return np.repeat(np.round(255 * dot).astype(np.uint8)[..., None], 3, -1)


@pytest.mark.parametrize("degrees", [30.0, -12.5])
def test_rotation_moves_a_dot_as_the_closed_form(degrees):
  """Counter-clockwise as seen (rows grow downwards) about the centre:
  x' = c + cos(t) dx + sin(t) dy, y' = c - sin(t) dx + cos(t) dy."""
  size, row, col = 64, 20.0, 42.0
  out = augment.apply(_blob(size, row, col),
                      _draw(rotation=degrees, pad_mode="black"))[..., 0]
  c, t = (size - 1) / 2, np.radians(degrees)
  dx, dy = col - c, row - c
  want_col = c + np.cos(t) * dx + np.sin(t) * dy
  want_row = c - np.sin(t) * dx + np.cos(t) * dy
  rows, cols = np.indices(out.shape)
  assert abs((rows * out).sum() / out.sum() - want_row) < 0.2
  assert abs((cols * out).sum() / out.sum() - want_col) < 0.2


def test_zoom_out_and_rotation_draws():
  ranges = augment.Ranges(crop_min_scale=0.8, zoom_out_min_scale=0.5,
                          rotate_degrees=10.0, pad_mode="edge")
  rng = np.random.default_rng(1)
  draws = [augment.sample(ranges, rng) for _ in range(4000)]
  scales = np.array([d.crop_scale for d in draws])
  assert scales.min() >= 0.8 and scales.max() <= 2.0
  # Uniform window side in [0.8, 2]: P(zoom out) = (2 - 1) / (2 - 0.8).
  p, n = 1.0 / 1.2, len(draws)
  assert abs((scales > 1).mean() - p) < 4.5 * np.sqrt(p * (1 - p) / n)
  angles = np.array([d.rotation for d in draws])
  assert np.abs(angles).max() <= 10 and angles.std() > 5
  assert {d.pad_mode for d in draws} == {"edge"}


@pytest.mark.parametrize("field,value", [
    ("zoom_out_min_scale", 0.0), ("zoom_out_min_scale", 1.5),
    ("rotate_degrees", -1.0), ("rotate_degrees", 200.0),
    ("pad_mode", "wrap")])
def test_bad_zoom_and_rotation_ranges_are_named(field, value):
  with pytest.raises(ValueError,
                     match=f"config.data.augment.{field}={value!r}"):
    augment.Ranges(**{field: value}).validate()
