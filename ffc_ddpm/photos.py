"""Photos as users have them, and the window of one the model sees: pure
NumPy and PIL, no model.

The model sees a square window of the photo around the hole (the shorter
side, or the hole's extent; reflect-padded past the borders), resized to its
input, so a face is never stretched. Before resizing, the hole is filled
from the known pixels (OpenCV's Telea), so none of its own colours reach
the model, and the model's hole is the footprint of the photo's (a centred
64x64 hole at 128 is the centred 32x32 one at 64, as in evaluation). Its
output is resized back to the window and used only inside the hole, pasted
or Poisson-blended into the photo (`compositing`): every known pixel of the
user's image is returned exactly, in the image's own mode (grey, grey +
alpha, RGB or RGBA; other modes become RGB). The model sees the image
composited on white, as training data is read.

Holes are mask images (white = hole) of any size, a folder of them named
like the images, or a mask protocol name (`center`, `random`, ...) drawn as
in evaluation at the model's size and stretched to each image (`user_hole`);
the inpaint command, its scorer (tools/score_inpainting.py) and the web
page read them here.
"""

import dataclasses
import io
import pathlib

from absl import logging
import numpy as np
from PIL import Image, ImageOps

from ffc_ddpm import baselines, compositing, metrics
from ffc_ddpm.data import images as image_files
from ffc_ddpm.data import masks as masks_lib

KEPT_MODES = ("L", "LA", "RGB", "RGBA")  # given back in their own mode


# --------------------------------------------------------------- photos
@dataclasses.dataclass(frozen=True)
class Photo:
  """A user's image: the pixels to give back, and what the model sees."""
  pixels: np.ndarray  # uint8 (H, W) grey, (H, W, 2) grey + alpha, or
  #                     (H, W, 3 | 4) RGB(A): known pixels are kept as is
  rgb: np.ndarray  # uint8 (H, W, 3): alpha composited on white

  @property
  def size(self) -> tuple[int, int]:
    return self.rgb.shape[0], self.rgb.shape[1]


