"""Image files -> uint8 RGB arrays, and the resize policy that squares them.

The first stage of the data flow: every source, the mask loader and the
inpaint command decode images here, so a bad file gets the same one-line
message (naming the file) wherever it turns up. Safe conversions are made
silently: grey -> RGB, palette -> RGB, RGBA/LA composited on white, 16-bit
scaled to 8-bit, EXIF orientation applied.

A file's declared size is checked before it is decoded, so a small file
declaring a huge image cannot cost gigabytes: training reads at most
`pixel_budget(image_size)` pixels (a JPEG beyond it is decoded at a reduced
scale with Pillow's `draft`, anything else is refused); other reads at most
`max_photo_pixels()`.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
RESIZE_POLICIES = ("center_crop", "resize")
# Training images are squared to image_size; a side up to this many times
# larger (and 4096 at least) is a real photo, beyond it a waste or an attack.
MAX_SIDE_FACTOR, MIN_MAX_SIDE = 16, 4096
PILLOW_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # its default


class BadImageError(ValueError):
  """An image that cannot be used; the message names the file and why."""


def find_images(folder: str) -> list[str]:
  """Image files under `folder` (recursively), sorted by relative path."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"image folder {folder!r} does not exist")
  found = []
  for root, dirs, files in os.walk(folder, followlinks=True):
    dirs.sort()
    found.extend(os.path.join(root, f) for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not found:
    raise FileNotFoundError(
        f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder!r}")
  return sorted(found, key=lambda p: os.path.relpath(p, folder))


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
  """16-bit (or 32-bit integer) grey scaled to 8-bit grey."""
  values = np.asarray(image).astype(np.float64)
  sixteen_bit = image.mode.startswith("I;16") or values.max() > 255
  top = 65535.0 if sixteen_bit else 255.0
  return Image.fromarray(np.round(values * (255.0 / top)).astype(np.uint8))


def _on_white(image: Image.Image) -> Image.Image:
  """Composites an image with alpha onto a white background."""
  rgba = image.convert("RGBA")
  white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
  mode = image.mode
  if mode.startswith("I"):
    image = _sixteen_to_eight(image)
  elif mode == "F":
    raise BadImageError(f"{name}: floating-point images (mode F) are not "
                        f"supported; save it as 8- or 16-bit PNG")
  has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
  image = _on_white(image) if has_alpha else image.convert("RGB")
  return np.asarray(image, dtype=np.uint8)


def max_photo_pixels() -> int:
  """The most pixels a photo to inpaint may declare: Pillow's
  MAX_IMAGE_PIXELS, or its default (89.5 MP) where another library has set
  it to None to switch Pillow's own check off."""
  return Image.MAX_IMAGE_PIXELS or PILLOW_MAX_IMAGE_PIXELS


def pixel_budget(image_size: int) -> int:
  """The most pixels a training image of side `image_size` may declare."""
  side = max(MAX_SIDE_FACTOR * image_size, MIN_MAX_SIDE)
  return side * side


def _check_size(image: Image.Image, name: str, image_size: int | None):
  """Refuses (or, for a JPEG read for training, drafts down) an image whose
  declared size is beyond the budget, before any pixel is decoded."""
  budget = pixel_budget(image_size) if image_size else max_photo_pixels()
  width, height = image.size
  if width * height > budget and image_size and image.format == "JPEG":
    scale = 2 * image_size / min(width, height)  # keep twice what is used
    image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
    width, height = image.size
  if width * height > budget:
    where = f" for data.image_size={image_size}" if image_size else ""
    raise BadImageError(
        f"{name}: declares {width}x{height} pixels ({width * height / 1e6:.0f}"
        f" MP), more than the {budget / 1e6:.0f} MP read{where}; shrink it "
        "first")


def decode_image(data: bytes, name: str,
                 image_size: int | None = None) -> np.ndarray:
  """Decodes encoded bytes (PNG, JPEG, WebP, ...) to uint8 RGB (H, W, 3).

  `name` (the file or record) is used in the error message; `image_size`
  (training's) sets the pixel budget, which is checked before decoding.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      _check_size(image, name, image_size)
      image.load()
      if "exif" in image.info:  # photos may be stored rotated
        image = ImageOps.exif_transpose(image)
  except BadImageError:
    raise
  except Image.UnidentifiedImageError:
    raise BadImageError(f"{name}: not an image (Pillow knows no format of "
                        "its contents)") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise BadImageError(f"{name}: cannot decode image ({e})") from None
  if min(image.size) < 1:
    raise BadImageError(f"{name}: image has no pixels ({image.size})")
  return _to_rgb(image, name)


def load_image(path: str, image_size: int | None = None) -> np.ndarray:
  """Reads an image file as uint8 RGB (H, W, 3); clear errors name the file.

  `image_size`: that of training, which bounds the pixels read
  (`decode_image`)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"image file {path!r} does not exist") from None
  except IsADirectoryError:
    raise BadImageError(f"{path}: is a folder, not an image file") from None
  if not data:
    raise BadImageError(f"{path}: file is empty")
  return decode_image(data, path, image_size)


def centre_square(image: np.ndarray) -> np.ndarray:
  """The largest centred square of an image."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return image[top:top + side, left:left + side]


def resize_image(image: np.ndarray, size: int, policy: str) -> np.ndarray:
  """Makes an (H, W, C) uint8 image (size, size, C).

  center_crop: the largest centred square, resized (keeps the aspect ratio);
  resize: the whole image resized (stretches non-square images). Resampling
  is bicubic, which Pillow antialiases when shrinking.
  """
  if policy not in RESIZE_POLICIES:
    raise ValueError(f"config.data.resize={policy!r} is not one of "
                     f"{RESIZE_POLICIES}")
  if policy == "center_crop":
    image = centre_square(image)
  if image.shape[:2] == (size, size):
    return image
  squeezed = image[..., 0] if image.shape[-1] == 1 else image
  resized = Image.fromarray(squeezed).resize((size, size),
                                             Image.Resampling.BICUBIC)
  return np.asarray(resized).reshape(size, size, image.shape[-1])
