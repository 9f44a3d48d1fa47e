"""Inpainting for users: their own photos and masks, at any size; sampling.

The model sees a square window of the photo around the hole (the shorter
side, or the hole's extent; reflect-padded past the borders), resized to its
input, so a face is never stretched. Before resizing, the hole is filled
from the known pixels (OpenCV's Telea), so none of its own colours reach
the model, and the model's hole is the footprint of the photo's (a centred
64x64 hole at 128 is the centred 32x32 one at 64, as in evaluation). Its
output is resized back to the window and used only inside the hole, pasted
or Poisson-blended into the photo (--composite, `compositing`): every known
pixel of the user's image is returned exactly, in the image's own mode
(grey, grey + alpha, RGB or RGBA; other modes become RGB).
The model sees the image composited on white, as training data is read.
With K samples (--num_samples) the per-pixel mean can be written instead
(--reduce=mean), and an uncertainty map beside the results.

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

from ffc_ddpm import baselines, compositing, images, inference, lock
from ffc_ddpm import metrics
from ffc_ddpm.data import images as image_files
from ffc_ddpm.data import masks as masks_lib

REDUCTIONS = ("none", "mean")  # --reduce: every sample, or their mean
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


# ------------------------------------------------------------ inpainter
@dataclasses.dataclass(frozen=True)
class Inpainted:
  """One photo's results, at its size and in its mode."""
  results: list[np.ndarray]  # the K samples, or ("mean") their mean
  uncertainty: np.ndarray | None  # (H, W, 1) std across K > 1 samples in
  #                                 [-1, 1] units, 0 outside the hole


