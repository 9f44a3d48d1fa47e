"""The training monitor: how a run is doing, while it trains.

Every `train.image_every` / `train.quick_eval_every` steps the EMA weights
inpaint a fixed batch of validation images under the centre mask (one
`inference.draw`, purpose MONITOR); the grid goes to TensorBoard and
WORKDIR/images/, the mean PSNR (`metrics.mean_psnr`) and SSIM to the
run's metrics. An evaluator the training loop calls, not part of training.
"""

import os

from absl import logging
import jax
import numpy as np

from ffc_ddpm import images, inference, metrics, parallel
from ffc_ddpm.data import pipeline
from ffc_ddpm.inference import Purpose


class Monitor:
  """Inpaints a fixed validation batch (centre masks) with the EMA weights.

  `train.image_every` writes image grids (TensorBoard and
  WORKDIR/images/step_N.png), `train.quick_eval_every` the mean PSNR and
  SSIM of the batch's valid examples; when both are due the batch is
  sampled once.
  """

  def __init__(self, config, model, mesh, workdir: str, writer):
    n = min(config.train.quick_eval_images, config.data.num_val)
    size = -(-n // jax.device_count()) * jax.device_count()
    local = next(pipeline.eval_batches(config, "validation", "center", n,
                                       size))
    self.batch = parallel.global_batch(local, mesh)
    self.sampler = inference.create_sampler(config, model)
    self.mesh, self.seed = mesh, config.seed
    self.workdir, self.writer = workdir, writer

  def __call__(self, ema_params, step: int, grids: bool, scores: bool):
    out = self.sample(ema_params)
    if scores:
      self.write_scores(step, out)
    if grids:
      self.write_grid(step, out)

  def sample(self, ema_params) -> jax.Array:
    """One fill of each image (`inference.draw`, purpose MONITOR)."""
    b = self.batch
    weights = inference.Inference(self.mesh, ema_params, 0, "ema_params",
                                  self.sampler)
    return inference.draw(weights, b["image"], b["mask"], b["index"],
                          self.seed, Purpose.MONITOR).first

  def write_scores(self, step: int, out: jax.Array) -> dict[str, float]:
    """Scored where the images lie; only the (N,) scores are gathered."""
    b = self.batch
    psnr, ssim, valid = inference.fetch((metrics.psnr(out, b["image"]),
                                         metrics.ssim(out, b["image"]),
                                         b["valid"]))
    scores = {"val_psnr": metrics.mean_psnr(psnr[valid]),
              "val_ssim": float(np.mean(ssim[valid]))}
    self.writer.write_scalars(step, scores)
    return scores

  def write_grid(self, step: int, out: jax.Array) -> None:
    image, mask, out, valid = inference.fetch(
        (self.batch["image"], self.batch["mask"], out, self.batch["valid"]))
    grid = images.inpainting_grid(image[valid], mask[valid], out[valid])
    self.writer.write_images(step, {"inpainting": grid[None]})
    if jax.process_index() == 0:
      images.save_png(os.path.join(self.workdir, "images",
                                   f"step_{step:08d}.png"), grid)


def create_monitor(config, model, mesh, workdir, writer) -> Monitor | None:
  """The monitor, or None when it is switched off or has no data."""
  tc = config.train
  if not (tc.image_every or tc.quick_eval_every):
    return None
  if not config.data.num_val:
    logging.warning("data.num_val=0: no validation images, so image grids "
                    "and quick evaluation are off")
    return None
  return Monitor(config, model, mesh, workdir, writer)
