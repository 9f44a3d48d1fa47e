"""Inpainting for users: their own photos and masks, at any size; sampling.

A photo of any size and aspect is resized to the model's square input, the
model fills the hole, and its output is resized back and used only inside the
hole: every known pixel of the user's image is returned exactly.
"""

import os
import pathlib

from absl import logging
import jax
import numpy as np
from PIL import Image

from ffc_ddpm import images, inference, metrics, parallel
from ffc_ddpm.data import images as image_files
from ffc_ddpm.data import masks as masks_lib
from ffc_ddpm.diffusion import samplers

INPAINT, SAMPLE = 4, 5  # purposes folded into the seed key


# ---------------------------------------------------------- file handling
def list_images(path: str) -> list[pathlib.Path]:
  """An image file, or the images of a folder (recursively, sorted)."""
  p = pathlib.Path(path)
  if p.is_file():
    return [p]
  if not p.is_dir():
    raise FileNotFoundError(f"--image={path}: no such file or folder")
  try:
    return [pathlib.Path(f) for f in image_files.find_images(path)]
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--image={path}: {e}") from None


def user_mask(spec: str, image_path: pathlib.Path, height: int, width: int,
              config, index: int) -> np.ndarray:
  """The hole for one image at its own size, float32 (H, W, 1), 1 = missing.

  `spec` is a mask image (white = hole), a folder with a mask named like the
  image, or a mask protocol name drawn at the model's size as in evaluation.
  """
  path = pathlib.Path(spec)
  if path.is_dir():
    matches = [f for f in path.iterdir() if f.stem == image_path.stem]
    if not matches:
      raise FileNotFoundError(
          f"--mask={spec}: no mask named {image_path.stem}.* for {image_path}")
    path = matches[0]
  if path.is_file():
    mask = masks_lib.load_mask(str(path))
    if mask.shape[:2] != (height, width):
      logging.warning("Mask %s is %dx%d, image %s is %dx%d: resizing the mask "
                      "(nearest neighbour).", path, mask.shape[1],
                      mask.shape[0], image_path, width, height)
      mask = _resize_mask(mask, height, width)
    return mask
  masks_lib.validate_mask_name(spec)
  size = config.data.image_size
  return _resize_mask(masks_lib.eval_mask(spec, size, config.seed, index),
                      height, width)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  img = Image.fromarray((mask[..., 0] > 0.5).astype(np.uint8) * 255)
  img = img.resize((width, height), Image.NEAREST)
  return (np.asarray(img) > 127).astype(np.float32)[..., None]


# ------------------------------------------------------ resize in and out
def to_model_input(image_u8: np.ndarray, mask: np.ndarray, size: int):
  """(image in [-1, 1], mask) at the model's size.

  A model pixel is a hole if any original pixel it covers is a hole, so the
  model fills at least everything the user asked for.
  """
  image = Image.fromarray(image_u8).resize((size, size), Image.BICUBIC)
  x = np.asarray(image, np.float32) / 127.5 - 1.0
  coverage = Image.fromarray(mask[..., 0].astype(np.float32)).resize(
      (size, size), Image.BOX)
  return x, (np.asarray(coverage) > 0).astype(np.float32)[..., None]


def from_model_output(output: np.ndarray, image_u8: np.ndarray,
                      mask: np.ndarray) -> np.ndarray:
  """The model's output at the original size, pasted into the hole only."""
  height, width = image_u8.shape[:2]
  out = Image.fromarray(np.asarray(metrics.to_uint8(output)))
  out = np.asarray(out.resize((width, height), Image.BICUBIC))
  return np.where(mask > 0.5, out, image_u8).astype(np.uint8)


# ------------------------------------------------------------- sampling
def run_sampler(sampler, params, mesh, x, mask, indices, base_key,
                batch_size: int) -> np.ndarray:
  """Samples in fixed-size batches padded to a multiple of the devices."""
  step = max(batch_size - batch_size % jax.device_count(), jax.device_count())
  outputs = []
  for start in range(0, len(indices), step):
    sl = slice(start, start + step)
    n = len(indices[sl])
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], step - n, 0)])
    batch = parallel.global_batch(
        {"x": pad(x[sl]), "mask": pad(mask[sl]),
         "index": pad(np.asarray(indices[sl]))}, mesh)
    keys = samplers.example_keys(base_key, batch["index"])
    out = sampler(params, batch["x"], batch["mask"], keys)
    outputs.append(np.asarray(jax.device_get(out))[:n])
  return np.concatenate(outputs)


def inpaint_files(config, workdir: str, image: str, mask: str, output: str,
                  num_samples: int = 1, step: int | None = None) -> list[str]:
  """Inpaints an image (or a folder of them); returns the PNG paths written."""
  paths = list_images(image)
  originals = [image_files.load_image(str(p)) for p in paths]
  holes = [user_mask(mask, p, *img.shape[:2], config=config, index=i)
           for i, (p, img) in enumerate(zip(paths, originals))]
  size = config.data.image_size
  inputs = [to_model_input(img, m, size) for img, m in zip(originals, holes)]
  x = np.repeat(np.stack([i[0] for i in inputs]), num_samples, 0)
  m = np.repeat(np.stack([i[1] for i in inputs]), num_samples, 0)

  mesh = parallel.create_mesh(config.train.model_axis_size)
  model, params, _ = inference.load_weights(config, workdir, mesh, step)
  sampler = inference.create_sampler(config, model)
  base_key = jax.random.fold_in(jax.random.key(config.seed), INPAINT)
  out = run_sampler(sampler, params, mesh, x, m, np.arange(len(x)), base_key,
                    config.eval.batch_size)

  written = []
  for i, (p, img, hole) in enumerate(zip(paths, originals, holes)):
    for k in range(num_samples):
      result = from_model_output(out[i * num_samples + k], img, hole)
      target = _output_path(output, p, k, num_samples, len(paths) > 1)
      images.save_png(target, result)
      written.append(target)
  logging.info("Wrote %d inpainted image(s): %s", len(written),
               ", ".join(written[:4]) + (" ..." if len(written) > 4 else ""))
  return written


def _output_path(output: str, image: pathlib.Path, k: int, num_samples: int,
                 many_images: bool) -> str:
  suffix = f"_{k}" if num_samples > 1 else ""
  if many_images:
    return os.path.join(output, f"{image.stem}{suffix}.png")
  root, ext = os.path.splitext(output)
  return f"{root}{suffix}{ext or '.png'}"


def sample_files(config, workdir: str, output: str, num_samples: int,
                 step: int | None = None) -> list[str]:
  """Draws images from an unconditional model into `output`/sample_*.png."""
  size = config.data.image_size
  mesh = parallel.create_mesh(config.train.model_axis_size)
  model, params, _ = inference.load_weights(config, workdir, mesh, step)
  sampler = inference.create_sampler(config, model)
  base_key = jax.random.fold_in(jax.random.key(config.seed), SAMPLE)
  x = np.zeros((num_samples, size, size, 3), np.float32)
  everywhere = np.ones((num_samples, size, size, 1), np.float32)
  out = run_sampler(sampler, params, mesh, x, everywhere,
                    np.arange(num_samples), base_key, config.eval.batch_size)
  written = []
  for i, sample in enumerate(out):
    written.append(os.path.join(output, f"sample_{i:04d}.png"))
    images.save_png(written[-1], sample)
  logging.info("Wrote %d samples to %s", len(written), output)
  return written
