"""Inpainting masks.

The convention, here and everywhere in ffc_ddpm: a mask is float32 with
values in {0, 1}, shape (H, W, 1) for one image and (N, H, W, 1) for a batch,
and **1 means the pixel is MISSING** (to be inpainted); 0 means it is known.

Mask protocols, chosen by name (`config.data.train_masks`, `config.eval.masks`):
  center   the middle square covering 25% of the image (the paper's centre
           protocol: 128x128 at 256x256). Side = image_size // 2, top-left
           corner at (image_size - side) // 2: exactly 25% and exactly centred
           when image_size is a multiple of 4; when image_size = 2 (mod 4) the
           hole still covers exactly 25% but sits half a pixel up-left of the
           centre; for odd sizes the side rounds down (a little under 25%).
  random   free-form brush strokes covering 20-30% of the image (the paper's
           random protocol); every draw lies in [0.20, 0.30].
  large    thicker strokes covering 40-60%.
  thin, medium, thick
           LaMa's evaluation masks (advimman/lama configs/data_gen/
           random_{thin,medium,thick}_256.yaml): irregular strokes, and for
           medium/thick boxes with probability 0.3/1.3; masks over 50% are
           redrawn, as LaMa does.
  box      LaMa's CelebA training boxes: 1-4 rectangles of side 30-150.
  mixed    the training mixture in `MIXTURE` (mostly the two paper protocols).
  folder:PATH
           mask images from a folder (searched recursively), white = hole,
           any size (resized by nearest neighbour).
For training, `config.data.train_masks` may also list several names separated
by commas ("center,random"): each example draws one of them uniformly.
LaMa's lengths and widths are in pixels at 256x256 and scale with image_size.

Evaluation masks are a pure function of (name, image_size, seed, index), so
every model and every run is scored on the same masks.
"""

import collections
import dataclasses
import functools
import logging
import math
import threading
import zlib

import cv2
import numpy as np
from PIL import Image, ImageOps

from ffc_ddpm.data import images

FOLDER_PREFIX = "folder:"
# Training mixture for `mixed`: name -> probability.
MIXTURE = {
    "center": 0.2,
    "random": 0.25,
    "large": 0.1,
    "thin": 0.1,
    "medium": 0.1,
    "thick": 0.1,
    "box": 0.15,
}
_LAMA_MAX_AREA = 0.5  # LaMa's max_tamper_area: larger masks are redrawn


@dataclasses.dataclass(frozen=True)
class Strokes:
  """LaMa's irregular-stroke parameters, in pixels at 256x256."""
  min_times: int
  max_times: int
  max_width: int
  max_len: int
  max_angle: int = 4


@dataclasses.dataclass(frozen=True)
class Boxes:
  """LaMa's rectangle parameters, in pixels at 256x256."""
  margin: int
  min_size: int
  max_size: int
  min_times: int
  max_times: int


_THIN = Strokes(min_times=4, max_times=50, max_width=10, max_len=40)
_MEDIUM = Strokes(min_times=4, max_times=5, max_width=50, max_len=100)
_THICK = Strokes(min_times=1, max_times=5, max_width=100, max_len=200)
_MEDIUM_BOXES = Boxes(margin=0, min_size=10, max_size=50, min_times=1,
                      max_times=5)
_THICK_BOXES = Boxes(margin=10, min_size=30, max_size=150, min_times=1,
                     max_times=3)
_TRAIN_BOXES = Boxes(margin=10, min_size=30, max_size=150, min_times=1,
                     max_times=4)


# ------------------------------------------------------------ generators
# Each takes (image_size, rng) and returns a uint8 {0, 1} (S, S) hole map.


def _center(size: int, rng: np.random.Generator) -> np.ndarray:
  del rng  # the centre square is fixed
  side = size // 2
  top = (size - side) // 2
  hole = np.zeros((size, size), np.uint8)
  hole[top:top + side, top:top + side] = 1
  return hole


def _polyline(hole: np.ndarray, rng: np.random.Generator, strokes: Strokes,
              mirrored: bool, shrink: float = 1.0) -> None:
  """Draws one LaMa brush stroke: 1-5 connected segments from a random point.

  As in LaMa, angles are 0.01 + an integer number of radians (mirrored on
  every other stroke), lengths 10 + U{0..max_len-1} and widths
  5 + U{0..max_width-1} pixels at 256; `shrink` scales length and width down.
  """
  size = hole.shape[0]
  scale = size / 256 * shrink
  x, y = int(rng.integers(size)), int(rng.integers(size))
  for _ in range(1 + rng.integers(5)):
    angle = 0.01 + rng.integers(strokes.max_angle)
    if mirrored:
      angle = 2 * math.pi - angle
    length = (10 + rng.integers(strokes.max_len)) * scale
    width = max(1, round((5 + rng.integers(strokes.max_width)) * scale))
    x_end = min(max(int(x + length * math.sin(angle)), 0), size)
    y_end = min(max(int(y + length * math.cos(angle)), 0), size)
    cv2.line(hole, (x, y), (x_end, y_end), 1, width)
    x, y = x_end, y_end