def _png_bytes(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def photo_from_array(pixels: np.ndarray, name: str = "image") -> Photo:
  """A Photo of a uint8 array (H, W), (H, W, 2), (H, W, 3) or (H, W, 4)."""
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8 or not (
      pixels.ndim == 2 or pixels.ndim == 3 and pixels.shape[2] in (2, 3, 4)):
    raise ValueError(f"{name}: expected a uint8 image (H, W) or (H, W, 2|3|4),"
                     f" got {pixels.dtype} {pixels.shape}")
  return Photo(pixels, image_files.decode_image(_png_bytes(pixels), name))


def read_photo(path: str) -> Photo:
  """A photo file in any format PIL reads (EXIF rotation applied)."""
  rgb = image_files.load_image(path)  # one-line errors naming the file
  with Image.open(path) as image:
    image = ImageOps.exif_transpose(image)
    kept = image.mode in KEPT_MODES and (
        "transparency" not in image.info)
    pixels = np.asarray(image) if kept else rgb
  return Photo(pixels, rgb)


# ---------------------------------------------------------------- masks
def resize_hole(hole: np.ndarray, height: int, width: int) -> np.ndarray:
  """A {0, 1} (h, w, 1) mask at (height, width), nearest neighbour: each
  output pixel takes the input pixel under its centre (exact integers)."""
  rows = (2 * np.arange(height) + 1) * hole.shape[0] // (2 * height)
  cols = (2 * np.arange(width) + 1) * hole.shape[1] // (2 * width)
  return (hole[rows][:, cols] > 0.5).astype(np.float32)


def named_hole(name: str, height: int, width: int, config,
               index: int) -> np.ndarray:
  """Mask protocol `name` drawn for image `index` at the model's size, as in
  evaluation, then stretched to (height, width)."""
  mask = masks_lib.eval_mask(name, config.data.image_size, config.seed, index)
  return resize_hole(mask, height, width)


def _mask_file(spec: pathlib.Path, relative: pathlib.Path) -> pathlib.Path:
  """The mask in folder `spec` named like the image (relative path, any
  image extension)."""
  stem = relative.with_suffix("")
  folder = (spec / stem).parent
  found = [p for p in folder.iterdir()
           if p.stem == stem.name and p.is_file() and
           p.suffix.lower() in image_files.IMAGE_EXTENSIONS
           ] if folder.is_dir() else []
  if len(found) != 1:
    what = "no mask" if not found else f"{len(found)} masks"
    raise FileNotFoundError(f"--mask={spec}: {what} named {stem}.* for the "
                            f"image {relative}")
  return found[0]


def mask_source(spec: str, relative: pathlib.Path) -> pathlib.Path | None:
  """The mask file for an image, or None when `spec` is a protocol name.

  `spec`: a mask image (white = hole), a folder of masks named like the
  images (same relative path, any image extension), or a mask protocol name.
  """
  path = pathlib.Path(spec)
  if path.is_dir():
    return _mask_file(path, relative)
  if path.is_file():
    return path
  try:
    masks_lib.validate_mask_name(spec)
  except ValueError as e:
    raise ValueError(f"--mask={spec}: not a file or folder, and {e}") from None
  return None


def user_hole(spec: str, relative: pathlib.Path, height: int, width: int,
              config, index: int) -> tuple[np.ndarray, bool]:
  """(hole (H, W, 1) float32 with 1 = missing, whether it was generated).

  A mask file of another size is resized (nearest neighbour); a protocol
  name is drawn for image `index` (`named_hole`).
  """
  path = mask_source(spec, relative)
  if path is None:
    return named_hole(spec, height, width, config, index), True
  return file_hole(str(path), height, width), False


def file_hole(path: str, height: int, width: int) -> np.ndarray:
  """A mask file's hole (H, W, 1), 1 = missing, at the photo's (height,
  width): a file of another size is resized (nearest neighbour)."""
  hole = masks_lib.load_mask(path)
  if hole.shape[:2] != (height, width):
    logging.info("Mask %s is %dx%d, its image %dx%d: resized (nearest "
                 "neighbour)", path, hole.shape[1], hole.shape[0], width,
                 height)
    hole = resize_hole(hole, height, width)
  return hole


# ------------------------------------------------------ resize in and out
@dataclasses.dataclass(frozen=True)
class Window:
  """The square of the photo the model sees: rows top..top + side, columns
  left..left + side; parts outside the photo are reflect-padded."""
  top: int
  left: int
  side: int


def _window_start(lo: int, hi: int, side: int, length: int) -> int:
  """Start of a `side`-long window centred on [lo, hi), kept inside
  [0, length) when it fits, else centred on it."""
  if side > length:
    return (length - side) // 2
  return min(max((lo + hi - side) // 2, 0), length - side)


def square_window(hole: np.ndarray) -> Window:
  """The square around the hole that the model sees, so faces are never
  stretched: the photo's shorter side, or the hole's extent if longer."""
  height, width = hole.shape[:2]
  rows, cols = np.nonzero(hole[..., 0] > 0.5)
  if not len(rows):
    rows, cols = np.array([0, height - 1]), np.array([0, width - 1])
  r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
  side = max(min(height, width), r1 - r0, c1 - c0)
  return Window(_window_start(r0, r1, side, height),
                _window_start(c0, c1, side, width), int(side))


def crop_window(array: np.ndarray, window: Window) -> np.ndarray:
  """array[window] (H, W, ...) -> (side, side, ...), reflect-padded."""
  height, width = array.shape[:2]
  top, left, side = window.top, window.left, window.side
  pads = [(max(-top, 0), max(top + side - height, 0)),
          (max(-left, 0), max(left + side - width, 0))]
  inside = array[max(top, 0):top + side, max(left, 0):left + side]
  return np.pad(inside, pads + [(0, 0)] * (array.ndim - 2), mode="reflect")


def hole_at_size(hole: np.ndarray, size: int) -> np.ndarray:
  """The square hole (S, S, 1) at (size, size): a model pixel is a hole when
  a hole pixel's centre lies in its footprint (Pillow's box filter; when
  enlarging, the pixel under its centre). At equal sizes, the hole itself.
  A centred 64x64 hole at 128 is the centred 32x32 one at 64, as in
  evaluation."""
  square = Image.fromarray((hole[..., 0] > 0.5).astype(np.float32), mode="F")
  shrunk = np.asarray(square.resize((size, size), Image.Resampling.BOX))
  return (shrunk > 0).astype(np.float32)[..., None]


def prefill(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """`rgb` with its hole filled from the known pixels (OpenCV's Telea), so
  that resizing carries none of the hole's own colours into the pixels the
  model takes as known (the kernel reaches a few pixels past a footprint),
  yet keeps all the context there is. What the hole holds is never read:
  with no known pixel the result is black."""
  inside = hole[..., 0] > 0.5
  cleared = np.where(inside[..., None], 0, rgb).astype(np.uint8)
  if inside.all() or not inside.any():
    return cleared
  return baselines.inpaint("telea", cleared[None], hole[None])[0]


def to_model_input(rgb: np.ndarray, hole: np.ndarray, size: int):
  """(image in [-1, 1], mask) at the model's (size, size).

  The square window around the hole (`square_window`) is resized
  bicubically, never stretched, after its hole is filled from the known
  pixels (`prefill`); the mask is the hole at the model's size
  (`hole_at_size`). At the model's own size nothing is resized.
  """
  window = square_window(hole)
  hole = crop_window(hole, window)
  rgb = prefill(crop_window(rgb, window), hole)
  if window.side != size:
    rgb = np.asarray(Image.fromarray(rgb).resize((size, size),
                                                 Image.Resampling.BICUBIC))
  return rgb.astype(np.float32) / 127.5 - 1.0, hole_at_size(hole, size)


def from_model_output(output: np.ndarray, photo: Photo, hole: np.ndarray,
                      composite: str = "paste") -> np.ndarray:
  """The model's output resized to its window of the photo and joined to
  it in the hole by `composite` (compositing.COMPOSITES); the photo's own
  pixels (and mode) everywhere else."""
  window = square_window(hole)
  filled = Image.fromarray(np.asarray(metrics.to_uint8(output)))
  filled = filled.resize((window.side, window.side),
                         Image.Resampling.BICUBIC)
  pixels = photo.pixels
  channels = 1 if pixels.ndim == 2 else pixels.shape[2]
  if channels in (1, 2):
    filled = filled.convert("L")
  fill = np.asarray(filled)
  if channels in (2, 4):  # the alpha of a filled pixel: opaque
    fill = np.dstack([fill, np.full(fill.shape[:2], 255, np.uint8)])
  placed = _place(fill, window, pixels)  # the window holds the whole hole
  return compositing.composite(composite, pixels, placed, hole[..., 0] > 0.5)


def _place(fill: np.ndarray, window: Window, base: np.ndarray) -> np.ndarray:
  """`base` (H, W, ...) with the part under `window` taken from `fill`
  (side, side, ...)."""
  height, width = base.shape[:2]
  r0, r1 = max(window.top, 0), min(window.top + window.side, height)
  c0, c1 = max(window.left, 0), min(window.left + window.side, width)
  placed = base.copy()
  placed[r0:r1, c0:c1] = fill[r0 - window.top:r1 - window.top,
                              c0 - window.left:c1 - window.left]
  return placed


def uncertainty_at_photo(std: np.ndarray, model_hole: np.ndarray,
                         hole: np.ndarray) -> np.ndarray:
  """The model's uncertainty map (size, size, 1) on the photo: (H, W, 1),
  resized to the hole's window, 0 outside the hole.

  A normalised bilinear resize: the resized std over the resized model
  hole (`model_hole`, the mask the std was drawn under), so the hole's edge
  averages only pixels of the hole and is not darkened by the zeros
  outside it."""
  window = square_window(hole)

  def resized(a):
    a = Image.fromarray(np.asarray(a, np.float32)[..., 0], mode="F")
    return np.asarray(a.resize((window.side, window.side),
                               Image.Resampling.BILINEAR), np.float64)

  inside = np.asarray(model_hole, np.float32) > 0.5
  weight = resized(inside)
  std_sum = resized(np.where(inside, std, 0.0))
  big = np.where(weight > 1e-6, std_sum / np.maximum(weight, 1e-6), 0.0)
  placed = _place(big[..., None], window, np.zeros(hole.shape, np.float64))
  return np.where(hole > 0.5, placed, 0.0).astype(np.float32)
