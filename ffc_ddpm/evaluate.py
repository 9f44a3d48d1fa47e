"""Batch evaluation: the paper's tables with classical baselines, and grids.

For every mask protocol in `config.eval.masks`, the first `eval.num_images`
images of the split are inpainted by the model (`config.eval.sampler`) and
by the classical baselines, all on the same images and the same masks (a
pure function of (seed, image index)). Each image is scored on 8-bit values
as the paper does (PSNR with MAX = 255, SSIM as scikit-image's with Gaussian
weights), and with LPIPS and FID when their weight files are given
(`scoring`).

Batches are sharded over every device of every host and scored where they
lie; only the per-image scores (and FID features, and the few images of the
grids) are gathered. The baselines of a batch run on the host's CPUs while
the devices sample it.

Writes under WORKDIR/eval the records of `eval_records` (per_image.csv,
settings.json, store/: an interrupted evaluation continues where it
stopped; with eval.num_samples = K > 1 the method "mean_of_k" scores the
mean of K samples), the report of `report` (results.json, results.md) and
grid_<mask>.png: masked input | one sample | (K > 1: mean of K |
uncertainty) | baselines... | original.
"""

import concurrent.futures
import json
import os

from absl import logging
import numpy as np
import tqdm

from ffc_ddpm import eval_records, files, images, inference, lock, metrics
from ffc_ddpm import parallel, perceptual, report, scoring
from ffc_ddpm.data import masks as masks_lib
from ffc_ddpm.data import pipeline, sources
from ffc_ddpm.eval_records import MEAN_OF_K, MODEL, ORIGINAL

LPIPS_MIN_SIZE = 31  # below this AlexNet's stride-4 conv and pools leave 0 px


# ---------------------------------------------------------------- setup
def run_settings(config, step: int, weights: str) -> dict:
  """What every per-image score depends on; rows are reused only if equal.

  Everything in the config but the training fields and those that only say
  how much to evaluate or how (image count, batch size, masks, baselines,
  grid size, data loading workers).
  """
  settings = config.to_dict()
  del settings["train"]
  for field in ("num_workers", "prefetch", "augment", "train_masks",
                "path_weights"):
    settings["data"].pop(field)
  for field in ("num_images", "batch_size", "masks", "baselines",
                "num_grid_images"):
    settings["eval"].pop(field)
  return json.loads(json.dumps(
      {"step": int(step), "weights": weights, "config": settings},
      sort_keys=True, default=str))


def check_config(config) -> None:
  """One-line errors for evaluation settings that cannot work."""
  size = config.data.image_size
  if config.eval.lpips_weights and size < LPIPS_MIN_SIZE:
    raise ValueError(
        f"config.eval.lpips_weights: LPIPS (AlexNet) needs images of at least "
        f"{LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE}, data.image_size={size}")


def _num_images(config) -> int:
  """eval.num_images, or all of the split when it has fewer."""
  available = len(sources.create_source(config.data, config.eval.split))
  if available < config.eval.num_images:
    logging.warning("The %s split has %d images; evaluating all of them, "
                    "not eval.num_images=%d", config.eval.split, available,
                    config.eval.num_images)
  return min(config.eval.num_images, available)


# ------------------------------------------------------------ one mask
def score_batch(config, loaded: inference.Inference, scorer: scoring.Scorer,
                local: dict, baseline_outputs: dict, progress=None,
                with_grid: bool = False) -> dict:
  """Samples and scores one batch of the evaluation (K samples of each
  image, `inference.draw`) beside the baselines' `baseline_outputs`;
  returns what is gathered to the hosts: index, valid, scores (and FID
  features, and 8-bit images for grids). What an evaluation computes per
  batch, so tools that time it warm it up with one call."""
  k = config.eval.num_samples
  batch = parallel.global_batch(local, loaded.mesh)
  drawn = inference.draw(loaded, batch["image"], batch["mask"],
                         batch["index"], config.seed, inference.Purpose.EVAL,
                         k, progress=progress)
  outputs = {MODEL: drawn.first}
  if k > 1:
    outputs[MEAN_OF_K] = drawn.mean
  outputs.update(parallel.global_batch(baseline_outputs, loaded.mesh))
  wanted = {"index": batch["index"], "valid": batch["valid"],
            "scores": {m: scorer.scores(out, batch["image"])
                       for m, out in outputs.items()}}
  if scorer.inception is not None:
    outputs[ORIGINAL] = batch["image"]
    wanted["features"] = {m: scorer.inception(out)
                          for m, out in outputs.items()}
  if with_grid:
    outputs[ORIGINAL] = batch["image"]
    wanted["grid"] = {m: metrics.to_uint8(out) for m, out in outputs.items()}
    wanted["mask"] = batch["mask"]
    if k > 1:
      wanted["uncertainty"] = drawn.std
  return inference.fetch(wanted)


