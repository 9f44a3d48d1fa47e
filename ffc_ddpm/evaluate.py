"""Batch evaluation: the paper's tables with classical baselines, and grids.

For every mask protocol in `config.eval.masks`, the test split is inpainted by
the model (EMA weights, `config.eval.sampler`) and by the classical
baselines, all on the same images and the same masks (a pure function of
(seed, image index)). Each image is scored on 8-bit values (PSNR with
MAX = 255, SSIM as scikit-image's with Gaussian weights).

Writes under WORKDIR/eval:
  per_image.csv  one row per (mask, image, method); appended batch by batch,
                 so an interrupted evaluation continues where it stopped
  results.json   the means, in the shape the README documents
  results.md     a Markdown table in the paper's layout
  grid_<mask>.png  masked input | model | baselines... | original
"""

import csv
import dataclasses
import json
import math
import os
from typing import Any, Iterable

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from ffc_ddpm import baselines, images, inference, metrics, parallel
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import samplers

EVAL = 3  # purpose folded into the seed key (train.py uses 0..2)
CSV_FIELDS = ("mask", "index", "method", "psnr", "ssim")
MODEL = "model"


# ------------------------------------------------------- per-image rows
@dataclasses.dataclass
class PerImageLog:
  """The per-image CSV, resumable: rows of finished batches survive a crash."""
  path: str
  run: dict[str, Any]  # what must match for old rows to be reused

  def __post_init__(self):
    self.rows: list[dict] = []
    run_path = self.path + ".run.json"
    if os.path.exists(self.path) and os.path.exists(run_path):
      with open(run_path) as f:
        if json.load(f) == self.run:
          self.rows = _read_rows(self.path)
    if jax.process_index() == 0:
      _write_rows(self.path, self.rows)
      with open(run_path, "w") as f:
        json.dump(self.run, f)

  def done(self, mask: str, methods: Iterable[str]) -> int:
    """How many leading images of `mask` have a row for every method."""
    have = {(r["index"], r["method"]) for r in self.rows if r["mask"] == mask}
    n = 0
    while all((n, m) in have for m in methods):
      n += 1
    return n

  def keep_first(self, mask: str, count: int) -> None:
    """Drops rows of `mask` beyond the first `count` images (a torn batch)."""
    self.rows = [r for r in self.rows
                 if r["mask"] != mask or r["index"] < count]
    if jax.process_index() == 0:
      _write_rows(self.path, self.rows)

  def append(self, rows: list[dict]) -> None:
    self.rows.extend(rows)
    if jax.process_index() == 0:
      with open(self.path, "a", newline="") as f:
        csv.DictWriter(f, CSV_FIELDS).writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _read_rows(path: str) -> list[dict]:
  rows = []
  with open(path, newline="") as f:
    for r in csv.DictReader(f):
      try:
        rows.append({"mask": r["mask"], "index": int(r["index"]),
                     "method": r["method"], "psnr": float(r["psnr"]),
                     "ssim": float(r["ssim"])})
      except (TypeError, ValueError):  # a line torn by a crash
        break
  return rows


