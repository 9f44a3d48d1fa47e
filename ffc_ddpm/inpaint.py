"""Inpainting photos with a loaded model, and sampling: the driver between
`photos` (the window the model sees) and `inference.draw`.

With K samples (--num_samples) each photo gets the K fills, or their
per-pixel mean (--reduce=mean), and an uncertainty map; all of them come
from one draw (`Inpainter.draw`, then `Inpainter.finish` for each way of
reducing it).

A conditional model (diffusion.conditioning="concat") is given the known
pixels; an unconditional one (a converted guided-diffusion / RePaint
checkpoint) inpaints by `config.eval.sampler`, "repaint" in the converter's
config.
"""

import dataclasses
from typing import Sequence

import jax
import numpy as np
import tqdm

from ffc_ddpm import compositing, inference, metrics
from ffc_ddpm import photos as photos_lib
from ffc_ddpm.photos import Photo

REDUCTIONS = ("none", "mean")  # --reduce: every sample, or their mean


@dataclasses.dataclass(frozen=True)
class Inpainted:
  """One photo's results, at its size and in its mode."""
  results: list[np.ndarray]  # the K samples, or ("mean") their mean
  uncertainty: np.ndarray | None  # (H, W, 1) std across K > 1 samples in
  #                                 [-1, 1] units, 0 outside the hole


@dataclasses.dataclass(frozen=True)
class Drawn:
  """Photos and their holes with the draw of their windows (host arrays)."""
  photos: list[Photo]
  holes: list[np.ndarray]  # (H, W, 1) each, at the photo's size
  model_holes: np.ndarray  # (N, S, S, 1): the holes the model saw
  draw: inference.Draw


def check_reduce(reduce: str) -> None:
  if reduce not in REDUCTIONS:
    raise ValueError(f"--reduce={reduce}: expected one of "
                     f"{', '.join(REDUCTIONS)}")


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
    `composite`, and for K > 1 samples the uncertainty map: `finish` of
    one `draw`."""
    check_reduce(reduce)
    compositing.check(composite)  # before any sampling
    return self.finish(self.draw(photos, holes, num_samples, first_index,
                                 bar), reduce, composite)

  def draw(self, photos: Sequence[Photo], holes: Sequence[np.ndarray],
           num_samples: int = 1, first_index: int = 0,
           bar=None) -> "Drawn":
    """K samples of each photo's window, their mean and std
    (`inference.draw`), to be joined to the photos by `finish`."""
    if len(photos) != len(holes) or num_samples < 1:
      raise ValueError(f"inpaint: {len(photos)} photos, {len(holes)} holes, "
                       f"num_samples={num_samples}: expected one hole per "
                       "photo and num_samples >= 1")
    for photo, hole in zip(photos, holes):
      if hole.shape != photo.size + (1,):
        raise ValueError(f"inpaint: hole of shape {hole.shape} for a photo of"
                         f" {photo.size}; expected {photo.size + (1,)}")
    inputs = [photos_lib.to_model_input(p.rgb, h, self.size)
              for p, h in zip(photos, holes)]
    model_holes = np.stack([m for _, m in inputs])
    drawn = self._sample(np.stack([x for x, _ in inputs]), model_holes,
                         first_index, inference.Purpose.INPAINT, bar,
                         num_samples)
    return Drawn(list(photos), list(holes), model_holes, drawn)

  @staticmethod
  def finish(drawn: "Drawn", reduce: str = "none",
             composite: str = "paste") -> list[Inpainted]:
    """Each photo's K samples (reduce "none") or their mean ("mean") joined
    to it by `composite`, and for K > 1 the uncertainty map; the same draw
    may be finished both ways."""
    check_reduce(reduce)
    d = drawn.draw
    outputs = d.mean[:, None] if reduce == "mean" else d.samples
    many = d.samples.shape[1] > 1
    return [Inpainted([photos_lib.from_model_output(o, photo, hole, composite)
                       for o in outs],
                      photos_lib.uncertainty_at_photo(s, mh, hole) if many
                      else None)
            for outs, s, mh, photo, hole in zip(outputs, d.std,
                                                drawn.model_holes,
                                                drawn.photos, drawn.holes)]

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
