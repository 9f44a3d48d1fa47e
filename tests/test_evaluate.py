"""Batch evaluation end to end on the tiny trained model.

Scores are checked against scikit-image on the images the evaluation wrote
(its grids hold every image scored here), means against the CSV, and an
interrupted evaluation against an uninterrupted one. LPIPS and FID are
wired with random weights written by the test.
"""

import csv
import json
import math
import shutil

import jax
import numpy as np
from PIL import Image
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import inference_helpers as helpers
from ffc_ddpm import baselines, eval_records, evaluate, images, inference
from ffc_ddpm import parallel, perceptual, scoring
from ffc_ddpm.data import masks as masks_lib

MASKS = ("center", "random")
BASELINES = ("mean", "telea", "biharmonic")
SIZE = 16


class Killed(Exception):
  """Stands for the process being killed."""


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return helpers.trained_workdir(tmp_path_factory)


def eval_config(num_images=8, batch_size=4):
  config = helpers.tiny_config()
  config.eval.masks = MASKS
  config.eval.baselines = BASELINES
  config.eval.num_images = num_images
  config.eval.batch_size = batch_size
  config.eval.num_grid_images = 4
  return config


@pytest.fixture(scope="module")
def clean(trained, tmp_path_factory):
  """An uninterrupted evaluation: (workdir, results)."""
  workdir = helpers.copy_checkpoints(trained, tmp_path_factory.mktemp("clean"))
  return workdir, evaluate.evaluate(eval_config(), str(workdir))


def read_csv(workdir):
  with open(workdir / "eval" / "per_image.csv", newline="") as f:
    return sorted(csv.DictReader(f),
                  key=lambda r: (r["mask"], int(r["index"]), r["method"]))


def read_grid(workdir, mask):
  return np.asarray(Image.open(workdir / "eval" / f"grid_{mask}.png"))


