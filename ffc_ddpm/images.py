"""Image grids and PNG files: what a person looks at after a run."""

import os

import numpy as np
from PIL import Image

from ffc_ddpm.metrics import to_uint8

GRID_PAD = 2  # white pixels between and around the cells of a grid


def masked_input(images_u8: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """The model's view: known pixels, the hole (mask == 1) painted white."""
  return np.where(masks > 0.5, np.uint8(255), images_u8).astype(np.uint8)


def inpainting_grid(images: np.ndarray, masks: np.ndarray,
                    *outputs: np.ndarray, pad: int = GRID_PAD) -> np.ndarray:
  """Rows of [masked input | output(s) | original], uint8 (H', W', 3).

  `images` and `outputs` are float in [-1, 1] or uint8, NHWC; masks NHW1.
  Cell (row i, column j) starts at pixel (pad + i (H + pad), pad + j (W +
  pad)); the rest is white.
  """
  images_u8 = _as_uint8(images)
  masks = np.asarray(masks)
  columns = [masked_input(images_u8, masks)]
  columns += [_as_uint8(o) for o in outputs]
  columns.append(images_u8)
  n, h, w, _ = images_u8.shape
  for j, column in enumerate(columns):
    if column.shape != images_u8.shape:
      raise ValueError(f"inpainting_grid: column {j} has shape "
                       f"{column.shape}, expected {images_u8.shape}")
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
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(_as_uint8(image)).save(path, format="PNG")


def _as_uint8(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  return x if x.dtype == np.uint8 else np.asarray(to_uint8(x))