class Inpainter:
  """A checkpoint loaded once, for inpainting photos of any size.

  Sample k of photo i depends only on (config.seed, index, k) with index =
  first_index + i (`inference.sample_keys`: sample 0 is the same for any
  K), so results do not depend on how photos are grouped into calls. `bar`
  (a tqdm bar) is advanced by each result; without it a call draws its own.
  """

  def __init__(self, config, workdir: str | None, step: int | None = None,
               weights_file: str | None = None):
    self.config = config
    self.loaded = inference.load(config, workdir, step,
                                 weights_file=weights_file)
    self.size = config.data.image_size

  def inpaint(self, photos: Sequence[Photo], holes: Sequence[np.ndarray],
              num_samples: int = 1, first_index: int = 0,
              bar=None, reduce: str = "none",
              composite: str = "paste") -> list[Inpainted]:
    """For each photo, `num_samples` results (reduce "none") or their
    per-pixel mean (averaged in float, "mean"), each joined to the photo by
    `composite`, and for K > 1 samples the uncertainty map
    (`inference.std_of_samples`)."""
    if len(photos) != len(holes) or num_samples < 1:
      raise ValueError(f"inpaint: {len(photos)} photos, {len(holes)} holes, "
                       f"num_samples={num_samples}: expected one hole per "
                       "photo and num_samples >= 1")
    if reduce not in REDUCTIONS:
      raise ValueError(f"--reduce={reduce}: expected one of "
                       f"{', '.join(REDUCTIONS)}")
    compositing.check(composite)  # before any sampling
    for photo, hole in zip(photos, holes):
      if hole.shape != photo.size + (1,):
        raise ValueError(f"inpaint: hole of shape {hole.shape} for a photo of"
                         f" {photo.size}; expected {photo.size + (1,)}")
    inputs = [to_model_input(p.rgb, h, self.size)
              for p, h in zip(photos, holes)]
    x, m = (np.stack([i[j] for i in inputs]) for j in (0, 1))
    drawn = self._sample(x, m, first_index, inference.Purpose.INPAINT, bar,
                         num_samples)
    outputs = drawn.mean[:, None] if reduce == "mean" else drawn.samples
    return [Inpainted([from_model_output(o, photo, hole, composite)
                       for o in outs],
                      uncertainty_at_photo(s, mh, hole) if num_samples > 1
                      else None)
            for outs, s, mh, photo, hole in zip(outputs, drawn.std, m, photos,
                                                holes)]

  def sample(self, num_samples: int, first_index: int = 0,
             bar=None) -> np.ndarray:
    """Images drawn from an unconditional model: uint8 (N, S, S, 3).

    Every pixel is a hole, so any sampler (repaint included) applies.
    """
    check_unconditional(self.config)
    shape = (num_samples, self.size, self.size)
    drawn = self._sample(np.zeros(shape + (3,), np.float32),
                         np.ones(shape + (1,), np.float32), first_index,
                         inference.Purpose.SAMPLE, bar)
    return np.asarray(metrics.to_uint8(drawn.first))

  def _sample(self, x, mask, first_index: int, purpose: inference.Purpose,
              bar, num_samples: int = 1) -> inference.Draw:
    """K samples of each example, their mean and std on the host
    (`inference.sample_padded`)."""
    own = bar is None
    if own:
      bar = progress_bar(len(x) * num_samples, "sampling" if
                         purpose == inference.Purpose.SAMPLE else
                         "inpainting")
    start = bar.n
    drawn = inference.sample_padded(
        self.loaded, x, mask, first_index + np.arange(len(x)),
        self.config.seed, purpose, self.config.eval.batch_size,
        progress=lambda done, total: bar.update(start + done - bar.n),
        step_progress=lambda done, total: bar.set_postfix_str(
            f"denoising step {done}/{total}"),
        num_samples=num_samples)
    if own:
      bar.close()
    return drawn


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
def list_images(path: str, output: str | None = None
                ) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """(root, image paths relative to it): one file, or a folder's images.

  Images under the `output` folder (earlier results, when it is a folder
  inside the image folder) are not inputs: they are skipped, with one line.
  """
  p = pathlib.Path(path)
  if p.is_file():
    return p.parent, [pathlib.Path(p.name)]
  if not p.is_dir():
    raise FileNotFoundError(f"--image={path}: no such file or folder")
  try:
    found = image_files.find_images(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--image={path}: {e}") from None
  results = pathlib.Path(output_folder(output or path)).resolve()
  if results != p.resolve():  # a results folder inside the image folder
    kept = [f for f in found
            if not pathlib.Path(f).resolve().is_relative_to(results)]
    if len(kept) < len(found):
      logging.warning("--image=%s: skipping %d file(s) under --output=%s "
                      "(earlier results, not photos)", path,
                      len(found) - len(kept), output)
    if not kept:
      raise FileNotFoundError(f"--image={path}: no images outside "
                              f"--output={output}")
    found = kept
  return p, [pathlib.Path(os.path.relpath(f, path)) for f in found]


def names_one_file(output: str) -> bool:
  """Whether --output names one result file (`x.png`), not a folder."""
  return output.lower().endswith(".png") and not os.path.isdir(output)


def output_folder(output: str) -> str:
  """The folder that the results of --output go into (and that is locked
  while they are written)."""
  return (os.path.dirname(output) or ".") if names_one_file(output) else output


def output_paths(output: str, relatives: Sequence[pathlib.Path],
                 num_samples: int, reduce: str = "none"
                 ) -> list[tuple[list[str], str]]:
  """(result paths, mask path) of each image.

  `output` ending in .png names the one result (name_<k>.png for several
  samples with reduce "none"; name.png for their mean); anything else is a
  folder, mirroring the images' relative paths. With K > 1 samples the
  uncertainty map is the last result, <name>_uncertainty.png. A generated
  mask goes beside its results as <name>_mask.png.
  """
  root, ext = os.path.splitext(output)
  ext = ext.lower()
  if ext in image_files.IMAGE_EXTENSIONS and ext != ".png":
    raise ValueError(f"--output={output}: results are written as PNG "
                     "(lossless, so known pixels stay exact); use a .png "
                     "name or a folder")
  if ext not in ("", ".png") and not os.path.isdir(output):
    raise ValueError(f"--output={output}: expected a .png file name or a "
                     "folder (an existing one, or a name without an "
                     "extension)")
  single = names_one_file(output)
  if single and len(relatives) > 1:
    raise ValueError(f"--output={output} names one file but there are "
                     f"{len(relatives)} images; give a folder")
  bases = [root] if single else [
      os.path.join(output, str(r.with_suffix(""))) for r in relatives]
  files = 1 if reduce == "mean" else num_samples
  suffixes = [f"_{k}" if files > 1 else "" for k in range(files)]
  suffixes += ["_uncertainty"] if num_samples > 1 else []
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


def _identity(path) -> tuple[int, int]:
  """The file behind a path, whatever the spelling or link."""
  status = os.stat(path)
  return status.st_dev, status.st_ino


def refuse_overwriting_inputs(root: pathlib.Path,
                              relatives: Sequence[pathlib.Path], mask: str,
                              targets: list[tuple[list[str], str]]) -> None:
  """A one-line ValueError when a result (or a generated mask) would be
  written over an input image or mask file, before anything is written."""
  masks = [mask_source(mask, r) for r in relatives]
  inputs = {_identity(f): f for f in [root / r for r in relatives] +
            [m for m in masks if m is not None]}
  for (samples, mask_path), generated in zip(targets,
                                             (m is None for m in masks)):
    for path in samples + ([mask_path] if generated else []):
      if os.path.exists(path) and _identity(path) in inputs:
        raise ValueError(f"--output: writing {path} would overwrite the "
                         f"input {inputs[_identity(path)]}; choose another "
                         "--output")


def check_output(output: str) -> None:
  """A one-line error, before anything is computed, when the results
  cannot go to `output`: a file where a folder is meant (or the reverse),
  a file on its path, or a folder without write permission."""
  folder = output_folder(output)
  if names_one_file(output) and os.path.exists(output) and not (
      os.path.isfile(output)):
    raise ValueError(f"--output={output}: exists and is not a file")
  if not names_one_file(output) and os.path.exists(output) and not (
      os.path.isdir(output)):
    raise ValueError(f"--output={output}: is a file, not a folder; give a "
                     ".png name for one result, or a folder")
  existing = os.path.abspath(folder)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--output={output}: {existing} is a file, so no "
                     "folder can be made under it")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--output={output}: no permission to write in "
                     f"{existing}")