def _irregular(size: int, rng: np.random.Generator,
               strokes: Strokes) -> np.ndarray:
  """LaMa's irregular mask: min_times..max_times + 1 strokes.

  (LaMa's generator without a ramp draws up to max_times + 1 strokes.)
  """
  hole = np.zeros((size, size), np.uint8)
  for i in range(rng.integers(strokes.min_times, strokes.max_times + 2)):
    _polyline(hole, rng, strokes, mirrored=i % 2 == 0)
  return hole


def _boxes(size: int, rng: np.random.Generator, boxes: Boxes) -> np.ndarray:
  """LaMa's rectangle mask: min_times..max_times boxes inside a margin."""
  scale = size / 256
  margin = round(boxes.margin * scale)
  low = max(1, round(boxes.min_size * scale))
  high = max(low, min(round(boxes.max_size * scale), size - 2 * margin))
  hole = np.zeros((size, size), np.uint8)
  for _ in range(rng.integers(boxes.min_times, boxes.max_times + 1)):
    w, h = rng.integers(low, high + 1, size=2)
    left = rng.integers(margin, size - margin - w + 1)
    top = rng.integers(margin, size - margin - h + 1)
    hole[top:top + h, left:left + w] = 1
  return hole


def _lama(size: int, rng: np.random.Generator, strokes: Strokes,
          boxes: Boxes | None, box_weight: float = 0.3) -> np.ndarray:
  """LaMa's mixed generator (strokes, or boxes with weight 0.3 against 1).

  Masks covering more than half the image are redrawn (LaMa's
  max_tamper_area = 0.5).
  """
  while True:
    if boxes is not None and rng.random() < box_weight / (1 + box_weight):
      hole = _boxes(size, rng, boxes)
    else:
      hole = _irregular(size, rng, strokes)
    if hole.mean() <= _LAMA_MAX_AREA:
      return hole


def _strokes_with_area(size: int, rng: np.random.Generator, strokes: Strokes,
                       low: float, high: float) -> np.ndarray:
  """Adds brush strokes until the hole covers a target area in [low, high].

  The target is drawn uniformly in [low, high]. A stroke that would push the
  area above `high` is dropped and the next strokes are drawn smaller, so
  the area can never leave [low, high]: once it reaches `low`, eight
  dropped strokes in a row end the mask early.
  """
  total = size * size
  target = rng.uniform(low, high) * total
  hole = np.zeros((size, size), np.uint8)
  area, shrink, misses = 0, 1.0, 0
  while area < target and not (area >= low * total and misses >= 8):
    candidate = hole.copy()
    _polyline(candidate, rng, strokes, mirrored=bool(rng.integers(2)),
              shrink=shrink)
    new_area = np.count_nonzero(candidate)
    if new_area <= high * total:
      hole, area, misses = candidate, new_area, 0
    else:
      shrink, misses = shrink * 0.7, misses + 1
  return hole


_GENERATORS = {
    "center": _center,
    "random": functools.partial(_strokes_with_area, strokes=_MEDIUM,
                                low=0.2, high=0.3),
    "large": functools.partial(_strokes_with_area, strokes=_THICK,
                               low=0.4, high=0.6),
    "thin": functools.partial(_lama, strokes=_THIN, boxes=None),
    "medium": functools.partial(_lama, strokes=_MEDIUM, boxes=_MEDIUM_BOXES),
    "thick": functools.partial(_lama, strokes=_THICK, boxes=_THICK_BOXES),
    "box": functools.partial(_boxes, boxes=_TRAIN_BOXES),
}
MASK_NAMES = tuple(_GENERATORS) + ("mixed", FOLDER_PREFIX + "PATH")


def _mixed(size: int, rng: np.random.Generator) -> np.ndarray:
  names = list(MIXTURE)
  probabilities = np.array([MIXTURE[n] for n in names])
  name = names[rng.choice(len(names), p=probabilities / probabilities.sum())]
  return _GENERATORS[name](size, rng)


_GENERATORS["mixed"] = _mixed


# ----------------------------------------------------------- mask files


def _binary(grey: np.ndarray, path: str, top: int = 255) -> np.ndarray:
  """Grey mask values (0..top: 255 for 8-bit files, 65535 for 16-bit) ->
  uint8 {0, 1}: `top` (or 1 in a 0/1 file) is a hole.

  Noise near black and white (JPEG-like) is thresholded at half of `top`
  with a warning; a mask with many mid-grey pixels is refused (probably
  not a mask at all). One rule at any bit depth.
  """
  values = set(np.unique(grey).tolist())
  if values <= {0, top}:
    return (grey > top // 2).astype(np.uint8)
  if values <= {0, 1}:
    return grey.astype(np.uint8)
  level = grey.astype(np.float64) * (255.0 / top)
  grey_share = np.mean((level > 32) & (level < 224))
  if grey_share > 0.01:
    raise images.BadImageError(
        f"{path}: a mask must be black (0, keep) and white ({top}, hole); "
        f"{grey_share:.1%} of its pixels are grey")
  logging.warning("%s: mask has values other than 0/%d; thresholded at "
                  "half", path, top)
  return (level >= 128).astype(np.uint8)


def _mask_grey(path: str) -> tuple[np.ndarray, int]:
  """(grey values, their top: 255 or 65535) of a mask file: 16-bit files
  keep their own scale, so that their 0/1 and grey values are judged as
  an 8-bit file's are."""
  rgb = images.load_image(path)  # every check and one-line error
  with Image.open(path) as image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
      native = np.asarray(ImageOps.exif_transpose(image))
      if native.shape == rgb.shape[:2] and native.max() <= 65535:
        return native.astype(np.int64), 65535
  return np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.int64), 255