def _write_rows(path: str, rows: list[dict]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


# -------------------------------------------------------------- scoring
def score_batch(outputs: dict[str, np.ndarray], batch: dict, mask: str):
  """Rows of one batch: every method's PSNR and SSIM on every valid image."""
  originals = batch["image"]
  rows = []
  for method, out in outputs.items():
    psnr = np.asarray(metrics.psnr(out, originals))
    ssim = np.asarray(metrics.ssim(out, originals))
    for i in np.flatnonzero(batch["valid"]):
      rows.append({"mask": mask, "index": int(batch["index"][i]),
                   "method": method, "psnr": float(psnr[i]),
                   "ssim": float(ssim[i])})
  return rows


def baseline_outputs(methods, batch) -> dict[str, np.ndarray]:
  """Classical inpainting of a host batch, as floats in [-1, 1]."""
  originals = np.asarray(metrics.to_uint8(batch["image"]))
  return {m: baselines.inpaint(m, originals, batch["mask"]) / 127.5 - 1.0
          for m in methods}


def summarise(rows: list[dict], masks, methods) -> dict:
  """Mean PSNR/SSIM per (method, mask); PSNR inf (a perfect copy) is capped."""
  table = {}
  for method in methods:
    for mask in masks:
      sel = [r for r in rows if r["method"] == method and r["mask"] == mask]
      table[method, mask] = {
          "psnr": float(np.mean([min(r["psnr"], metrics.PSNR_CAP) for r in sel])),
          "ssim": float(np.mean([r["ssim"] for r in sel])),
          "num_images": len(sel)}
  return table


def results_json(table, config, step, methods) -> dict:
  masks = config.eval.masks
  return {
      "step": int(step),
      "num_images": int(config.eval.num_images),
      "image_size": int(config.data.image_size),
      "masks": {m: table[MODEL, m] for m in masks},
      "baselines": {b: {m: {k: table[b, m][k] for k in ("psnr", "ssim")}
                        for m in masks} for b in methods if b != MODEL},
      "sampler": {"name": config.eval.sampler,
                  "num_steps": int(config.eval.num_steps),
                  "eta": float(config.eval.eta)},
  }


def results_markdown(results: dict) -> str:
  """The paper's table: one row per method, PSNR and SSIM per mask."""
  masks = list(results["masks"])
  head = "| method | " + " | ".join(f"{m} PSNR | {m} SSIM" for m in masks)
  rule = "|---|" + "---|---|" * len(masks)
  lines = [head + " |", rule]
  rows = dict(results["baselines"])
  rows["FFC-DDPM (this model)"] = results["masks"]
  for name, per_mask in rows.items():
    cells = " | ".join(f"{per_mask[m]['psnr']:.2f} | {per_mask[m]['ssim']:.3f}"
                       for m in masks)
    lines.append(f"| {name} | {cells} |")
  s = results["sampler"]
  lines.append("")
  lines.append(f"Step {results['step']}, {results['num_images']} images at "
               f"{results['image_size']}x{results['image_size']}, sampler "
               f"{s['name']} with {s['num_steps']} steps; PSNR (dB, MAX=255) "
               "and SSIM on 8-bit images.")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ run
def evaluate(config, workdir: str, step: int | None = None) -> dict:
  """Evaluates the checkpoint in `workdir`; returns results.json's content."""
  ec = config.eval
  mesh = parallel.create_mesh(config.train.model_axis_size)
  model, params, step = inference.load_weights(config, workdir, mesh, step)
  sampler = inference.create_sampler(config, model)
  out_dir = os.path.join(workdir, "eval")
  methods = (MODEL,) + tuple(ec.baselines)
  log = PerImageLog(os.path.join(out_dir, "per_image.csv"), run={
      "step": int(step), "seed": config.seed, "sampler": ec.sampler,
      "num_steps": ec.num_steps, "eta": ec.eta, "split": ec.split,
      "jump_length": ec.jump_length, "jump_n_sample": ec.jump_n_sample,
      "use_ema": ec.use_ema})
  base_key = jax.random.fold_in(jax.random.key(config.seed), EVAL)

  for mask in ec.masks:
    start = min(log.done(mask, methods), ec.num_images)
    log.keep_first(mask, start)
    if start:
      logging.info("%s: resuming after %d finished images", mask, start)
    batches = pipeline.eval_batches(config, ec.split, mask, ec.num_images,
                                    ec.batch_size, start=start)
    bar = tqdm.tqdm(total=ec.num_images, initial=start, desc=f"eval {mask}",
                    disable=jax.process_index() > 0)
    for local in batches:
      batch = parallel.global_batch(
          {k: local[k] for k in ("image", "mask", "index")}, mesh)
      keys = samplers.example_keys(base_key, batch["index"])
      out = sampler(params, batch["image"], batch["mask"], keys)
      host, outputs = _gather(local, out, baseline_outputs(ec.baselines, local))
      log.append(score_batch(outputs, host, mask))
      if host["index"][0] == 0 and jax.process_index() == 0:
        _save_grid(out_dir, mask, host, outputs, ec.num_grid_images)
      bar.update(int(host["valid"].sum()))
    bar.close()

  table = summarise(log.rows, ec.masks, methods)
  results = results_json(table, config, step, methods)
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
      f.write(results_markdown(results))
  logging.info("Evaluation of step %d:\n%s", step, results_markdown(results))
  return results


def _gather(local: dict, output: jax.Array, local_baselines: dict):
  """The whole global batch and every method's output, on every host.

  Baselines run on each host's own examples; the pieces are then joined in
  process order, the order of the global batch.
  """
  host = multihost_utils.process_allgather(
      {k: local[k] for k in ("image", "mask", "index", "valid")}, tiled=True)
  outputs = {MODEL: np.asarray(
      multihost_utils.process_allgather(output, tiled=True))}
  outputs.update(multihost_utils.process_allgather(local_baselines, tiled=True))
  return host, outputs


def _save_grid(out_dir, mask, host, outputs, count):
  if not count:
    return
  n = min(count, len(host["image"]))
  columns = [outputs[MODEL][:n]] + [
      v[:n] for k, v in outputs.items() if k != MODEL]
  grid = images.inpainting_grid(host["image"][:n], host["mask"][:n], *columns)
  safe = mask.replace("/", "_").replace(":", "_")
  images.save_png(os.path.join(out_dir, f"grid_{safe}.png"), grid)
  logging.info("Grid (masked | model | %s | original): %s",
               " | ".join(k for k in outputs if k != MODEL),
               os.path.join(out_dir, f"grid_{safe}.png"))
