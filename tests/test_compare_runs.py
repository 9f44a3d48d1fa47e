"""tools/compare_runs.py: paired differences between two evaluations'
per_image.csv, checked against scipy's paired t-test."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import compare_runs as tool  # pylint: disable=g-import-not-at-top,wrong-import-position


def write_eval(folder: pathlib.Path, rows: list[tuple], seed=0,
               path="faces") -> pathlib.Path:
  """An evaluation folder: per_image.csv of (mask, index, method, psnr,
  ssim) and the settings.json that evaluate.py writes beside it."""
  folder.mkdir(parents=True)
  with open(folder / "per_image.csv", "w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["mask", "index", "method", "psnr", "ssim", "lpips"])
    writer.writerows([*r, ""] for r in rows)
  (folder / "settings.json").write_text(json.dumps(
      {"config": {"seed": seed, "eval": {"split": "validation"},
                  "data": {"path": path, "split_seed": 0}}, "step": 500}))
  return folder


def test_paired_means_and_interval_match_scipy(tmp_path):
  rng = np.random.default_rng(0)
  base_psnr, base_ssim = rng.normal(21, 3, 12), rng.uniform(0.6, 0.8, 12)
  other_psnr = base_psnr + rng.normal(0.3, 0.2, 12)
  other_ssim = base_ssim + rng.normal(-0.01, 0.005, 12)
  # Both runs skipped unreadable image 13; the other also scored image 12
  # and lost image 0: only images 1..11 pair.
  base_rows = ([("center", i, "model", base_psnr[i], base_ssim[i])
                for i in range(12)] + [("center", 13, "unreadable", "", "")])
  other_rows = ([("center", i, "model", other_psnr[i], other_ssim[i])
                 for i in range(1, 12)] +
                [("center", 12, "model", 99.0, 0.99),
                 ("center", 0, "unreadable", "", ""),
                 ("center", 13, "unreadable", "", "")])
  base = write_eval(tmp_path / "a", base_rows)
  other = write_eval(tmp_path / "b", other_rows)
  rows = tool.compare(tool.scores(tool.per_image_path(str(base))),
                      tool.scores(tool.per_image_path(str(other))))
  assert len(rows) == 1
  row = rows[0]
  assert (row["mask"], row["method"], row["n"]) == ("center", "model", 11)
  for metric, a, b in (("psnr", base_psnr[1:], other_psnr[1:]),
                       ("ssim", base_ssim[1:], other_ssim[1:])):
    test = stats.ttest_rel(b, a)
    low, high = test.confidence_interval(0.95)
    got = row[metric]
    assert got["base"] == pytest.approx(a.mean())
    assert got["other"] == pytest.approx(b.mean())
    assert got["mean"] == pytest.approx((low + high) / 2)
    assert got["half_width"] == pytest.approx((high - low) / 2)


def test_only_shared_masks_and_methods_are_compared(tmp_path):
  base = write_eval(tmp_path / "a", [
      ("center", 0, "model", 20, 0.7), ("center", 1, "model", 22, 0.8),
      ("random", 0, "model", 25, 0.9), ("random", 1, "model", 26, 0.9)])
  other = write_eval(tmp_path / "b", [
      ("center", 0, "model", 21, 0.7), ("center", 1, "model", 24, 0.9),
      ("center", 0, "mean_of_k", 23, 0.8), ("center", 1, "mean_of_k", 24,
                                            0.8)])
  rows = tool.compare(tool.scores(str(base / "per_image.csv")),
                      tool.scores(str(other / "per_image.csv")))
  assert [(r["mask"], r["method"]) for r in rows] == [("center", "model")]
  assert rows[0]["psnr"]["mean"] == pytest.approx(1.5)
  assert rows[0]["ssim"]["mean"] == pytest.approx(0.05)


def test_runs_of_other_seeds_do_not_pair(tmp_path):
  rows = [("center", 0, "model", 20, 0.7), ("center", 1, "model", 21, 0.7)]
  base = write_eval(tmp_path / "a", rows)
  moved = write_eval(tmp_path / "b", rows, path="elsewhere")
  tool.check_pairable(str(base / "per_image.csv"),
                      str(moved / "per_image.csv"))  # data.path may differ
  reseeded = write_eval(tmp_path / "c", rows, seed=1)
  with pytest.raises(ValueError, match="seed is 1 but 0"):
    tool.check_pairable(str(base / "per_image.csv"),
                        str(reseeded / "per_image.csv"))


def run_tool(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" /
                                             "compare_runs.py"), *args],
                        capture_output=True, text=True)


def test_command_prints_table_and_json(tmp_path):
  base = write_eval(tmp_path / "a", [("center", 0, "model", 20, 0.7),
                                     ("center", 1, "model", 22, 0.8)])
  other = write_eval(tmp_path / "b", [("center", 0, "model", 21, 0.75),
                                      ("center", 1, "model", 24, 0.75)])
  out = tmp_path / "out.json"
  result = run_tool(str(base), str(other), f"--json={out}")
  assert result.returncode == 0, result.stderr
  # Differences 1 and 2: mean 1.5, sd 0.707, t(0.975, 1) = 12.706.
  assert result.stdout.splitlines()[-1] == (
      f"| {other} | center | model | 2 | 21.00 | 22.50 | +1.50 ± 6.35 | "
      "0.750 | 0.750 | +0.000 ± 0.635 |")
  written = json.loads(out.read_text())
  assert written["runs"][str(other)][0]["psnr"]["half_width"] == (
      pytest.approx(12.7062 * np.sqrt(0.5) / np.sqrt(2), abs=1e-3))


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: (tmp / "missing", tmp / "missing"),
     "expected an evaluation folder with per_image.csv"),
    (lambda tmp: (write_eval(tmp / "a", [("center", 0, "model", 20, 0.7)]),
                  write_eval(tmp / "b", [("random", 0, "model", 20, 0.7)])),
     "no (mask, method, image) in common"),
])
def test_bad_input_is_one_line(tmp_path, make, expected):
  base, other = make(tmp_path)
  result = run_tool(str(base), str(other))
  assert result.returncode == 1
  assert result.stderr.startswith("error: ") and expected in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_an_exact_copy_counts_as_the_psnr_cap(tmp_path):
  """A PSNR of +inf (an image returned exactly) counts as metrics.PSNR_CAP,
  as in every mean of the evaluation, not as inf or nan."""
  from ffc_ddpm import metrics  # pylint: disable=g-import-not-at-top
  base = write_eval(tmp_path / "a", [("center", 0, "model", 20.0, 0.5),
                                     ("center", 1, "model", 30.0, 0.7)])
  other = write_eval(tmp_path / "b", [("center", 0, "model", "inf", 1.0),
                                      ("center", 1, "model", 31.0, 0.8)])
  row, = tool.compare(tool.scores(tool.per_image_path(str(base))),
                      tool.scores(tool.per_image_path(str(other))))
  assert row["psnr"]["other"] == pytest.approx((metrics.PSNR_CAP + 31) / 2)
  assert row["psnr"]["mean"] == pytest.approx((metrics.PSNR_CAP - 20 + 1) / 2)
  assert np.isfinite(row["psnr"]["half_width"])