def _load_hole(path: str, image_size: int | None) -> np.ndarray:
  """A mask file as a read-only uint8 {0, 1} hole map."""
  grey, top = _mask_grey(path)
  hole = _binary(grey, path, top)
  h, w = hole.shape
  if image_size is not None and (h, w) != (image_size, image_size):
    log = logging.warning if h != w else logging.info  # stretching is odd
    log("%s: mask is %dx%d; resized to %dx%d by nearest neighbour", path, w,
        h, image_size, image_size)
    hole = cv2.resize(hole, (image_size, image_size),
                      interpolation=cv2.INTER_NEAREST)
  hole.flags.writeable = False
  return hole


# Masks resized to a model's size are read again and again in training:
# they are cached, at most this many bytes of them. Masks at a photo's own
# size (inpainting) are read once each and never cached.
CACHE_BYTES = 256 * 2**20
_cache: collections.OrderedDict = collections.OrderedDict()
_cached_bytes = [0]
_cache_lock = threading.Lock()


def _cached_hole(path: str, image_size: int) -> np.ndarray:
  """`_load_hole` through a least-recently-used cache of at most
  CACHE_BYTES."""
  key = (path, image_size)
  with _cache_lock:
    if key in _cache:
      _cache.move_to_end(key)
      return _cache[key]
  hole = _load_hole(path, image_size)
  with _cache_lock:
    if key not in _cache:
      _cache[key] = hole
      _cached_bytes[0] += hole.nbytes
    while _cached_bytes[0] > CACHE_BYTES and len(_cache) > 1:
      _cached_bytes[0] -= _cache.popitem(last=False)[1].nbytes
  return hole


def load_mask(path: str, image_size: int | None = None) -> np.ndarray:
  """A mask image (white = hole) as float32 (H, W, 1), 1 = missing.

  Resized to (image_size, image_size) by nearest neighbour when given,
  else at the file's own size.
  """
  if image_size is None:
    return _as_mask(_load_hole(path, None))
  return _as_mask(_cached_hole(path, image_size))


@functools.lru_cache(maxsize=32)
def _folder_files(folder: str) -> tuple[str, ...]:
  try:
    return tuple(images.find_images(folder))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"mask {FOLDER_PREFIX}{folder}: {e}") from None


# ---------------------------------------------------------------- public


def validate_mask_name(name: str) -> None:
  """Raises a one-line error for an unknown mask name or a bad mask folder."""
  if name.startswith(FOLDER_PREFIX):
    _folder_files(name[len(FOLDER_PREFIX):])
  elif name not in _GENERATORS:
    raise ValueError(f"unknown mask {name!r}; expected one of "
                     f"{', '.join(MASK_NAMES)}")


def train_mask_names(spec: str) -> tuple[str, ...]:
  """`config.data.train_masks` -> its protocol names, each validated."""
  names = tuple(name.strip() for name in spec.split(","))
  for name in names:
    validate_mask_name(name)
  return names


def _as_mask(hole: np.ndarray) -> np.ndarray:
  return hole.astype(np.float32)[..., None]


def sample_mask(name: str, image_size: int,
                rng: np.random.Generator) -> np.ndarray:
  """A random mask of protocol `name`: float32 (S, S, 1), 1 = missing."""
  validate_mask_name(name)
  if name.startswith(FOLDER_PREFIX):
    files = _folder_files(name[len(FOLDER_PREFIX):])
    return load_mask(files[rng.integers(len(files))], image_size)
  return _as_mask(_GENERATORS[name](image_size, rng))


def eval_mask(name: str, image_size: int, seed: int, index: int) -> np.ndarray:
  """The evaluation mask of image `index`: float32 (S, S, 1), 1 = missing.

  A pure function of its arguments (the same bytes in every run and every
  process). Folder masks are taken in order: image i gets file i mod count.
  """
  validate_mask_name(name)
  if name.startswith(FOLDER_PREFIX):
    files = _folder_files(name[len(FOLDER_PREFIX):])
    return load_mask(files[index % len(files)], image_size)
  rng = np.random.default_rng([seed, index, zlib.crc32(name.encode())])
  return _as_mask(_GENERATORS[name](image_size, rng))
