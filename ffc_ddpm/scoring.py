"""Scoring: per-image PSNR, SSIM and LPIPS of sharded batches, the
classical baselines' outputs, the rows they make, and the means of a set
(the one capped PSNR mean of every report: `metrics.mean_psnr`).
"""

from absl import logging
import jax
import numpy as np

from ffc_ddpm import baselines, metrics, parallel, perceptual
from ffc_ddpm import eval_records


# -------------------------------------------------------------- scoring
class Scorer:
  """Per-image scores of sharded batches, computed where the batch lies.

  PSNR and SSIM always; LPIPS and FID features when config.eval names their
  weight files (otherwise one line says how to add them).
  """

  def __init__(self, config, mesh):
    ec, on_all = config.eval, parallel.replicated(mesh)
    self.lpips = self.inception = None
    if ec.lpips_weights:
      self.lpips = perceptual.load_lpips(ec.lpips_weights, on_all)
    else:
      logging.info(perceptual.missing_weights_message(perceptual.LPIPS))
    if ec.fid_weights:
      self.inception = perceptual.load_inception(ec.fid_weights, on_all)
    else:
      logging.info(perceptual.missing_weights_message(perceptual.FID))

  def scores(self, output: jax.Array, original: jax.Array) -> dict:
    """{metric: (N,)} of each image of `output` against `original`."""
    result = {"psnr": metrics.psnr(output, original),
              "ssim": metrics.ssim(output, original)}
    if self.lpips is not None:
      result["lpips"] = self.lpips(output, original)
    return result


def baseline_outputs(methods, batch: dict) -> dict[str, np.ndarray]:
  """Classical inpainting of a host batch, as floats in [-1, 1]."""
  originals = np.asarray(metrics.to_uint8(batch["image"]))
  return {m: baselines.inpaint(m, originals, batch["mask"]).astype(
      np.float32) / 127.5 - 1.0 for m in methods}


def batch_rows(mask: str, host: dict, methods) -> list[dict]:
  """CSV rows of a gathered batch: one per (valid image, method), and one
  marking each unreadable image; padding (index -1) has none."""
  rows = []
  for i, index in enumerate(host["index"]):
    if index < 0:
      continue
    if not host["valid"][i]:
      rows.append({"mask": mask, "index": int(index),
                   "method": eval_records.UNREADABLE, "psnr": None,
                   "ssim": None, "lpips": None})
      continue
    for method in methods:
      scores = host["scores"][method]
      lpips = scores.get("lpips")
      rows.append({"mask": mask, "index": int(index), "method": method,
                   "psnr": float(scores["psnr"][i]),
                   "ssim": float(scores["ssim"][i]),
                   "lpips": None if lpips is None else float(lpips[i])})
  return rows


# ------------------------------------------------------------- means
def summarise(rows: list[dict], masks, methods, fid: dict) -> dict:
  """Means per (method, mask); a PSNR of +inf (an exact copy) counts as
  metrics.PSNR_CAP (`metrics.mean_psnr`). `fid` maps (method, mask) to FID
  where computed."""
  table = {}
  rows = sorted(rows, key=lambda r: (r["mask"], r["index"], r["method"]))
  for method in methods:
    for mask in masks:
      sel = [r for r in rows if r["method"] == method and r["mask"] == mask]
      entry = {"psnr": metrics.mean_psnr([r["psnr"] for r in sel]),
               "ssim": _mean([r["ssim"] for r in sel]),
               "num_images": len(sel)}
      lpips = [r["lpips"] for r in sel if r["lpips"] is not None]
      if lpips:
        entry["lpips"] = _mean(lpips)
      if (method, mask) in fid:
        entry["fid"] = float(fid[method, mask])
      table[method, mask] = entry
  return table


def _mean(values: list[float]) -> float:
  return float(np.mean(values)) if values else float("nan")
