"""Grids and PNG files, against layouts and values built by hand."""

import numpy as np
from PIL import Image
import pytest

from ffc_ddpm import images


def _batch(rng, n=2, h=5, w=7):
  originals = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
  masks = (rng.random((n, h, w, 1)) < 0.4).astype(np.float32)
  return originals, masks


def test_masked_input_paints_exactly_the_hole_white():
  rng = np.random.default_rng(0)
  originals, masks = _batch(rng)
  out = images.masked_input(originals, masks)
  hole = masks[..., 0] == 1
  assert out.dtype == np.uint8
  assert (out[hole] == 255).all()
  np.testing.assert_array_equal(out[~hole], originals[~hole])


def test_grid_layout_cell_by_cell():
  rng = np.random.default_rng(1)
  originals, masks = _batch(rng, n=3, h=4, w=6)
  output = rng.integers(0, 256, originals.shape, dtype=np.uint8)
  pad = 3
  grid = images.inpainting_grid(originals, masks, output, pad=pad,
                                min_cell=1)
  assert grid.shape == (3 * (4 + pad) + pad, 3 * (6 + pad) + pad, 3)
  expected = np.full(grid.shape, 255, np.uint8)
  masked = np.where(masks == 1, 255, originals)
  for i in range(3):
    for j, column in enumerate((masked, output, originals)):
      top, left = pad + i * (4 + pad), pad + j * (6 + pad)
      expected[top:top + 4, left:left + 6] = column[i]
  np.testing.assert_array_equal(grid, expected)


def test_grid_quantises_floats_like_the_metrics():
  """Floats in [-1, 1] become round((x + 1) * 127.5), clipped to 0..255."""
  rng = np.random.default_rng(2)
  floats = rng.uniform(-1.2, 1.2, (1, 3, 3, 3)).astype(np.float32)
  grid = images.inpainting_grid(floats, np.zeros((1, 3, 3, 1)), pad=0,
                                min_cell=3)
  expected = np.clip(np.round((floats[0].astype(np.float64) + 1) * 127.5),
                     0, 255)
  np.testing.assert_array_equal(grid[:, 3:6], expected)  # original column


def test_small_images_are_enlarged_nearest_neighbour_to_96_pixels():
  rng = np.random.default_rng(5)
  originals, masks = _batch(rng, n=2, h=20, w=30)  # 5 x 20 = 100 >= 96 > 80
  small = images.inpainting_grid(originals, masks, pad=1, min_cell=1)
  grid = images.inpainting_grid(originals, masks, pad=1)
  assert images.grid_scale(20) == 5 and images.grid_scale(96) == 1
  assert grid.shape == (2 * 101 + 1, 2 * 151 + 1, 3)
  for i in range(2):
    for j in range(2):
      cell = small[1 + i * 21:1 + i * 21 + 20, 1 + j * 31:1 + j * 31 + 30]
      big = grid[1 + i * 101:1 + i * 101 + 100, 1 + j * 151:1 + j * 151 + 150]
      np.testing.assert_array_equal(big, np.kron(cell, np.ones(
          (5, 5, 1), np.uint8)))


def test_uncertainty_colours_run_from_inferno_0_to_inferno_1():
  std = np.array([0.0, 0.125, 0.25, 0.5, 2.0, 0.0625])[:, None]
  colours = images.uncertainty_image(std)
  np.testing.assert_array_equal(colours[[0, 1, 2, 3, 4]], images.INFERNO[
      [0, 1, 2, 4, 4]])
  np.testing.assert_array_equal(  # halfway between the first two stops
      colours[5], np.round((images.INFERNO[0] + images.INFERNO[1]) / 2))


def test_grid_refuses_columns_of_another_shape():
  rng = np.random.default_rng(3)
  originals, masks = _batch(rng)
  with pytest.raises(ValueError, match="column 1 has shape"):
    images.inpainting_grid(originals, masks, originals[:, :4])


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_save_png_is_lossless_png(tmp_path, channels):
  rng = np.random.default_rng(4)
  shape = (9, 11) if channels is None else (9, 11, channels)
  image = rng.integers(0, 256, shape, dtype=np.uint8)
  path = tmp_path / "sub" / "out.png"
  images.save_png(str(path), image)
  with Image.open(path) as f:
    assert f.format == "PNG"
    np.testing.assert_array_equal(np.asarray(f), image)
