"""Decoding images: safe conversions, and one clear message per bad file."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm.data import images


@pytest.fixture(scope="module")
def rgb():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _save(tmp_path, name, array, **kwargs):
  path = tmp_path / name
  Image.fromarray(array, **kwargs).save(path)
  return str(path)


def test_rgb_png_and_webp_round_trip(tmp_path, rgb):
  np.testing.assert_array_equal(
      images.load_image(_save(tmp_path, "a.png", rgb)), rgb)
  path = tmp_path / "a.webp"
  Image.fromarray(rgb).save(path, lossless=True)
  np.testing.assert_array_equal(images.load_image(str(path)), rgb)


def test_grey_becomes_rgb(tmp_path, rgb):
  grey = rgb[..., 0]
  loaded = images.load_image(_save(tmp_path, "g.png", grey))
  assert loaded.shape == (12, 16, 3)
  for c in range(3):
    np.testing.assert_array_equal(loaded[..., c], grey)


def test_rgba_is_composited_on_white(tmp_path, rgb):
  alpha = np.linspace(0, 255, 16).round().astype(np.uint8)
  rgba = np.dstack([rgb, np.broadcast_to(alpha, (12, 16))])
  loaded = images.load_image(_save(tmp_path, "a.png", rgba))
  a = alpha[None, :, None] / 255.0
  expected = rgb * a + 255 * (1 - a)
  assert np.abs(loaded - expected).max() <= 1


def test_palette_becomes_rgb(tmp_path, rgb):
  palette_image = Image.fromarray(rgb).quantize(colors=16)
  path = tmp_path / "p.png"
  palette_image.save(path)
  expected = np.asarray(palette_image.convert("RGB"))
  np.testing.assert_array_equal(images.load_image(str(path)), expected)


def test_sixteen_bit_is_scaled(tmp_path):
  grey16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
  path = str(tmp_path / "g16.png")
  cv2.imwrite(path, grey16)
  loaded = images.load_image(path)
  np.testing.assert_array_equal(loaded[..., 1],
                                np.arange(256).reshape(16, 16))
  rgb16 = np.dstack([grey16, grey16 // 2, grey16 // 4])
  path = str(tmp_path / "rgb16.png")
  cv2.imwrite(path, rgb16[..., ::-1])  # OpenCV writes BGR
  loaded = images.load_image(path)
  assert np.abs(loaded.astype(int) - rgb16 / 257).max() <= 1


def test_exif_rotation_is_applied(tmp_path, rgb):
  exif = Image.Exif()
  exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
  path = tmp_path / "r.jpg"
  Image.fromarray(rgb).save(path, exif=exif, quality=100)
  assert images.load_image(str(path)).shape == (16, 12, 3)


def test_bad_files_name_themselves(tmp_path, rgb):
  jpeg = tmp_path / "cut.jpg"
  Image.fromarray(np.tile(rgb, (8, 8, 1))).save(jpeg, quality=90)
  data = jpeg.read_bytes()
  jpeg.write_bytes(data[:len(data) // 2])
  with pytest.raises(images.BadImageError, match="cut.jpg"):
    images.load_image(str(jpeg))
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not an image at all")
  with pytest.raises(images.BadImageError,
                     match=r"junk.png: not an image \(Pillow knows no format"):
    images.load_image(str(junk))
  empty = tmp_path / "empty.png"
  empty.write_bytes(b"")
  with pytest.raises(images.BadImageError, match="empty.png.*empty"):
    images.load_image(str(empty))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    images.load_image(str(tmp_path / "missing.png"))
  floats = tmp_path / "f.tif"
  Image.fromarray(np.zeros((4, 4), np.float32)).save(floats)
  with pytest.raises(images.BadImageError, match="f.tif.*floating"):
    images.load_image(str(floats))


def test_find_images_recursive_sorted_and_errors(tmp_path, rgb):
  (tmp_path / "b").mkdir()
  for name in ("b/2.png", "1.JPG", "b/0.webp", "notes.txt"):
    path = tmp_path / name
    if name.endswith("txt"):
      path.write_text("x")
    else:
      Image.fromarray(rgb).save(path, format=path.suffix[1:].upper()
                                .replace("JPG", "JPEG"))
  found = images.find_images(str(tmp_path))
  assert [p[len(str(tmp_path)) + 1:] for p in found] == [
      "1.JPG", "b/0.webp", "b/2.png"]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    images.find_images(str(tmp_path / "nope"))
  (tmp_path / "none").mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    images.find_images(str(tmp_path / "none"))


def test_resize_policies(rgb):
  cropped = images.resize_image(rgb, 12, "center_crop")
  np.testing.assert_array_equal(cropped, rgb[:, 2:14])
  stretched = images.resize_image(rgb, 8, "resize")
  expected = np.asarray(Image.fromarray(rgb).resize(
      (8, 8), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(stretched, expected)
  with pytest.raises(ValueError, match="config.data.resize='zoom'"):
    images.resize_image(rgb, 8, "zoom")


def _declared(tmp_path, name, width, height, **save):
  """A small file declaring width x height pixels (one flat colour)."""
  path = tmp_path / name
  Image.new("RGB", (width, height), (10, 200, 30)).save(path, **save)
  return str(path)


def test_huge_declared_sizes_are_refused_before_decoding(tmp_path):
  side = images.MIN_MAX_SIDE + 1  # one column beyond a 16 px run's budget
  path = _declared(tmp_path, "bomb.png", side, side)
  assert os.path.getsize(path) < 200_000
  with pytest.raises(images.BadImageError) as error:
    images.load_image(path, image_size=16)
  message = str(error.value)
  assert message.startswith(f"{path}: declares {side}x{side} pixels")
  assert "data.image_size=16" in message and "\n" not in message
  assert images.pixel_budget(16) == images.MIN_MAX_SIDE**2
  assert images.pixel_budget(512) == (16 * 512)**2
  # Within the budget (a larger image_size), the same file is read whole.
  assert images.load_image(path, image_size=side // 16 + 1).shape == (
      side, side, 3)


def test_huge_jpegs_are_read_at_a_reduced_scale(tmp_path):
  path = _declared(tmp_path, "big.jpg", 4800, 4400, quality=95)
  image = images.load_image(path, image_size=64)
  # JPEG's DCT scaling by 1/8 keeps at least twice the 64 pixels used.
  assert image.shape == (550, 600, 3)
  np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (10, 200, 30),
                             atol=2)
  assert images.load_image(path).shape == (4400, 4800, 3)  # no budget hit


def test_photo_bound_holds_when_pillow_s_check_is_switched_off(tmp_path, rgb,
                                                              monkeypatch):
  """Another library may set Image.MAX_IMAGE_PIXELS = None: photos are then
  still bounded by Pillow's default, with the same one-line error."""
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
  np.testing.assert_array_equal(
      images.load_image(_save(tmp_path, "small.png", rgb)), rgb)
  side = 9500  # 90.25 MP, just above Pillow's default 89.5 MP
  path = str(tmp_path / "bomb.png")
  Image.new("1", (side, side)).save(path)  # 1 bit a pixel: 11 MB to make
  with pytest.raises(images.BadImageError,
                     match=f"declares {side}x{side} pixels .* than the 89 MP"):
    images.load_image(path)
  assert images.max_photo_pixels() == 89_478_485
