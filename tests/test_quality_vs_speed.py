"""tools/quality_vs_speed.py: every (sampler, steps) is scored by the
ordinary evaluation with its own sampler, and the table and plot say what
the per-run results say."""

import csv
import json
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from ffc_ddpm import configuration, metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import quality_vs_speed as tool  # pylint: disable=g-import-not-at-top,wrong-import-position

SAMPLERS = ("ddpm", "ddim", "dpm_solver")
STEPS = (2, 4)
MASKS = ("center", "random")
K = 2


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """(out folder, table) of a sweep over a random checkpoint."""
  base = helpers.tiny_config()
  workdir = helpers.random_checkpoint(base, tmp_path_factory.mktemp("model"))
  config = tool.sweep_config(base, num_samples=K, num_images=2, masks=MASKS)
  config.eval.batch_size = 2
  config.eval.num_grid_images = 0
  out = tmp_path_factory.mktemp("sweep")
  table = tool.quality_vs_speed(config, str(workdir), str(out), SAMPLERS,
                                STEPS)
  return workdir, config, out, table


def csv_mean_psnr(run_dir, mask, method):
  with open(run_dir / "per_image.csv", newline="") as f:
    rows = [r for r in csv.DictReader(f)
            if r["mask"] == mask and r["method"] == method]
  assert len(rows) == 2
  return np.mean([min(float(r["psnr"]), metrics.PSNR_CAP) for r in rows])


def test_table_has_every_run_with_finite_numbers(swept):
  _, _, out, table = swept
  on_disk = json.loads((out / "quality_vs_speed.json").read_text())
  assert on_disk == json.loads(json.dumps(table))
  assert [(r["sampler"], r["steps"]) for r in on_disk["rows"]] == [
      (s, n) for s in SAMPLERS for n in STEPS]
  assert on_disk["k"] == K and on_disk["masks"] == list(MASKS)
  for row in on_disk["rows"]:
    assert row["num_images"] == 2
    assert row["wall_s"] > 0 and math.isfinite(row["images_per_s"])
    for mask in MASKS:
      e = row["masks"][mask]
      values = [e["psnr"], e["ssim"], e["mean_of_k"]["psnr"],
                e["mean_of_k"]["ssim"]]
      assert all(math.isfinite(v) for v in values), (row, mask)
      assert e["mean_of_k"]["k"] == K
  markdown = (out / "quality_vs_speed.md").read_text()
  for s in SAMPLERS:
    for n in STEPS:
      assert f"| {s} | {n} | uniform |" in markdown


def test_scores_are_the_runs_own(swept):
  """The table's PSNR is each run's results.json, which is the mean of its
  per_image.csv rows; each run used its own sampler and step count."""
  _, _, out, table = swept
  for row in table["rows"]:
    run_dir = out / "runs" / f"{row['sampler']}_{row['steps']}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["sampler"]["name"] == row["sampler"]
    assert results["sampler"]["num_steps"] == row["steps"]
    assert (out / row["results"]).samefile(run_dir / "results.json")
    for mask in MASKS:
      e = row["masks"][mask]
      assert e["psnr"] == results["masks"][mask]["psnr"]
      assert e["mean_of_k"] == results["masks"][mask]["mean_of_k"]
      np.testing.assert_allclose(
          e["psnr"], csv_mean_psnr(run_dir, mask, "model"), rtol=1e-9)
      np.testing.assert_allclose(e["mean_of_k"]["psnr"], csv_mean_psnr(
          run_dir, mask, "mean_of_k"), rtol=1e-9)
  psnr = {(r["sampler"], r["steps"]): r["masks"]["center"]["psnr"]
          for r in table["rows"]}
  assert len(set(psnr.values())) > 1, "every run scored the same sampler"


def test_plot_has_the_size_and_every_sampler_line(swept):
  _, _, out, _ = swept
  image = Image.open(out / "quality_vs_speed.png")
  assert image.size == tool.plot_size(len(MASKS))
  pixels = {tuple(p) for p in np.asarray(image.convert("RGB")).reshape(-1, 3)}
  for colour in tool.COLOURS[:len(SAMPLERS)]:
    assert colour in pixels


