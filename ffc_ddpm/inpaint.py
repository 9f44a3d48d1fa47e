"""Inpainting for users: their own photos and masks, at any size; sampling.

A photo of any size and aspect is resized to the model's square input, the
model fills the hole, and its output is resized back and used only inside the
hole: every known pixel of the user's image is returned exactly, in the
image's own mode (grey, grey + alpha, RGB or RGBA; other modes become RGB).
The model sees the image composited on white, as training data is read.

Masks are images (white = hole) of any size, a folder of them named like the
images, or a mask protocol name (`center`, `random`, ...) drawn as in
evaluation at the model's size and stretched to each image; a named mask is
saved beside the result (`<name>_mask.png`) so the hole can be seen.

A conditional model (diffusion.conditioning="concat") is given the known
pixels; an unconditional one (a converted guided-diffusion / RePaint
checkpoint) inpaints by `config.eval.sampler`, "repaint" in the converter's
config.
"""

import dataclasses
import io
import os
import pathlib
from typing import Sequence

from absl import logging
import jax
import numpy as np
from PIL import Image, ImageOps
import tqdm

from ffc_ddpm import images, inference, metrics
from ffc_ddpm.data import images as image_files
from ffc_ddpm.data import masks as masks_lib

INPAINT, SAMPLE = 4, 5  # purposes folded into the seed key
KEPT_MODES = ("L", "LA", "RGB", "RGBA")  # given back in their own mode
_INFLUENCE = 1e-3  # model pixels drawing more than this from the hole are holes


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
  hole = masks_lib.load_mask(str(path))
  if hole.shape[:2] != (height, width):
    logging.info("Mask %s is %dx%d, image %s is %dx%d: resized (nearest "
                 "neighbour)", path, hole.shape[1], hole.shape[0], relative,
                 width, height)
    hole = resize_hole(hole, height, width)
  return hole, False


# ------------------------------------------------------ resize in and out
def _resize_float(channel: np.ndarray, size: int) -> np.ndarray:
  """A float (H, W) array resized to (size, size), bicubic as the image."""
  img = Image.fromarray(channel.astype(np.float32), mode="F")
  return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def to_model_input(rgb: np.ndarray, hole: np.ndarray, size: int):
  """(image in [-1, 1], mask) at the model's (size, size).

  The image is resized bicubically; a model pixel is a hole when the
  user's hole weighs in it at all (the same filter applied to the mask), so
  no colour from inside the hole reaches the known pixels the model sees.
  """
  image = Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC)
  x = np.asarray(image, np.float32) / 127.5 - 1.0
  weight = np.abs(_resize_float(hole[..., 0], size))
  return x, (weight > _INFLUENCE).astype(np.float32)[..., None]


def from_model_output(output: np.ndarray, photo: Photo,
                      hole: np.ndarray) -> np.ndarray:
  """The model's output resized to the photo and used inside the hole only;
  the photo's own pixels (and mode) everywhere else."""
  height, width = photo.size
  filled = Image.fromarray(np.asarray(metrics.to_uint8(output)))
  filled = filled.resize((width, height), Image.Resampling.BICUBIC)
  pixels = photo.pixels
  channels = 1 if pixels.ndim == 2 else pixels.shape[2]
  if channels in (1, 2):
    filled = filled.convert("L")
  fill = np.asarray(filled)
  if channels in (2, 4):  # the alpha of a filled pixel: opaque
    fill = np.dstack([fill, np.full(fill.shape[:2], 255, np.uint8)])
  where = hole[..., 0] > 0.5
  if pixels.ndim == 3:
    where = where[..., None]
  return np.where(where, fill, pixels).astype(np.uint8)