class MaskRun:
  """Evaluates every method under one mask protocol, batch by batch."""

  def __init__(self, config, mask: str, loaded: inference.Inference,
               scorer: scoring.Scorer, log: eval_records.PerImageLog,
               num_images: int):
    self.config, self.mask, self.loaded = config, mask, loaded
    self.scorer, self.log, self.num_images = scorer, log, num_images
    self.methods = (eval_records.model_methods(config) +
                    tuple(config.eval.baselines))
    self.start = log.resume_point(mask, self.methods, num_images)
    self.store = eval_records.BatchStore(os.path.dirname(log.path), mask,
                                         self.start)

  def run(self, pool: concurrent.futures.Executor) -> None:
    ec = self.config.eval
    if self.start:
      logging.info("%s: resuming after %d finished images", self.mask,
                   self.start)
    bar = tqdm.tqdm(total=self.num_images, initial=self.start,
                    desc=f"eval {self.mask}", unit="image",
                    disable=not parallel.is_lead())
    progress = lambda done, total: bar.set_postfix_str(
        f"denoising step {done}/{total}")
    examples = inference.examples_per_call(ec.batch_size, ec.num_samples)
    batches = pipeline.eval_batches(
        self.config, ec.split, self.mask, self.num_images - self.start,
        examples, start=self.start)
    for k, local in enumerate(batches):
      first = self.start + k * examples  # the global batch's first image
      job = pool.submit(scoring.baseline_outputs, ec.baselines, local)
      host = score_batch(self.config, self.loaded, self.scorer, local,
                         job.result(), progress,
                         with_grid=first < self._grid_size())
      self.store.save(first, self._record(host))
      self.log.append(scoring.batch_rows(self.mask, host, self.methods))
      bar.update(int((host["index"] >= 0).sum()))
    bar.close()

  def _grid_size(self) -> int:
    return min(self.config.eval.num_grid_images, self.num_images)

  def _record(self, host: dict) -> dict[str, np.ndarray]:
    """The arrays of a gathered batch that the mask's end needs."""
    record = {}
    valid = host["valid"] & (host["index"] >= 0)
    if "features" in host:
      record["features.index"] = host["index"][valid]
      for m, f in host["features"].items():
        record[f"features.{m}"] = f[valid]
    if "grid" in host:
      keep = valid & (host["index"] < self._grid_size())
      record["grid.index"] = host["index"][keep]
      record["grid.mask"] = (host["mask"][keep] > 0.5).astype(np.uint8)
      if "uncertainty" in host:
        record["grid.uncertainty"] = host["uncertainty"][keep]
      for m, image in host["grid"].items():
        record[f"grid.{m}"] = image[keep]
    return record

  # -- the end of a mask
  def scored_indices(self) -> list[int]:
    return sorted({r["index"] for r in self.log.rows
                   if r["mask"] == self.mask and r["method"] == MODEL})

  def fid(self) -> dict[str, float]:
    """FID of each method's outputs against the originals, over the set."""
    if self.scorer.inception is None:
      return {}
    features = self.store.collect("features", self.scored_indices())
    if len(features.get(ORIGINAL, ())) < 2:
      logging.warning("%s: FID needs at least 2 images; left out", self.mask)
      return {}
    reference = perceptual.fid_statistics(features[ORIGINAL])
    return {m: perceptual.frechet_distance(
        *perceptual.fid_statistics(features[m]), *reference)
            for m in self.methods}

  def grid_name(self) -> str:
    return f"grid_{eval_records.safe_name(self.mask)}.png"

  def save_grid(self, out_dir: str) -> bool:
    """Writes grid_<mask>.png (masked input | one sample | (mean of K |
    uncertainty) | baselines | original); False when there are no grid
    images (eval.num_grid_images = 0)."""
    grid = self.store.collect("grid", range(self._grid_size()))
    if not grid:
      return False
    if parallel.is_lead():
      columns = [grid[m] for m in self.methods]
      if MEAN_OF_K in grid:
        columns.insert(2, images.uncertainty_image(grid["uncertainty"]))
      images.save_png(os.path.join(out_dir, self.grid_name()),
                      images.inpainting_grid(grid[ORIGINAL], grid["mask"],
                                             *columns))
    return True


# ------------------------------------------------------------------ run
def evaluate(config, workdir: str, step: int | None = None,
             weights_file: str | None = None) -> dict:
  """Evaluates the checkpoint in `workdir` (or `weights_file`) into
  WORKDIR/eval; returns results.json's content.

  Continues an interrupted evaluation of the same weights and settings.
  Holds WORKDIR/eval's lock (`lock.hold_workdir`), after training too, so
  two evaluations never write into one folder.
  """
  check_config(config)
  for mask in config.eval.masks:
    masks_lib.validate_mask_name(mask)
  out_dir = os.path.join(workdir, "eval")
  with lock.hold_workdir(out_dir):
    mesh = parallel.create_mesh(config.train.model_axis_size)
    scorer = scoring.Scorer(config, mesh)
    loaded = inference.load(config, workdir, step, mesh, weights_file)
    return evaluate_loaded(config, loaded, out_dir, scorer)


def evaluate_loaded(config, loaded: inference.Inference, out_dir: str,
                    scorer: scoring.Scorer) -> dict:
  """Evaluates weights already loaded (`loaded`, its sampler built from
  `config.eval`) into `out_dir`; returns results.json's content.

  What `evaluate` does once the checkpoint is read; tools that score one
  model under many samplers (tools/quality_vs_speed.py) call it once per
  sampler with the same weights.
  """
  ec = config.eval
  num_images = _num_images(config)
  log = eval_records.PerImageLog(out_dir, run_settings(config, loaded.step,
                                                       loaded.weights))
  fid, grids = {}, {}
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    for mask in ec.masks:
      run = MaskRun(config, mask, loaded, scorer, log, num_images)
      run.run(pool)
      fid.update({(m, mask): v for m, v in run.fid().items()})
      if run.save_grid(out_dir):
        grids[mask] = run.grid_name()

  methods = eval_records.model_methods(config) + tuple(ec.baselines)
  table = scoring.summarise(log.rows, ec.masks, methods, fid)
  results = report.results_json(table, config, loaded.step, loaded.weights,
                                grids)
  markdown = report.results_markdown(results)
  if parallel.is_lead():
    files.write_json(os.path.join(out_dir, "results.json"), results,
                     indent=2)
    files.write_text(os.path.join(out_dir, "results.md"), markdown)
  logging.info("Evaluation of step %d:\n%s", loaded.step, markdown)
  return results
