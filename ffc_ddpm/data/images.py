"""Image files -> uint8 RGB arrays, and the resize policy that squares them.

The first stage of the data flow: every source, the mask loader and the
inpaint command decode images here, so a bad file gets the same one-line
message (naming the file) wherever it turns up. Safe conversions are made
silently: grey -> RGB, palette -> RGB, RGBA/LA composited on white, 16-bit
scaled to 8-bit, EXIF orientation applied.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
RESIZE_POLICIES = ("center_crop", "resize")


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


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Decodes encoded bytes (PNG, JPEG, WebP, ...) to uint8 RGB (H, W, 3).

  `name` (the file or record) is used in the error message.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      if "exif" in image.info:  # photos may be stored rotated
        image = ImageOps.exif_transpose(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise BadImageError(f"{name}: cannot decode image ({e})") from None
  if min(image.size) < 1:
    raise BadImageError(f"{name}: image has no pixels ({image.size})")
  return _to_rgb(image, name)


def load_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 RGB (H, W, 3); clear errors name the file."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"image file {path!r} does not exist") from None
  except IsADirectoryError:
    raise BadImageError(f"{path}: is a folder, not an image file") from None
  if not data:
    raise BadImageError(f"{path}: file is empty")
  return decode_image(data, path)


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