# ------------------------------------------------------------ inpainter
class Inpainter:
  """A checkpoint loaded once, for inpainting photos of any size.

  Sample k of photo i depends only on (config.seed, index * num_samples + k)
  with index = first_index + i, so results do not depend on how photos are
  grouped into calls. `bar` (a tqdm bar) is advanced by each result; without
  it a call draws its own.
  """

  def __init__(self, config, workdir: str, step: int | None = None):
    self.config = config
    self.loaded = inference.load(config, workdir, step)
    self.size = config.data.image_size

  def inpaint(self, photos: Sequence[Photo], holes: Sequence[np.ndarray],
              num_samples: int = 1, first_index: int = 0,
              bar=None) -> list[list[np.ndarray]]:
    """For each photo, `num_samples` results at its size and in its mode."""
    if len(photos) != len(holes) or num_samples < 1:
      raise ValueError(f"inpaint: {len(photos)} photos, {len(holes)} holes, "
                       f"num_samples={num_samples}: expected one hole per "
                       "photo and num_samples >= 1")
    for photo, hole in zip(photos, holes):
      if hole.shape != photo.size + (1,):
        raise ValueError(f"inpaint: hole of shape {hole.shape} for a photo of"
                         f" {photo.size}; expected {photo.size + (1,)}")
    inputs = [to_model_input(p.rgb, h, self.size)
              for p, h in zip(photos, holes)]
    x = np.repeat(np.stack([i[0] for i in inputs]), num_samples, 0)
    m = np.repeat(np.stack([i[1] for i in inputs]), num_samples, 0)
    out = self._sample(x, m, first_index * num_samples, INPAINT, bar)
    return [[from_model_output(out[i * num_samples + k], photo, hole)
             for k in range(num_samples)]
            for i, (photo, hole) in enumerate(zip(photos, holes))]

  def sample(self, num_samples: int, first_index: int = 0,
             bar=None) -> np.ndarray:
    """Images drawn from an unconditional model: uint8 (N, S, S, 3).

    Every pixel is a hole, so any sampler (repaint included) applies.
    """
    check_unconditional(self.config)
    shape = (num_samples, self.size, self.size)
    out = self._sample(np.zeros(shape + (3,), np.float32),
                       np.ones(shape + (1,), np.float32), first_index,
                       SAMPLE, bar)
    return np.asarray(metrics.to_uint8(out))

  def _sample(self, x, mask, first_index: int, purpose: int, bar):
    key = jax.random.fold_in(jax.random.key(self.config.seed), purpose)
    own = bar is None
    if own:
      bar = progress_bar(len(x), "sampling" if purpose == SAMPLE else
                         "inpainting")
    start = bar.n
    out = inference.sample_padded(
        self.loaded, x, mask, first_index + np.arange(len(x)), key,
        self.config.eval.batch_size,
        progress=lambda done, total: bar.update(start + done - bar.n),
        step_progress=lambda done, total: bar.set_postfix_str(
            f"denoising step {done}/{total}"))
    if own:
      bar.close()
    return out


def progress_bar(total: int, description: str):
  """A tqdm bar over images (drawn on process 0 only)."""
  return tqdm.tqdm(total=total, desc=description, unit="image",
                   disable=jax.process_index() > 0)


def check_unconditional(config) -> None:
  if config.diffusion.conditioning != "none":
    raise ValueError("sampling draws from unconditional models (config."
                     "diffusion.conditioning='none'), got "
                     f"{config.diffusion.conditioning!r}: inpaint instead")


