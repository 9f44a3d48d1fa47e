"""Batch evaluation: the paper's tables with classical baselines, and grids.

For every mask protocol in `config.eval.masks`, the first `eval.num_images`
images of the split are inpainted by the model (`config.eval.sampler`) and
by the classical baselines, all on the same images and the same masks (a
pure function of (seed, image index)). Each image is scored on 8-bit values
as the paper does (PSNR with MAX = 255, SSIM as scikit-image's with Gaussian
weights), and with LPIPS and FID when their weight files are given.

Batches are sharded over every device of every host and scored where they
lie; only the per-image scores (and FID features, and the few images of the
grids) are gathered. The baselines of a batch run on the host's CPUs while
the devices sample it.

Writes under WORKDIR/eval:
  per_image.csv    one row per (mask, image, method): psnr, ssim, lpips;
                   appended batch by batch, so an interrupted evaluation
                   continues where it stopped; with eval.num_samples = K > 1
                   the method "mean_of_k" scores the mean of K samples
  settings.json    what the rows depend on (step, sampler, seed, data ...)
  store/<mask>/    per batch: FID features and grid images, for resuming
  results.json     the means, in the shape the README documents
  results.md       a Markdown table in the paper's layout
  grid_<mask>.png  masked input | one sample | (K > 1: mean of K |
                   uncertainty) | baselines... | original
  previous_<k>/    an earlier evaluation with other settings, moved aside
"""

import concurrent.futures
import csv
import io
import json
import os
import re
import shutil
from typing import Any, Iterable

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from ffc_ddpm import baselines, images, inference, lock, metrics, parallel
from ffc_ddpm import perceptual
from ffc_ddpm.data import masks as masks_lib
from ffc_ddpm.data import pipeline, sources

EVAL = 3  # purpose folded into the seed key (train.py uses 0..2)
EVAL_EXTRA = 6  # samples k > 0 of K (inpaint.py uses 4, 5 and 7)
MODEL = "model"  # the first sample, whatever K
MEAN_OF_K = "mean_of_k"  # the per-pixel mean of K samples (K > 1)
ORIGINAL = "original"  # the reference images in FID features and grids
UNREADABLE = "unreadable"  # the method of a row marking a skipped image
CSV_FIELDS = ("mask", "index", "method", "psnr", "ssim", "lpips")
SETTINGS_FILE = "settings.json"
CSV_FILE = "per_image.csv"
METHOD_TITLES = {"mean": "mean fill", "telea": "Telea (OpenCV)",
                 "biharmonic": "biharmonic (scikit-image)"}
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


def _is_lead() -> bool:
  return jax.process_index() == 0


def _sync(name: str) -> None:
  """Waits for every process (multi-host runs only)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _from_lead(value: int) -> int:
  """Process 0's value on every process, so all hosts take the same batches."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def model_methods(config) -> tuple[str, ...]:
  """The model's rows: its first sample, and the mean of K when K > 1."""
  return (MODEL,) + ((MEAN_OF_K,) if config.eval.num_samples > 1 else ())


# ------------------------------------------------------- per-image rows
def read_per_image(path: str) -> list[dict]:
  """Rows of a per_image.csv (`CSV_FIELDS`, scores as float or None); a
  last line torn by a crash is dropped."""
  with open(path) as f:
    text = f.read()
  if not text.endswith("\n"):
    text = text[:text.rfind("\n") + 1]
  number = lambda v: float(v) if v else None
  return [{"mask": r["mask"], "index": int(r["index"]),
           "method": r["method"], "psnr": number(r["psnr"]),
           "ssim": number(r["ssim"]), "lpips": number(r["lpips"])}
          for r in csv.DictReader(io.StringIO(text))]


