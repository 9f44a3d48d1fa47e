"""Image grids and PNG files: what a person looks at after a run."""

import os

import numpy as np
from PIL import Image

from ffc_ddpm import files
from ffc_ddpm.metrics import to_uint8

GRID_PAD = 2  # white pixels between and around the cells of a grid
MIN_CELL = 96  # grids show each image at least this many pixels high
# The uncertainty maps' colours: matplotlib's "inferno" at 0, 1/4, ... 1,
# spanning a standard deviation of 0 .. UNCERTAINTY_SCALE ([-1, 1] units;
# 0.5 = 64 of 255 levels), so maps of different images compare.
INFERNO = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9),
                    (252, 255, 164)], np.float64)
UNCERTAINTY_SCALE = 0.5


def masked_input(images_u8: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """The model's view: known pixels, the hole (mask == 1) painted white."""
  return np.where(masks > 0.5, np.uint8(255), images_u8).astype(np.uint8)


def uncertainty_image(std: np.ndarray) -> np.ndarray:
  """Standard deviations (..., 1) as uint8 colours (..., 3): the INFERNO
  map, linear in std / UNCERTAINTY_SCALE, clipped at its top."""
  level = np.clip(np.asarray(std, np.float64)[..., 0] / UNCERTAINTY_SCALE,
                  0, 1) * (len(INFERNO) - 1)
  stops = np.arange(len(INFERNO))
  return np.stack([np.round(np.interp(level, stops, INFERNO[:, c]))
                   for c in range(3)], -1).astype(np.uint8)


def grid_scale(height: int, min_cell: int = MIN_CELL) -> int:
  """The whole factor that makes an image at least `min_cell` high."""
  return max(1, -(-min_cell // height))


def inpainting_grid(images: np.ndarray, masks: np.ndarray,
                    *outputs: np.ndarray, pad: int = GRID_PAD,
                    min_cell: int = MIN_CELL) -> np.ndarray:
  """Rows of [masked input | output(s) | original], uint8 (H', W', 3).

  `images` and `outputs` are float in [-1, 1] or uint8, NHWC; masks NHW1.
  Images lower than `min_cell` are enlarged s = `grid_scale(H, min_cell)`
  times, nearest neighbour (each pixel an s x s block), so they can be
  seen. Cell (row i, column j) starts at pixel (pad + i (sH + pad), pad +
  j (sW + pad)); the rest is white.
  """
  images_u8 = _as_uint8(images)
  masks = np.asarray(masks)
  columns = [masked_input(images_u8, masks)]
  columns += [_as_uint8(o) for o in outputs]
  columns.append(images_u8)
  for j, column in enumerate(columns):
    if column.shape != images_u8.shape:
      raise ValueError(f"inpainting_grid: column {j} has shape "
                       f"{column.shape}, expected {images_u8.shape}")
  scale = grid_scale(images_u8.shape[1], min_cell)
  columns = [c.repeat(scale, 1).repeat(scale, 2) for c in columns]
  n, h, w, _ = columns[0].shape
  grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3),
                 255, np.uint8)
  for i in range(n):
    for j, column in enumerate(columns):
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      grid[top:top + h, left:left + w] = column[i]
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) or (H, W) image as PNG (lossless), creating folders.

  Floats in [-1, 1] are quantised as the metrics do (`metrics.to_uint8`);
  uint8 arrays are written as they are (grey, RGB or RGBA by channels).
  Written to a temporary name and renamed, so an interrupted run never
  leaves a partial file.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with files.atomic_write(path, "wb") as f:
    Image.fromarray(_as_uint8(image)).save(f, format="PNG")


def _as_uint8(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  return x if x.dtype == np.uint8 else np.asarray(to_uint8(x))
