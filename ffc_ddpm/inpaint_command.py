"""The inpaint and sample commands' files: which photos and masks are read,
where each result is written, and every check of both before any compute.

`--image` is a file or a folder (searched recursively; a results folder
inside it is skipped); `--mask` a mask image, a folder of masks named like
the images, or a mask protocol name, then saved beside the result
(`<name>_mask.png`) so the hole can be seen. `--output` names one .png or a
folder mirroring the images' relative paths; the folder is held while
results are written (`lock.hold_workdir`), and existing results are
replaced only with --overwrite.
"""

import os
import pathlib
from typing import Sequence

from absl import logging
import jax
import numpy as np

from ffc_ddpm import images, inpaint, lock
from ffc_ddpm import photos as photos_lib
from ffc_ddpm.data import images as image_files


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
  masks = [photos_lib.mask_source(mask, r) for r in relatives]
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
    photo = photos_lib.read_photo(str(root / relative))
    photos_lib.user_hole(mask, relative, *photo.size, config=config, index=i)


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
    generated = photos_lib.mask_source(mask, relatives[0]) is None
    refuse_existing_results(targets, generated, overwrite)
    check_inputs(root, relatives, mask, config)
    inpainter = inpaint.Inpainter(config, workdir, step, weights_file)
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


def _inpaint_all(inpainter: inpaint.Inpainter, root: pathlib.Path,
                 relatives: Sequence[pathlib.Path], mask: str,
                 targets: list[tuple[list[str], str]], num_samples: int,
                 reduce: str, composite: str, written: list[str]) -> None:
  """Inpaints and saves the photos a batch at a time, appending each file
  to `written` as it lands (so an interruption can say what is there)."""
  config = inpainter.config
  per_call = max(1, config.eval.batch_size // num_samples)
  bar = inpaint.progress_bar(len(relatives) * num_samples, "inpainting")
  for first in range(0, len(relatives), per_call):
    part = range(first, min(first + per_call, len(relatives)))
    photos = [photos_lib.read_photo(str(root / relatives[i])) for i in part]
    holes = [photos_lib.user_hole(mask, relatives[i], *p.size, config=config,
                                  index=i)
             for i, p in zip(part, photos)]
    results = inpainter.inpaint(photos, [h for h, _ in holes], num_samples,
                                first_index=first, bar=bar, reduce=reduce,
                                composite=composite)
    for i, result, (hole, generated) in zip(part, results, holes):
      _save_results(result, hole, generated, *targets[i], written)
  bar.close()


def _save_results(inpainted: inpaint.Inpainted, hole, generated: bool,
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
  inpaint.check_unconditional(config)
  inpainter = inpaint.Inpainter(config, workdir, step, weights_file)
  per_call = config.eval.batch_size
  bar = inpaint.progress_bar(num_samples, "sampling")
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