def test_a_repeated_sweep_reuses_finished_runs(swept, tmp_path):
  workdir, config, out, table = swept
  shutil.copytree(out / "runs", tmp_path / "runs")
  again = tool.quality_vs_speed(config, str(workdir), str(tmp_path),
                                SAMPLERS[:1], STEPS[:1])
  assert again["rows"] == table["rows"][:1]  # the same wall time: reused


def test_spacings_are_a_third_axis_with_their_own_runs(swept, tmp_path):
  """--spacings: one run per spacing, each sampled with it (its results.json
  says so), and one plot line per (sampler, spacing)."""
  workdir, config, _, table = swept
  spaced = tool.quality_vs_speed(config, str(workdir), str(tmp_path),
                                 ["ddpm"], [4],
                                 spacings=["uniform", "quadratic"])
  assert [(r["sampler"], r["steps"], r["timestep_spacing"])
          for r in spaced["rows"]] == [("ddpm", 4, "uniform"),
                                       ("ddpm", 4, "quadratic")]
  for row, name in zip(spaced["rows"], ["ddpm_4", "ddpm_4_quadratic"]):
    results = json.loads((tmp_path / "runs" / name / "results.json")
                         .read_text())
    assert results["sampler"]["timestep_spacing"] == row["timestep_spacing"]
  uniform = next(r for r in table["rows"]
                 if (r["sampler"], r["steps"]) == ("ddpm", 4))
  assert spaced["rows"][0]["masks"] == uniform["masks"]
  assert spaced["rows"][1]["masks"] != uniform["masks"]
  pixels = {tuple(p) for p in np.asarray(Image.open(
      tmp_path / "quality_vs_speed.png").convert("RGB")).reshape(-1, 3)}
  assert set(tool.COLOURS[:2]) <= pixels
  assert "| ddpm | 4 | quadratic |" in (
      tmp_path / "quality_vs_speed.md").read_text()


def test_a_mistyped_override_is_one_line_naming_the_closest_field():
  """As the main job: no absl traceback and no run for --config.X typos."""
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "quality_vs_speed.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", "--out=unused",
       "--weights=unused.npz", "--config.eval.num_step=3"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.eval.num_step: no such field; did you mean "
      "config.eval.num_steps?")
  assert "Traceback" not in result.stderr


def test_an_outdated_run_is_set_aside_not_deleted(swept, tmp_path):
  """A run folder whose settings differ is archived (previous_1), as the
  evaluation archives an outdated eval/, and timed afresh."""
  workdir, config, out, _ = swept
  shutil.copytree(out / "runs", tmp_path / "runs")
  run_dir = tmp_path / "runs" / "ddpm_2"
  timing = json.loads((run_dir / tool.TIMING_FILE).read_text())
  timing["settings"]["warmup"] = "another warm-up"
  (run_dir / tool.TIMING_FILE).write_text(json.dumps(timing))
  before = (run_dir / "per_image.csv").read_bytes()
  tool.quality_vs_speed(config, str(workdir), str(tmp_path), ["ddpm"], [2])
  archived = run_dir / "previous_1"
  assert (archived / "per_image.csv").read_bytes() == before
  assert json.loads((archived / tool.TIMING_FILE).read_text())[
      "settings"]["warmup"] == "another warm-up"
  assert json.loads((run_dir / tool.TIMING_FILE).read_text())[
      "settings"]["warmup"] is True


def test_a_workdir_is_swept_with_the_network_it_trained(tmp_path):
  """The model comes from WORKDIR/config.json, not --config: a run trained
  with model_channels=64 is swept without repeating the override."""
  trained = helpers.tiny_config()
  trained.model.model_channels = 64
  helpers.random_checkpoint(trained, tmp_path / "run")
  configuration.save_json(trained, str(tmp_path / "run" / "config.json"))
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "quality_vs_speed.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--out={tmp_path / 'out'}",
       f"--workdir={tmp_path / 'run'}", "--samplers=ddim", "--steps=2",
       "--num_images=2", "--masks=center", "--num_samples=1",
       "--config.eval.batch_size=2", "--config.eval.num_grid_images=0"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "model.model_channels: 32 -> 64" in result.stderr
  settings = json.loads((tmp_path / "out" / "runs" / "ddim_2" /
                         "settings.json").read_text())
  assert settings["config"]["model"]["model_channels"] == 64