def refuse_existing_results(targets: list[tuple[list[str], str]],
                            generated: bool, overwrite: bool) -> None:
  """Result files (and generated masks) that exist already are replaced
  only with --overwrite; otherwise a one-line error before any compute."""
  if overwrite:
    return
  existing = [p for samples, mask in targets
              for p in samples + ([mask] if generated else [])
              if os.path.lexists(p)]
  if existing:
    raise ValueError(f"--output: {len(existing)} result file(s) exist "
                     f"already ({existing[0]}"
                     f"{', ...' if len(existing) > 1 else ''}); pass "
                     "--overwrite to replace them, or choose another --output")


def check_inputs(root: pathlib.Path, relatives: Sequence[pathlib.Path],
                 mask: str, config) -> None:
  """Opens every photo and mask once before the model loads, so that a bad
  file stops the run before anything is computed or written."""
  for i, relative in enumerate(relatives):
    photo = read_photo(str(root / relative))
    user_hole(mask, relative, *photo.size, config=config, index=i)


def inpaint_files(config, workdir: str | None, image: str, mask: str,
                  output: str, num_samples: int = 1, step: int | None = None,
                  reduce: str = "none", weights_file: str | None = None,
                  composite: str = "paste", overwrite: bool = False
                  ) -> list[str]:
  """Inpaints an image (or a folder of them); returns the PNG paths written.

  `mask`: a mask image (white = hole), a folder of masks named like the
  images, or a mask protocol name (then saved as <result>_mask.png).
  `reduce`: "none" writes the K samples, "mean" their mean; with K > 1 a
  colour-mapped uncertainty map goes beside (`output_paths`). `composite`:
  how each result joins its photo (compositing.COMPOSITES).
  Photos are read and written a batch at a time, so folders of any size fit
  in memory. The weights: `workdir`'s checkpoint (the latest, or `step`),
  or `weights_file`. Everything about the output is checked before the
  model loads (`check_output`; existing results are replaced only with
  `overwrite`), and the output folder is held (`lock.hold_workdir`) so two
  runs never write into one.
  """
  check_output(output)
  root, relatives = list_images(image, output)
  targets = output_paths(output, relatives, num_samples, reduce)
  with lock.hold_workdir(output_folder(output), flag="--output",
                         what="--output"):
    refuse_overwriting_inputs(root, relatives, mask, targets)
    refuse_existing_results(targets, mask_source(mask, relatives[0]) is None,
                            overwrite)
    check_inputs(root, relatives, mask, config)
    inpainter = Inpainter(config, workdir, step, weights_file)
    written = []
    try:
      _inpaint_all(inpainter, root, relatives, mask, targets, num_samples,
                   reduce, composite, written)
    except KeyboardInterrupt:
      raise KeyboardInterrupt(
          f"{len(written)} file(s) were written under {output} before it "
          "stopped; the other images have no results") from None
  maps = len(relatives) if num_samples > 1 else 0
  logging.info("Wrote %d inpainted image(s)%s: %s", len(written) - maps,
               f" and {maps} uncertainty map(s)" if maps else "",
               ", ".join(written[:4]) + (" ..." if len(written) > 4 else ""))
  return written


