"""Augmentation: draws within the configured ranges, effects as references."""

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