def kill_at_batch(monkeypatch, call: int):
  """Makes the evaluation die when it starts its `call`-th batch."""
  original, calls = evaluate.score_batch, []

  def batch(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
      raise Killed()
    return original(*args, **kwargs)

  monkeypatch.setattr(evaluate, "score_batch", batch)


def skimage_scores(output, original):
  return (peak_signal_noise_ratio(original, output, data_range=255),
          structural_similarity(original, output, channel_axis=-1,
                                gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255))


# ------------------------------------------------------- uninterrupted
def test_results_json_has_the_documented_shape(clean):
  workdir, results = clean
  with open(workdir / "eval" / "results.json") as f:
    assert json.load(f) == results
  assert results["step"] == 4
  assert results["num_images"] == 8
  assert results["image_size"] == SIZE
  assert set(results["masks"]) == set(MASKS)
  for entry in results["masks"].values():
    assert entry["num_images"] == 8
    assert math.isfinite(entry["psnr"]) and 0 < entry["ssim"] <= 1
  assert set(results["baselines"]) == set(BASELINES)
  for per_mask in results["baselines"].values():
    assert set(per_mask) == set(MASKS)
    for entry in per_mask.values():
      assert {"psnr", "ssim"} <= set(entry)
      assert math.isfinite(entry["psnr"]) and math.isfinite(entry["ssim"])


def test_csv_rows_are_scikit_image_scores_of_the_images(clean):
  """Every grid cell is an evaluated image; its CSV row is skimage's score.

  The grids also show that the masks are the protocol's and that the model
  kept every known pixel.
  """
  workdir, _ = clean
  rows = {(r["mask"], int(r["index"]), r["method"]): r
          for r in read_csv(workdir)}
  columns = ("model",) + BASELINES
  for mask in MASKS:
    grid = read_grid(workdir, mask)
    for i in range(4):
      cell = lambda j: helpers.grid_cell(grid, i, j, SIZE)
      original = cell(len(columns) + 1)
      hole = masks_lib.eval_mask(mask, SIZE, 0, i)[..., 0] == 1
      np.testing.assert_array_equal(cell(0)[hole], 255)
      np.testing.assert_array_equal(cell(0)[~hole], original[~hole])
      np.testing.assert_array_equal(cell(1)[~hole], original[~hole])
      for j, method in enumerate(columns, start=1):
        psnr, ssim = skimage_scores(cell(j), original)
        row = rows[mask, i, method]
        assert float(row["psnr"]) == pytest.approx(psnr, abs=1e-4)
        assert float(row["ssim"]) == pytest.approx(ssim, abs=1e-4)


def test_baselines_fill_the_same_holes_as_the_model(clean):
  workdir, _ = clean
  grid = read_grid(workdir, "random")
  originals = np.stack([helpers.grid_cell(grid, i, 5, SIZE) for i in range(4)])
  holes = np.stack([masks_lib.eval_mask("random", SIZE, 0, i)
                    for i in range(4)])
  for j, method in enumerate(BASELINES, start=2):
    cells = np.stack([helpers.grid_cell(grid, i, j, SIZE) for i in range(4)])
    np.testing.assert_array_equal(
        cells, baselines.inpaint(method, originals, holes))


def test_means_are_the_csv_means(clean):
  workdir, results = clean
  rows = read_csv(workdir)
  assert len(rows) == len(MASKS) * 8 * (1 + len(BASELINES))
  for mask in MASKS:
    for method in ("model",) + BASELINES:
      sel = [r for r in rows if r["mask"] == mask and r["method"] == method]
      entry = (results["masks"][mask] if method == "model" else
               results["baselines"][method][mask])
      for key in ("psnr", "ssim"):
        mean = np.mean([float(r[key]) for r in sel])
        assert entry[key] == pytest.approx(mean, rel=1e-12)


def test_markdown_table_lists_the_baselines_and_the_model(clean):
  workdir, results = clean
  text = (workdir / "eval" / "results.md").read_text()
  lines = text.splitlines()
  assert lines[0] == ("| method | center PSNR | center SSIM | random PSNR | "
                      "random SSIM |")
  body = [line for line in lines[2:] if line.startswith("| ")]
  assert [line.split(" | ")[0] for line in body] == [
      "| mean fill", "| Telea (OpenCV)", "| biharmonic (scikit-image)",
      "| DDPM with FFC (this model, step 4)"]
  center = results["masks"]["center"]
  assert f"| {center['psnr']:.2f} | {center['ssim']:.3f} |" in body[-1]
  for mask in MASKS:
    assert f"![{mask}](grid_{mask}.png)" in text


# ---------------------------------------------------------- mean of K
@pytest.fixture(scope="module")
def mean_of_k(trained, tmp_path_factory):
  """Evaluated with K = 3, the sampler's batch sizes recorded."""
  workdir = helpers.copy_checkpoints(trained, tmp_path_factory.mktemp("k"))
  config = eval_config()
  config.eval.num_samples = 3
  calls, sample_k = [], inference.sample_k
  def recording(loaded, x, *args, **kwargs):
    calls.append(x.shape[0] * args[-1])
    return sample_k(loaded, x, *args, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inference, "sample_k", recording)
    results = evaluate.evaluate(config, str(workdir))
  return workdir, results, calls


def test_k_samples_share_the_batch_size(mean_of_k):
  """eval.batch_size is the images per sampler call: batch_size // K
  examples, each drawn K times."""
  *_, calls = mean_of_k
  config = eval_config()
  per_call = config.eval.batch_size // 3 * 3
  assert calls and set(calls) == {per_call}
  assert len(calls) == len(MASKS) * -(-config.eval.num_images //
                                      (config.eval.batch_size // 3))


def test_mean_of_k_is_scored_beside_the_unchanged_first_sample(clean,
                                                               mean_of_k):
  """The first sample's rows are those of K = 1; the mean of K has its own
  rows (scikit-image's scores of its grid column), its entry in
  results.json and its row in results.md; the grid shows it and the
  uncertainty map, whose colour is that of 0 outside the hole."""
  clean_dir, clean_results = clean
  workdir, results, _ = mean_of_k
  rows = {(r["mask"], int(r["index"]), r["method"]): r
          for r in read_csv(workdir)}
  for (mask, index, method), row in {
      (r["mask"], int(r["index"]), r["method"]): r
      for r in read_csv(clean_dir)}.items():
    assert float(rows[mask, index, method]["psnr"]) == pytest.approx(
        float(row["psnr"]), abs=1e-3)
  for mask in MASKS:
    entry = results["masks"][mask]
    assert entry["psnr"] == pytest.approx(
        clean_results["masks"][mask]["psnr"], abs=1e-3)
    assert set(entry["mean_of_k"]) == {"k", "psnr", "ssim"}
    assert entry["mean_of_k"]["k"] == 3
    sel = [r for r in rows.values()
           if r["mask"] == mask and r["method"] == "mean_of_k"]
    assert len(sel) == 8
    assert entry["mean_of_k"]["psnr"] == pytest.approx(
        np.mean([float(r["psnr"]) for r in sel]), rel=1e-12)
    assert clean_results["masks"][mask]["mean_of_k"] == {
        "k": 1, "psnr": clean_results["masks"][mask]["psnr"],
        "ssim": clean_results["masks"][mask]["ssim"]}
    grid = read_grid(workdir, mask)
    for i in range(4):
      cell = lambda j: helpers.grid_cell(grid, i, j, SIZE)
      original = cell(4 + len(BASELINES))
      hole = masks_lib.eval_mask(mask, SIZE, 0, i)[..., 0] == 1
      np.testing.assert_array_equal(cell(2)[~hole], original[~hole])
      assert (cell(2)[hole] != cell(1)[hole]).any()
      psnr, ssim = skimage_scores(cell(2), original)
      assert float(rows[mask, i, "mean_of_k"]["psnr"]) == pytest.approx(
          psnr, abs=1e-4)
      assert float(rows[mask, i, "mean_of_k"]["ssim"]) == pytest.approx(
          ssim, abs=1e-4)
      np.testing.assert_array_equal(cell(3)[~hole], np.broadcast_to(
          images.INFERNO[0], cell(3)[~hole].shape))
      assert (cell(3)[hole] != images.INFERNO[0]).any(-1).mean() > 0.9
  text = (workdir / "eval" / "results.md").read_text()
  row = [line for line in text.splitlines() if "mean of 3 samples" in line]
  center = results["masks"]["center"]["mean_of_k"]
  assert len(row) == 1 and (
      f"| {center['psnr']:.2f} | {center['ssim']:.3f} |" in row[0])
  assert "mean of" not in (clean_dir / "eval" / "results.md").read_text()


# --------------------------------------------------------------- resume
def test_interrupted_evaluation_resumes_to_the_same_results(clean, tmp_path,
                                                            monkeypatch):
  """The CSV of a finished run cut in the middle of a line (as a kill
  mid-write leaves it): the rerun redoes only the unfinished images, and
  everything it writes equals the uninterrupted run's."""
  clean_dir, clean_results = clean
  workdir = tmp_path / "work"
  shutil.copytree(clean_dir, workdir)
  csv_path = workdir / "eval" / "per_image.csv"
  text = csv_path.read_text()
  cut = text.index("random,5,")
  csv_path.write_text(text[:cut + len("random,5,mo")])
  (workdir / "eval" / "results.json").unlink()

  sampled = []
  original_batch = evaluate.score_batch
  monkeypatch.setattr(evaluate, "score_batch",
                      lambda config, loaded, scorer, local, *a, **k:
                      sampled.append(local["index"].tolist()) or
                      original_batch(config, loaded, scorer, local, *a, **k))
  results = evaluate.evaluate(eval_config(), str(workdir))
  assert sampled == [[5, 6, 7, -1]]  # image 4 was complete
  _assert_same_results(results, clean_results)
  assert read_csv(workdir) == read_csv(clean_dir)
  for mask in MASKS:
    np.testing.assert_array_equal(read_grid(workdir, mask),
                                  read_grid(clean_dir, mask))


def _assert_same_results(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      _assert_same_results(a[key], b[key])
    elif isinstance(a[key], float):
      assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    else:
      assert a[key] == b[key], key


def test_changed_settings_start_afresh_and_keep_the_old_files(clean, tmp_path):
  clean_dir, _ = clean
  workdir = tmp_path / "work"
  shutil.copytree(clean_dir, workdir)
  before = {p.relative_to(workdir / "eval"): p.read_bytes()
            for p in (workdir / "eval").rglob("*") if p.is_file()}
  config = eval_config(num_images=4)
  config.seed = 1
  results = evaluate.evaluate(config, str(workdir))
  previous = workdir / "eval" / "previous_1"
  for name, content in before.items():
    assert (previous / name).read_bytes() == content, name
  rows = read_csv(workdir)
  assert len(rows) == len(MASKS) * 4 * (1 + len(BASELINES))
  assert results["num_images"] == 4
  settings = json.loads((workdir / "eval" / "settings.json").read_text())
  assert settings["config"]["seed"] == 1


def test_resume_points_skip_unreadable_images_and_torn_batches(tmp_path):
  """Pure bookkeeping: an image counts as done when every method has a row
  or it is marked unreadable; rows past the first gap are dropped."""
  settings = {"step": 1}
  log = eval_records.PerImageLog(str(tmp_path), settings)
  row = lambda i, m: {"mask": "center", "index": i, "method": m,
                      "psnr": 1.0 * i, "ssim": 0.5, "lpips": None}
  log.append([row(0, "model"), row(0, "mean"),
              dict(row(1, eval_records.UNREADABLE), psnr=None, ssim=None),
              row(2, "model"), row(2, "mean"), row(3, "model"),
              row(4, "model"), row(4, "mean")])
  reread = eval_records.PerImageLog(str(tmp_path), settings)
  assert reread.resume_point("center", ("model", "mean"), 10) == 3
  assert sorted({r["index"] for r in reread.rows}) == [0, 1, 2]
  assert eval_records.PerImageLog(str(tmp_path), settings).rows == reread.rows


def test_batch_rows_mark_unreadable_images_and_skip_padding():
  host = {"index": np.array([6, 7, -1]), "valid": np.array([True, False,
                                                            False]),
          "scores": {m: {"psnr": np.array([30.0, 0.0, 0.0]) + k,
                         "ssim": np.array([0.5, 0.0, 0.0])}
                     for k, m in enumerate(("model", "mean"))}}
  rows = scoring.batch_rows("box", host, ("model", "mean"))
  assert [(r["index"], r["method"], r["psnr"]) for r in rows] == [
      (6, "model", 30.0), (6, "mean", 31.0), (7, eval_records.UNREADABLE, None)]
  assert all(r["mask"] == "box" and r["lpips"] is None for r in rows)


# ------------------------------------------------------ LPIPS and FID
def random_metric_weights(metric, path, seed):
  """Weights of the right shapes; He-scaled kernels keep features alive."""
  rng = np.random.default_rng(seed)

  def draw(name, shape):
    if name.endswith("/var"):
      return np.ones(shape)
    if name.endswith(("/mean", "/bias")):
      return rng.normal(size=shape) * 0.01
    if name.endswith("/scale"):
      return np.ones(shape)
    fan_in = np.prod(shape[:-1])
    return rng.normal(size=shape) * np.sqrt(2.0 / fan_in)

  flat = {k: draw(k, s) for k, s in perceptual.expected_shapes(metric).items()}
  perceptual.save_weights(str(path), metric, flat)
  return str(path)


@pytest.fixture(scope="module")
def perceptual_run(tmp_path_factory):
  """A 32x32 evaluation of two images with LPIPS and FID, killed after its
  first batch (one image) and resumed.

  FID's matrix square root (tested in test_perceptual, about a minute at
  2048 features) is replaced by a cheap stand-in; the features are recorded.
  """
  root = tmp_path_factory.mktemp("perceptual")
  config = helpers.tiny_config()
  config.data.image_size = 32
  config.model.attention_resolutions = (16,)
  config.eval.masks = ("center",)
  config.eval.baselines = ("mean",)
  config.eval.num_images = 2
  config.eval.batch_size = 1
  config.eval.num_grid_images = 2
  config.eval.lpips_weights = random_metric_weights(
      perceptual.LPIPS, root / "lpips.npz", 1)
  config.eval.fid_weights = random_metric_weights(
      perceptual.FID, root / "fid.npz", 2)
  workdir = helpers.random_checkpoint(config, root / "work", step=7)
  recorded, distances = [], []
  statistics = perceptual.fid_statistics

  def record_statistics(features):
    recorded.append(np.array(features))
    return statistics(features)

  def stand_in_distance(mu1, sigma1, mu2, sigma2):
    value = float(np.sum((mu1 - mu2)**2) + np.trace(sigma1) - np.trace(sigma2))
    distances.append(value)
    return value

  with pytest.MonkeyPatch.context() as patch:
    kill_at_batch(patch, call=2)
    with pytest.raises(Killed):
      evaluate.evaluate(config, str(workdir))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(perceptual, "fid_statistics", record_statistics)
    patch.setattr(perceptual, "frechet_distance", stand_in_distance)
    results = evaluate.evaluate(config, str(workdir))
  return config, workdir, results, recorded, distances


def grid_images(workdir, column, rows, size=32):
  """Grid cells as one-image batches in [-1, 1], laid out as the evaluation
  lays out its batches (so the compiled networks are reused)."""
  grid = read_grid(workdir, "center")
  sharding = parallel.data_sharding(parallel.create_mesh())
  return [jax.device_put(helpers.grid_cell(grid, i, column, size)[None] /
                         np.float32(127.5) - 1, sharding) for i in rows]


def test_lpips_rows_are_lpips_of_the_images(perceptual_run):
  config, workdir, results, _, _ = perceptual_run
  lpips = perceptual.load_lpips(config.eval.lpips_weights,
                                parallel.replicated(parallel.create_mesh()))
  originals = grid_images(workdir, 3, (0, 1))
  rows = read_csv(workdir)
  for column, method in ((1, "model"), (2, "mean")):
    expected = [float(lpips(out, original)[0]) for out, original in
                zip(grid_images(workdir, column, (0, 1)), originals)]
    got = [float(r["lpips"]) for r in rows if r["method"] == method]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    entry = (results["masks"]["center"] if method == "model" else
             results["baselines"]["mean"]["center"])
    assert entry["lpips"] == pytest.approx(np.mean(expected), rel=1e-5)


def test_fid_uses_features_of_every_image_across_the_resume(perceptual_run):
  """The features FID is computed from are Inception's features of the
  images in the grid, image 0 from the killed run and image 1 from the
  resumed one; FID compares each method with the originals."""
  config, workdir, results, recorded, distances = perceptual_run
  assert len(recorded) == 3  # original, model, mean
  assert all(f.shape == (2, perceptual.FID_FEATURES) for f in recorded)
  original, model, mean = recorded
  inception = perceptual.load_inception(
      config.eval.fid_weights, parallel.replicated(parallel.create_mesh()))
  first_original, = grid_images(workdir, 3, (0,))
  second_model, = grid_images(workdir, 1, (1,))
  for got, image in ((original[0], first_original), (model[1], second_model)):
    expected = np.asarray(inception(image))[0]
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert not np.allclose(mean, original)
  assert results["masks"]["center"]["fid"] == distances[0]
  assert results["baselines"]["mean"]["center"]["fid"] == distances[1]


def test_perceptual_columns_in_the_table(perceptual_run):
  _, workdir, results, _, _ = perceptual_run
  text = (workdir / "eval" / "results.md").read_text()
  assert text.splitlines()[0] == ("| method | center PSNR | center SSIM | "
                                  "center LPIPS | center FID |")
  assert results["step"] == 7 and results["weights"] == "params"


def test_missing_weights_leave_metrics_out_with_one_line(caplog):
  config = eval_config()
  with caplog.at_level("INFO"):
    scorer = scoring.Scorer(config, parallel.create_mesh())
  assert scorer.lpips is None and scorer.inception is None
  for metric in (perceptual.LPIPS, perceptual.FID):
    assert perceptual.missing_weights_message(metric) in caplog.messages


def test_lpips_on_images_too_small_for_alexnet_is_refused(tmp_path):
  config = eval_config()
  config.eval.lpips_weights = str(tmp_path / "lpips.npz")
  with pytest.raises(ValueError, match="at least 31x31, data.image_size=16"):
    evaluate.check_config(config)
