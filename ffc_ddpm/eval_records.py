"""Evaluation records, on disk in WORKDIR/eval: what a resumed or a later
evaluation reads back.

  per_image.csv    one row per (mask, image, method): psnr, ssim, lpips;
                   appended batch by batch (`PerImageLog`), so an
                   interrupted evaluation continues where it stopped
  settings.json    what the rows depend on; rows made with other settings
                   are moved aside to previous_<k>/ (`archive`)
  store/<mask>/    per batch: FID features and grid images (`BatchStore`)

Process 0 writes, every file through `files.atomic_write` (the CSV is
appended and synced); all processes read.
"""

import csv
import io
import json
import os
import re
import shutil
from typing import Iterable

from absl import logging
import numpy as np

from ffc_ddpm import files, lock, parallel

MODEL = "model"  # the first sample, whatever K
MEAN_OF_K = "mean_of_k"  # the per-pixel mean of K samples (K > 1)
ORIGINAL = "original"  # the reference images in FID features and grids
UNREADABLE = "unreadable"  # the method of a row marking a skipped image
CSV_FIELDS = ("mask", "index", "method", "psnr", "ssim", "lpips")
SETTINGS_FILE = "settings.json"
CSV_FILE = "per_image.csv"


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
    same = files.read_json(settings_path) == settings
    self.rows: list[dict] = []
    if same and os.path.exists(self.path):
      self.rows = read_per_image(self.path)
    parallel.sync("eval_log_read")
    if parallel.is_lead():
      os.makedirs(out_dir, exist_ok=True)
      if not same:
        moved = archive(out_dir)
        if moved:
          logging.warning("Evaluation settings changed (step, sampler, seed, "
                          "data ...): the earlier results moved to %s", moved)
        files.write_text(settings_path, json.dumps(settings, indent=2))
      files.write_text(self.path, _csv_text(self.rows, header=True))

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
    done = parallel.from_lead(done)
    self.rows = [r for r in self.rows
                 if r["mask"] != mask or r["index"] < done]
    if parallel.is_lead():
      files.write_text(self.path, _csv_text(self.rows, header=True))
    return done

  def append(self, rows: list[dict]) -> None:
    """Adds a finished batch's rows; on disk before this returns."""
    self.rows.extend(rows)
    if parallel.is_lead():
      with open(self.path, "a") as f:
        f.write(_csv_text(rows, header=False))
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------- batch store
def safe_name(mask: str) -> str:
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
    self.folder = os.path.join(out_dir, "store", safe_name(mask))
    self.records = []
    names = sorted(os.listdir(self.folder)) if os.path.isdir(
        self.folder) else []
    kept = [n for n in names
            if re.fullmatch(r"\d+\.npz", n) and int(n[:-4]) < start]
    for name in kept:
      with np.load(os.path.join(self.folder, name)) as f:
        self.records.append({k: f[k] for k in f.files})
    parallel.sync("eval_store_read")
    if parallel.is_lead():
      os.makedirs(self.folder, exist_ok=True)
      for name in set(names) - set(kept):  # later batches, torn writes
        os.remove(os.path.join(self.folder, name))

  def save(self, first: int, record: dict[str, np.ndarray]) -> None:
    self.records.append(record)
    if parallel.is_lead() and record:
      path = os.path.join(self.folder, f"{first:09d}.npz")
      with files.atomic_write(path, "wb") as f:
        np.savez(f, **record)

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
