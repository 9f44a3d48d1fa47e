"""Classical inpainting baselines on real faces and on images of known fill."""

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.restoration import inpaint_biharmonic

from ffc_ddpm import baselines


@pytest.fixture(scope="module")
def faces_and_masks(shared_dir):
  """Four 256x256 faces: two with a 25% centre hole, two with free-form holes."""
  data = shared_dir / "data"
  faces = sorted((data / "celebahq_256").glob("*.png"))[:4]
  images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in faces])
  masks = np.zeros(images.shape[:3] + (1,), np.float32)
  masks[:2, 64:192, 64:192] = 1
  for i, p in enumerate(sorted((data / "masks" / "thick").glob("*.png"))[1:3]):
    masks[2 + i, ..., 0] = np.asarray(Image.open(p).convert("L")) > 127
  return images, masks


@pytest.fixture(scope="module")
def filled(faces_and_masks):
  images, masks = faces_and_masks
  return {m: baselines.inpaint(m, images, masks) for m in baselines.BASELINES}


@pytest.mark.parametrize("method", baselines.BASELINES)
def test_known_pixels_exact_and_hole_content_unread(faces_and_masks, filled,
                                                    method):
  images, masks = faces_and_masks
  out = filled[method]
  assert out.dtype == np.uint8 and out.shape == images.shape
  known = masks[..., 0] == 0
  np.testing.assert_array_equal(out[known], images[known])
  scrambled = images.copy()
  hole = ~known
  scrambled[hole] = np.random.default_rng(0).integers(0, 256, (hole.sum(), 3))
  np.testing.assert_array_equal(baselines.inpaint(method, scrambled, masks), out)


def test_mean_fill_is_per_channel_mean_of_known(faces_and_masks, filled):
  images, masks = faces_and_masks
  for image, mask, out in zip(images, masks, filled["mean"]):
    hole = mask[..., 0] == 1
    for c in range(3):
      want = np.rint(np.sum(image[..., c] * ~hole) / np.sum(~hole))
      assert np.all(out[..., c][hole] == want)


def test_telea_and_biharmonic_match_their_libraries(faces_and_masks, filled):
  images, masks = faces_and_masks
  for i, (image, mask) in enumerate(zip(images, masks)):
    hole = mask[..., 0].astype(np.uint8)
    telea = cv2.inpaint(image, hole, baselines.TELEA_RADIUS, cv2.INPAINT_TELEA)
    np.testing.assert_array_equal(filled["telea"][i], telea)
    smooth = inpaint_biharmonic(image / 255.0, hole > 0, channel_axis=-1)
    diff = filled["biharmonic"][i].astype(float) - smooth * 255
    assert np.max(np.abs(diff)) <= 0.5 + 1e-6


def test_smooth_images_are_filled_closely():
  """A linear ramp is biharmonic, so that fill reproduces it; Telea, which
  extrapolates from the rim, beats the mean by a wide margin."""
  y, x = np.mgrid[0:64, 0:64]
  ramp = np.stack([60 + 2 * x, 40 + y + x, 200 - 2 * y], -1)
  images = np.stack([ramp, np.full_like(ramp, 90)]).astype(np.uint8)
  masks = np.zeros((2, 64, 64, 1), np.float32)
  masks[:, 20:44, 16:40] = 1
  hole = masks[..., 0] == 1
  errors = {
      m: np.abs(baselines.inpaint(m, images, masks).astype(int) - images)[hole]
      for m in baselines.BASELINES
  }
  num_ramp = errors["mean"].shape[0] // 2
  ramp_error = {m: e[:num_ramp].mean() for m, e in errors.items()}
  assert errors["biharmonic"].max() <= 1
  assert ramp_error["telea"] < 0.5 * ramp_error["mean"]
  # A flat image is filled with its colour (OpenCV's Telea drifts a little).
  for m in baselines.BASELINES:
    assert errors[m][num_ramp:].max() <= (3 if m == "telea" else 0)


def test_bad_inputs_raise_clear_errors():
  images = np.zeros((2, 16, 16, 3), np.uint8)
  masks = np.zeros((2, 16, 16, 1), np.float32)
  with pytest.raises(ValueError, match="unknown baseline 'lama'"):
    baselines.inpaint("lama", images, masks)
  with pytest.raises(ValueError, match="uint8"):
    baselines.inpaint("mean", images.astype(np.float32), masks)
  with pytest.raises(ValueError, match="masks must be"):
    baselines.inpaint("mean", images, masks[..., 0])
  masks[1] = 1
  with pytest.raises(ValueError, match="image 1 hides every pixel"):
    baselines.inpaint("telea", images, masks)
