r"""Paired comparison of evaluations: what a change gained, with its error bar.

  python tools/compare_runs.py BASE OTHER [OTHER ...] [--json=OUT.json]

BASE and each OTHER is an evaluation's folder (a workdir's eval/, or a run
folder of tools/quality_vs_speed.py) or its per_image.csv. Evaluations made
with the same seed and data score the same images under the same holes, so
their per-image scores pair up. For every (mask, method) that BASE and
OTHER share, on the images both scored, it prints each run's mean PSNR and
SSIM and the mean of the per-image differences OTHER - BASE with its 95%
confidence interval, mean ± t * sd / sqrt(n) (Student's t, n - 1 degrees
of freedom). Pairing removes the spread between faces, which is far larger
than most changes' effects: on 64 faces it resolves a few tenths of a dB
that the two means alone could not.

When both folders hold the evaluation's settings.json, their seed, split
and data (all but data.path) must agree; otherwise the images or holes
differ and the rows do not pair.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags
import numpy as np
from scipy import stats

from ffc_ddpm import eval_records, metrics

METRICS = ("psnr", "ssim")
CONFIDENCE = 0.95


def per_image_path(run: str) -> str:
  """`run`'s per_image.csv: the file itself or the one in the folder."""
  path = (os.path.join(run, eval_records.CSV_FILE) if os.path.isdir(run)
          else run)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{run}: expected an evaluation folder with "
                            f"{eval_records.CSV_FILE}, or that file")
  return path


def scores(path: str) -> dict[tuple[str, str], dict[int, dict]]:
  """{(mask, method): {image index: row}} of a per_image.csv."""
  table: dict[tuple[str, str], dict[int, dict]] = {}
  for row in eval_records.read_per_image(path):
    if row["method"] != eval_records.UNREADABLE:
      table.setdefault((row["mask"], row["method"]), {})[row["index"]] = row
  return table


def _pairing_settings(csv_path: str) -> dict | None:
  """What decides the images and holes: seed, split and data, from the
  settings.json beside the file (None without one)."""
  path = os.path.join(os.path.dirname(csv_path), eval_records.SETTINGS_FILE)
  try:
    with open(path) as f:
      config = json.load(f)["config"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  data = {k: v for k, v in config.get("data", {}).items() if k != "path"}
  return {"seed": config.get("seed"),
          "eval.split": config.get("eval", {}).get("split"),
          **{f"data.{k}": v for k, v in data.items()}}


def check_pairable(base_csv: str, other_csv: str) -> None:
  """Raises ValueError naming the first setting that differs."""
  base, other = _pairing_settings(base_csv), _pairing_settings(other_csv)
  if base is None or other is None:
    return
  for name in sorted(base.keys() | other.keys()):
    if base.get(name) != other.get(name):
      raise ValueError(
          f"{other_csv}: {name} is {other.get(name)!r} but "
          f"{base.get(name)!r} in {base_csv}; the runs score different "
          "images or holes, so their rows do not pair")


def paired_difference(base: np.ndarray, other: np.ndarray) -> dict:
  """Mean of other - base and its confidence interval's half-width."""
  diff = other - base
  n = len(diff)
  half = (stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * diff.std(ddof=1)
          / math.sqrt(n)) if n > 1 else math.nan
  return {"mean": float(diff.mean()), "half_width": float(half)}


def compare(base: dict, other: dict) -> list[dict]:
  """One row per shared (mask, method): n, both means, paired difference."""
  rows = []
  for key in sorted(base.keys() & other.keys()):
    images = sorted(base[key].keys() & other[key].keys())
    if not images:
      continue
    row = {"mask": key[0], "method": key[1], "n": len(images)}
    for metric in METRICS:
      a, b = np.array([(base[key][i][metric], other[key][i][metric])
                       for i in images], float).T
      if metric == "psnr":  # an exact copy counts as in every mean
        a, b = metrics.capped_psnr(a), metrics.capped_psnr(b)
      row[metric] = {"base": float(a.mean()), "other": float(b.mean()),
                     **paired_difference(a, b)}
    rows.append(row)
  return rows


def markdown(results: dict[str, list[dict]], base: str) -> str:
  """The comparisons as one Markdown table."""
  lines = [f"Differences from {base}, mean and {CONFIDENCE:.0%} confidence "
           "interval (paired over the images both scored).", "",
           "| run | mask | method | images | base PSNR | PSNR | difference "
           "| base SSIM | SSIM | difference |", "|---|---|---|---|---|---|---"
           "|---|---|---|"]
  for run, rows in results.items():
    for r in rows:
      p, s = r["psnr"], r["ssim"]
      lines.append(
          f"| {run} | {r['mask']} | {r['method']} | {r['n']} | "
          f"{p['base']:.2f} | {p['other']:.2f} | {p['mean']:+.2f} ± "
          f"{p['half_width']:.2f} | {s['base']:.3f} | {s['other']:.3f} | "
          f"{s['mean']:+.3f} ± {s['half_width']:.3f} |")
  return "\n".join(lines)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program."""
  global _JSON
  _JSON = flags.DEFINE_string("json", None, "Also write the rows here.")


def main(argv):
  if len(argv) < 3:
    raise app.UsageError("usage: compare_runs.py BASE OTHER [OTHER ...] "
                         "[--json=FILE]")
  try:
    base_csv = per_image_path(argv[1])
    base = scores(base_csv)
    results = {}
    for run in argv[2:]:
      other_csv = per_image_path(run)
      check_pairable(base_csv, other_csv)
      results[run] = compare(base, scores(other_csv))
      if not results[run]:
        raise ValueError(f"{run}: no (mask, method, image) in common with "
                         f"{argv[1]}")
  except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(markdown(results, argv[1]))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"base": argv[1], "runs": results}, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
