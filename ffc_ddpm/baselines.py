"""Classical inpainting baselines, scored beside the model under one protocol.

- mean: each hole filled with the mean colour of that image's known pixels,
  channel by channel: the floor any learned model must clear.
- telea: OpenCV's fast marching method (Telea 2004), `cv2.INPAINT_TELEA`.
- biharmonic: scikit-image's biharmonic inpainting (Damelin & Hoang 2018), a
  smooth fill that solves one sparse linear system per image.

All work on uint8 (N, H, W, 3) images and (N, H, W, 1) masks with 1 = missing,
and return uint8 images whose known pixels are the input's, bit for bit.
Images are processed in a thread pool, one thread per core (OpenCV and SciPy's
sparse solver release the GIL). Biharmonic, the slow one, takes about 0.25 s
for a 256x256 image with a 25% centre hole on one core, 0.11-0.15 s per image
on two; Telea about 0.02 s, mean fill 3 ms.
"""

import concurrent.futures
import os
from typing import Callable

import cv2
import numpy as np
from skimage.restoration import inpaint_biharmonic

BASELINES = ("mean", "telea", "biharmonic")
TELEA_RADIUS = 5  # pixels around each filled point that it draws from


def _fill_mean(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """Hole set to the per-channel mean of the known pixels, rounded."""
  mean = image[~hole].mean(axis=0)
  out = image.copy()
  out[hole] = np.clip(np.round(mean), 0, 255).astype(np.uint8)
  return out


def _fill_telea(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  return cv2.inpaint(image, hole.astype(np.uint8), TELEA_RADIUS,
                     cv2.INPAINT_TELEA)


def _fill_biharmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  filled = inpaint_biharmonic(image, hole, channel_axis=-1)  # floats in [0, 1]
  return np.clip(np.round(filled * 255.0), 0, 255).astype(np.uint8)


_FILLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": _fill_mean,
    "telea": _fill_telea,
    "biharmonic": _fill_biharmonic,
}


def _check_inputs(method: str, images: np.ndarray, masks: np.ndarray):
  """Raises a one-line error naming what is wrong with the arguments."""
  if method not in _FILLERS:
    raise ValueError(f"unknown baseline {method!r}; expected one of "
                     f"{BASELINES}")
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError("baselines.inpaint: images must be uint8 (N, H, W, 3), "
                     f"got {images.dtype} {images.shape}")
  want = images.shape[:3] + (1,)
  if masks.shape != want:
    raise ValueError(f"baselines.inpaint: masks must be {want} (1 = missing) "
                     f"to match the images, got {masks.shape}")
  for i in np.flatnonzero((masks > 0.5).all(axis=(1, 2, 3))):
    raise ValueError(f"baselines.inpaint: the mask of image {i} hides every "
                     "pixel; a classical baseline needs known pixels")


def _num_threads() -> int:
  if hasattr(os, "sched_getaffinity"):  # the cores this process may use
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def inpaint(method: str, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Fills the holes of uint8 (N, H, W, 3) images with a classical method.

  Args:
    method: one of BASELINES.
    images: uint8 (N, H, W, 3); what lies under the holes is never read.
    masks: (N, H, W, 1), 1 (or True) = missing.

  Returns:
    uint8 (N, H, W, 3): the holes filled, every known pixel unchanged.
  """
  images, masks = np.asarray(images), np.asarray(masks)
  _check_inputs(method, images, masks)
  holes = masks[..., 0] > 0.5
  fill = _FILLERS[method]
  with concurrent.futures.ThreadPoolExecutor(_num_threads()) as pool:
    filled = np.stack(list(pool.map(fill, images, holes)))
  return np.where(holes[..., None], filled, images)