def _inpaint_all(inpainter: Inpainter, root: pathlib.Path,
                 relatives: Sequence[pathlib.Path], mask: str,
                 targets: list[tuple[list[str], str]], num_samples: int,
                 reduce: str, composite: str, written: list[str]) -> None:
  """Inpaints and saves the photos a batch at a time, appending each file
  to `written` as it lands (so an interruption can say what is there)."""
  config = inpainter.config
  per_call = max(1, config.eval.batch_size // num_samples)
  bar = progress_bar(len(relatives) * num_samples, "inpainting")
  for first in range(0, len(relatives), per_call):
    part = range(first, min(first + per_call, len(relatives)))
    photos = [read_photo(str(root / relatives[i])) for i in part]
    holes = [user_hole(mask, relatives[i], *p.size, config=config, index=i)
             for i, p in zip(part, photos)]
    results = inpainter.inpaint(photos, [h for h, _ in holes], num_samples,
                                first_index=first, bar=bar, reduce=reduce,
                                composite=composite)
    for i, result, (hole, generated) in zip(part, results, holes):
      _save_results(result, hole, generated, *targets[i], written)
  bar.close()


def _save_results(inpainted: Inpainted, hole, generated: bool,
                  paths: list[str], mask_path: str,
                  written: list[str]) -> None:
  """Writes one photo's results, its uncertainty map (colour-mapped,
  `images.uncertainty_image`) and its generated mask on process 0; each
  result path joins `written` once it is there."""
  if not hole.any():
    logging.warning("%s: the mask has no hole, nothing was inpainted",
                    paths[0])
  files = list(inpainted.results)
  if inpainted.uncertainty is not None:
    files.append(images.uncertainty_image(inpainted.uncertainty))
  for result, path in zip(files, paths):
    if jax.process_index() == 0:
      images.save_png(path, result)
    written.append(path)
  if generated and jax.process_index() == 0:
    images.save_png(mask_path, (hole[..., 0] * 255).astype(np.uint8))


def sample_files(config, workdir: str | None, output: str, num_samples: int,
                 step: int | None = None, weights_file: str | None = None
                 ) -> list[str]:
  """Draws images from an unconditional model (`workdir`'s checkpoint or
  `weights_file`) into `output`/sample_*.png."""
  check_unconditional(config)
  inpainter = Inpainter(config, workdir, step, weights_file)
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