def _csv_text(rows: Iterable[dict], header: bool) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
  if header:
    writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def _write_atomically(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def archive(out_dir: str) -> str | None:
  """Moves an earlier evaluation's files to out_dir/previous_<k>."""
  names = [n for n in os.listdir(out_dir)
           if not re.fullmatch(r"previous_\d+", n) and n != lock.LOCK_NAME]
  if not names:
    return None
  k = 1
  while os.path.exists(os.path.join(out_dir, f"previous_{k}")):
    k += 1
  target = os.path.join(out_dir, f"previous_{k}")
  os.makedirs(target)
  for name in names:
    shutil.move(os.path.join(out_dir, name), os.path.join(target, name))
  return target


class PerImageLog:
  """per_image.csv, resumable: rows of finished batches survive a crash.

  The rows are reused only when they were made with the same settings
  (`run_settings`); otherwise the earlier evaluation is moved aside to
  eval/previous_<k> (nothing is lost) and this one starts afresh.
  """

  def __init__(self, out_dir: str, settings: dict):
    self.path = os.path.join(out_dir, CSV_FILE)
    settings_path = os.path.join(out_dir, SETTINGS_FILE)
    same = _read_json(settings_path) == settings
    self.rows: list[dict] = []
    if same and os.path.exists(self.path):
      self.rows = read_per_image(self.path)
    _sync("eval_log_read")
    if _is_lead():
      os.makedirs(out_dir, exist_ok=True)
      if not same:
        moved = archive(out_dir)
        if moved:
          logging.warning("Evaluation settings changed (step, sampler, seed, "
                          "data ...): the earlier results moved to %s", moved)
        _write_atomically(settings_path, json.dumps(settings, indent=2))
      _write_atomically(self.path, _csv_text(self.rows, header=True))

  def resume_point(self, mask: str, methods: Iterable[str], total: int) -> int:
    """How many leading images of `mask` are finished; drops later rows.

    An image is finished when every method has a row for it, or it is
    marked unreadable. Rows past the first unfinished image (a batch torn
    by the interruption) are dropped.
    """
    have = {(r["index"], r["method"]) for r in self.rows if r["mask"] == mask}
    done = 0
    while done < total and ((done, UNREADABLE) in have or
                            all((done, m) in have for m in methods)):
      done += 1
    done = _from_lead(done)
    self.rows = [r for r in self.rows
                 if r["mask"] != mask or r["index"] < done]
    if _is_lead():
      _write_atomically(self.path, _csv_text(self.rows, header=True))
    return done

  def append(self, rows: list[dict]) -> None:
    """Adds a finished batch's rows; on disk before this returns."""
    self.rows.extend(rows)
    if _is_lead():
      with open(self.path, "a") as f:
        f.write(_csv_text(rows, header=False))
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------- batch store
def _safe_name(mask: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", mask)


class BatchStore:
  """Per-batch arrays that the end of a mask needs: FID features and the
  grid's images, kept on disk so that a resumed evaluation has them all.

  A record holds groups of arrays ("features", "grid"), each with an
  `<group>.index` array of image indices and rows aligned with it.
  Files are named by their batch's first image; a later batch overrides an
  earlier one for the same image.
  """

  def __init__(self, out_dir: str, mask: str, start: int):
    self.folder = os.path.join(out_dir, "store", _safe_name(mask))
    self.records = []
    names = sorted(os.listdir(self.folder)) if os.path.isdir(
        self.folder) else []
    kept = [n for n in names
            if re.fullmatch(r"\d+\.npz", n) and int(n[:-4]) < start]
    for name in kept:
      with np.load(os.path.join(self.folder, name)) as f:
        self.records.append({k: f[k] for k in f.files})
    _sync("eval_store_read")
    if _is_lead():
      os.makedirs(self.folder, exist_ok=True)
      for name in set(names) - set(kept):  # later batches, torn writes
        os.remove(os.path.join(self.folder, name))

  def save(self, first: int, record: dict[str, np.ndarray]) -> None:
    self.records.append(record)
    if _is_lead() and record:
      path = os.path.join(self.folder, f"{first:09d}.npz")
      with open(path + ".tmp", "wb") as f:
        np.savez(f, **record)
      os.replace(path + ".tmp", path)

  def collect(self, group: str, indices: Iterable[int]) -> dict:
    """{name: array} of `group` for `indices` (in that order)."""
    rows = {}
    for record in self.records:
      if f"{group}.index" not in record:
        continue
      names = [k for k in record if k.startswith(group + ".") and
               k != f"{group}.index"]
      for i, index in enumerate(record[f"{group}.index"]):
        rows[int(index)] = {k[len(group) + 1:]: record[k][i] for k in names}
    indices = [i for i in indices if i in rows]
    if not indices:
      return {}
    return {k: np.stack([rows[i][k] for i in indices]) for k in rows[
        indices[0]]}


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
      rows.append({"mask": mask, "index": int(index), "method": UNREADABLE,
                   "psnr": None, "ssim": None, "lpips": None})
      continue
    for method in methods:
      scores = host["scores"][method]
      lpips = scores.get("lpips")
      rows.append({"mask": mask, "index": int(index), "method": method,
                   "psnr": float(scores["psnr"][i]),
                   "ssim": float(scores["ssim"][i]),
                   "lpips": None if lpips is None else float(lpips[i])})
  return rows


# ------------------------------------------------------------ one mask
class MaskRun:
  """Evaluates every method under one mask protocol, batch by batch."""

  def __init__(self, config, mask: str, loaded: inference.Inference,
               scorer: Scorer, log: PerImageLog, num_images: int):
    self.config, self.mask, self.loaded = config, mask, loaded
    self.scorer, self.log, self.num_images = scorer, log, num_images
    self.methods = model_methods(config) + tuple(config.eval.baselines)
    self.key = jax.random.fold_in(jax.random.key(config.seed), EVAL)
    self.extra = jax.random.fold_in(jax.random.key(config.seed), EVAL_EXTRA)
    self.start = log.resume_point(mask, self.methods, num_images)
    self.store = BatchStore(os.path.dirname(log.path), mask, self.start)

  def run(self, pool: concurrent.futures.Executor) -> None:
    ec = self.config.eval
    if self.start:
      logging.info("%s: resuming after %d finished images", self.mask,
                   self.start)
    bar = tqdm.tqdm(total=self.num_images, initial=self.start,
                    desc=f"eval {self.mask}", unit="image",
                    disable=not _is_lead())
    progress = lambda done, total: bar.set_postfix_str(
        f"denoising step {done}/{total}")
    examples = inference.examples_per_call(ec.batch_size, ec.num_samples)
    batches = pipeline.eval_batches(
        self.config, ec.split, self.mask, self.num_images - self.start,
        examples, start=self.start)
    for k, local in enumerate(batches):
      first = self.start + k * examples  # the global batch's first image
      job = pool.submit(baseline_outputs, ec.baselines, local)
      host = self._batch(local, job, progress,
                         with_grid=first < self._grid_size())
      self.store.save(first, self._record(host))
      self.log.append(batch_rows(self.mask, host, self.methods))
      bar.update(int((host["index"] >= 0).sum()))
    bar.close()

  def _batch(self, local: dict, baseline_job, progress, with_grid: bool):
    """Samples and scores one batch; returns what is gathered to the hosts:
    index, valid, scores (and FID features, and 8-bit images for grids)."""
    loaded, k = self.loaded, self.config.eval.num_samples
    batch = parallel.global_batch(local, loaded.mesh)
    samples = inference.sample_k(loaded, batch["image"], batch["mask"],
                                 batch["index"], self.key, self.extra, k,
                                 progress=progress)
    outputs = {MODEL: samples[:, 0]}
    if k > 1:
      outputs[MEAN_OF_K] = inference.mean_of_samples(
          samples, batch["image"], batch["mask"])
    outputs.update(parallel.global_batch(baseline_job.result(), loaded.mesh))
    wanted = {"index": batch["index"], "valid": batch["valid"],
              "scores": {m: self.scorer.scores(out, batch["image"])
                         for m, out in outputs.items()}}
    if self.scorer.inception is not None:
      outputs[ORIGINAL] = batch["image"]
      wanted["features"] = {m: self.scorer.inception(out)
                            for m, out in outputs.items()}
    if with_grid:
      outputs[ORIGINAL] = batch["image"]
      wanted["grid"] = {m: metrics.to_uint8(out) for m, out in outputs.items()}
      wanted["mask"] = batch["mask"]
      if k > 1:
        wanted["uncertainty"] = inference.std_of_samples(samples,
                                                         batch["mask"])
    return inference.fetch(wanted)

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
    return f"grid_{_safe_name(self.mask)}.png"

  def save_grid(self, out_dir: str) -> bool:
    """Writes grid_<mask>.png (masked input | one sample | (mean of K |
    uncertainty) | baselines | original); False when there are no grid
    images (eval.num_grid_images = 0)."""
    grid = self.store.collect("grid", range(self._grid_size()))
    if not grid:
      return False
    if _is_lead():
      columns = [grid[m] for m in self.methods]
      if MEAN_OF_K in grid:
        columns.insert(2, images.uncertainty_image(grid["uncertainty"]))
      images.save_png(os.path.join(out_dir, self.grid_name()),
                      images.inpainting_grid(grid[ORIGINAL], grid["mask"],
                                             *columns))
    return True


# ------------------------------------------------------------- summary
def _mean(values: list[float]) -> float:
  return float(np.mean(values)) if values else float("nan")


def summarise(rows: list[dict], masks, methods, fid: dict) -> dict:
  """Means per (method, mask); a PSNR of +inf (an exact copy) counts as
  metrics.PSNR_CAP. `fid` maps (method, mask) to FID where computed."""
  table = {}
  rows = sorted(rows, key=lambda r: (r["mask"], r["index"], r["method"]))
  for method in methods:
    for mask in masks:
      sel = [r for r in rows if r["method"] == method and r["mask"] == mask]
      entry = {"psnr": _mean(list(metrics.capped_psnr([r["psnr"]
                                                        for r in sel]))),
               "ssim": _mean([r["ssim"] for r in sel]),
               "num_images": len(sel)}
      lpips = [r["lpips"] for r in sel if r["lpips"] is not None]
      if lpips:
        entry["lpips"] = _mean(lpips)
      if (method, mask) in fid:
        entry["fid"] = float(fid[method, mask])
      table[method, mask] = entry
  return table


def results_json(table: dict, config, step: int, weights: str,
                 grids: dict[str, str]) -> dict:
  """results.json: the documented shape, plus the sampler, the checkpoint
  item and the grid file of each mask."""
  masks, ec = tuple(config.eval.masks), config.eval
  scores = lambda e: {k: v for k, v in e.items() if k != "num_images"}
  mean = model_methods(config)[-1]  # the first sample itself when K = 1
  return {
      "step": int(step),
      "num_images": min(table[MODEL, m]["num_images"] for m in masks),
      "image_size": int(config.data.image_size),
      "masks": {m: {**table[MODEL, m], MEAN_OF_K: {
          "k": int(ec.num_samples), **scores(table[mean, m])}}
                for m in masks},
      "baselines": {b: {m: scores(table[b, m]) for m in masks}
                    for b in ec.baselines},
      "sampler": {"name": ec.sampler, "num_steps": int(ec.num_steps),
                  "timestep_spacing": ec.timestep_spacing,
                  "eta": float(ec.eta)},
      "weights": weights,
      "model": _model_title(config),
      "grids": grids,
  }


def _model_title(config) -> str:
  ffc = "with" if config.model.ffc.enabled else "without"
  return f"DDPM {ffc} FFC"


_COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
            ("lpips", "LPIPS", "{:.3f}"), ("fid", "FID", "{:.2f}"))


def results_markdown(results: dict) -> str:
  """The paper's table: one row per method, each metric per mask."""
  masks = list(results["masks"])
  first = results["masks"][masks[0]]
  shown = [c for c in _COLUMNS if c[0] in first]
  head = ["method"] + [f"{m} {title}" for m in masks for _, title, _ in
                       shown]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  rows = {METHOD_TITLES.get(b, b): per_mask
          for b, per_mask in results["baselines"].items()}
  rows[f"{results['model']} (this model, step {results['step']})"] = (
      results["masks"])
  k = results["masks"][masks[0]][MEAN_OF_K]["k"]
  if k > 1:
    rows[f"{results['model']}, mean of {k} samples"] = {
        m: entry[MEAN_OF_K] for m, entry in results["masks"].items()}
  for name, per_mask in rows.items():
    cells = [fmt.format(per_mask[m][key]) if key in per_mask[m] else "-"
             for m in masks for key, _, fmt in shown]
    lines.append("| " + " | ".join([name] + cells) + " |")
  s = results["sampler"]
  lines += ["", f"{results['num_images']} images at {results['image_size']}x"
            f"{results['image_size']}, {s['name']} sampling with "
            f"{s['num_steps']} {s.get('timestep_spacing', 'uniform')} steps, "
            f"{results['weights']}. PSNR (dB, MAX = "
            "255) and SSIM on 8-bit images, higher is better"
            + ("; LPIPS and FID lower is better" if len(shown) > 2 else "")
            + "."]
  means = ["mean of K", "uncertainty"] if k > 1 else []
  columns = " | ".join(["masked input", "one sample"] + means + [
      METHOD_TITLES.get(b, b) for b in results["baselines"]] + ["original"])
  for m, grid in results["grids"].items():
    lines += ["", f"![{m}]({grid})", "", f"{m}: {columns}"]
  return "\n".join(lines) + "\n"


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
    scorer = Scorer(config, mesh)
    loaded = inference.load(config, workdir, step, mesh, weights_file)
    return evaluate_loaded(config, loaded, out_dir, scorer)


def evaluate_loaded(config, loaded: inference.Inference, out_dir: str,
                    scorer: Scorer) -> dict:
  """Evaluates weights already loaded (`loaded`, its sampler built from
  `config.eval`) into `out_dir`; returns results.json's content.

  What `evaluate` does once the checkpoint is read; tools that score one
  model under many samplers (tools/quality_vs_speed.py) call it once per
  sampler with the same weights.
  """
  ec = config.eval
  num_images = _num_images(config)
  log = PerImageLog(out_dir, run_settings(config, loaded.step,
                                          loaded.weights))
  fid, grids = {}, {}
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    for mask in ec.masks:
      run = MaskRun(config, mask, loaded, scorer, log, num_images)
      run.run(pool)
      fid.update({(m, mask): v for m, v in run.fid().items()})
      if run.save_grid(out_dir):
        grids[mask] = run.grid_name()

  methods = model_methods(config) + tuple(ec.baselines)
  table = summarise(log.rows, ec.masks, methods, fid)
  results = results_json(table, config, loaded.step, loaded.weights, grids)
  markdown = results_markdown(results)
  if _is_lead():
    _write_atomically(os.path.join(out_dir, "results.json"),
                      json.dumps(results, indent=2))
    _write_atomically(os.path.join(out_dir, "results.md"), markdown)
  logging.info("Evaluation of step %d:\n%s", loaded.step, markdown)
  return results