# ---------------------------------------------------------------- files
def list_images(path: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """(root, image paths relative to it): one file, or a folder's images."""
  p = pathlib.Path(path)
  if p.is_file():
    return p.parent, [pathlib.Path(p.name)]
  if not p.is_dir():
    raise FileNotFoundError(f"--image={path}: no such file or folder")
  try:
    found = image_files.find_images(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--image={path}: {e}") from None
  return p, [pathlib.Path(os.path.relpath(f, path)) for f in found]


def output_paths(output: str, relatives: Sequence[pathlib.Path],
                 num_samples: int) -> list[tuple[list[str], str]]:
  """(sample paths, mask path) of each image.

  `output` ending in .png names the one result (name_<k>.png for several
  samples); anything else is a folder, mirroring the images' relative paths.
  A generated mask goes beside its results as <name>_mask.png.
  """
  root, ext = os.path.splitext(output)
  ext = ext.lower()
  if ext in image_files.IMAGE_EXTENSIONS and ext != ".png":
    raise ValueError(f"--output={output}: results are written as PNG "
                     "(lossless, so known pixels stay exact); use a .png "
                     "name or a folder")
  if ext == ".png" and len(relatives) > 1:
    raise ValueError(f"--output={output} names one file but there are "
                     f"{len(relatives)} images; give a folder")
  bases = [root] if ext == ".png" else [
      os.path.join(output, str(r.with_suffix(""))) for r in relatives]
  suffixes = [f"_{k}" if num_samples > 1 else "" for k in range(num_samples)]
  paths = [([f"{b}{s}.png" for s in suffixes], f"{b}_mask.png")
           for b in bases]
  owner = {}
  for r, (samples, mask) in zip(relatives, paths):
    for path in samples + [mask]:
      if path in owner:
        raise ValueError(f"--image: {owner[path]} and {r} would both be "
                         f"written to {path}")
      owner[path] = r
  return paths


def inpaint_files(config, workdir: str, image: str, mask: str, output: str,
                  num_samples: int = 1, step: int | None = None) -> list[str]:
  """Inpaints an image (or a folder of them); returns the PNG paths written.

  `mask`: a mask image (white = hole), a folder of masks named like the
  images, or a mask protocol name (then saved as <result>_mask.png).
  Photos are read and written a batch at a time, so folders of any size fit
  in memory.
  """
  root, relatives = list_images(image)
  targets = output_paths(output, relatives, num_samples)
  for r in relatives:  # every mask is found before any compute
    mask_source(mask, r)
  inpainter = Inpainter(config, workdir, step)
  per_call = max(1, config.eval.batch_size // num_samples)
  bar = progress_bar(len(relatives) * num_samples, "inpainting")
  written = []
  for first in range(0, len(relatives), per_call):
    part = range(first, min(first + per_call, len(relatives)))
    photos = [read_photo(str(root / relatives[i])) for i in part]
    holes = [user_hole(mask, relatives[i], *p.size, config=config, index=i)
             for i, p in zip(part, photos)]
    results = inpainter.inpaint(photos, [h for h, _ in holes], num_samples,
                                first_index=first, bar=bar)
    for i, samples, (hole, generated) in zip(part, results, holes):
      written += _save_results(samples, hole, generated, *targets[i])
  bar.close()
  logging.info("Wrote %d inpainted image(s): %s", len(written),
               ", ".join(written[:4]) + (" ..." if len(written) > 4 else ""))
  return written


def _save_results(samples, hole, generated: bool, paths: list[str],
                  mask_path: str) -> list[str]:
  """Writes one photo's results (and its generated mask) on process 0."""
  if not hole.any():
    logging.warning("%s: the mask has no hole, nothing was inpainted",
                    paths[0])
  if jax.process_index() == 0:
    for result, path in zip(samples, paths):
      images.save_png(path, result)
    if generated:
      images.save_png(mask_path, (hole[..., 0] * 255).astype(np.uint8))
  return paths


def sample_files(config, workdir: str, output: str, num_samples: int,
                 step: int | None = None) -> list[str]:
  """Draws images from an unconditional model into `output`/sample_*.png."""
  check_unconditional(config)
  inpainter = Inpainter(config, workdir, step)
  per_call = config.eval.batch_size
  bar = progress_bar(num_samples, "sampling")
  written = []
  for first in range(0, num_samples, per_call):
    count = min(per_call, num_samples - first)
    samples = inpainter.sample(count, first_index=first, bar=bar)
    for i, sample in enumerate(samples, start=first):
      written.append(os.path.join(output, f"sample_{i:04d}.png"))
      if jax.process_index() == 0:
        images.save_png(written[-1], sample)
  bar.close()
  logging.info("Wrote %d samples to %s", len(written), output)
  return written
