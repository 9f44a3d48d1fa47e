"""tools/score_inpainting.py: the inpaint command's results scored against
the originals, checked against scikit-image on hand-made results."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from skimage import metrics as sk_metrics
from skimage import restoration

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import score_inpainting as tool  # pylint: disable=g-import-not-at-top,wrong-import-position

SIZES = {"a.png": (40, 48), "sub/b.jpg": (64, 64), "c.png": (33, 50)}
FILLS = (100, 141)  # the hole's value in sample 0 and sample 1


def sk_scores(result, original):
  return (sk_metrics.peak_signal_noise_ratio(original, result,
                                             data_range=255),
          sk_metrics.structural_similarity(
              original, result, channel_axis=-1, gaussian_weights=True,
              sigma=1.5, use_sample_covariance=False, data_range=255))


def hole_of(size):
  hole = np.zeros(size, bool)
  hole[size[0] // 4:size[0] // 2, size[1] // 3:size[1] * 2 // 3] = True
  return hole


@pytest.fixture
def folders(tmp_path):
  """Photos (a JPEG among them), masks named like them, and the results
  of K = 2 as the inpaint command names them: the hole set to FILLS."""
  rng = np.random.default_rng(0)
  expected = {}
  for name, size in SIZES.items():
    photo = tmp_path / "faces" / name
    photo.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    Image.fromarray(pixels).save(photo, quality=95)
    original = np.asarray(Image.open(photo).convert("RGB"))  # as decoded
    hole = hole_of(size)
    mask = (tmp_path / "masks" / name).with_suffix(".png")
    mask.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hole.astype(np.uint8) * 255).save(mask)
    stem = tmp_path / "out" / pathlib.Path(name).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, fill in enumerate(FILLS):
      result = original.copy()
      result[hole] = fill
      Image.fromarray(result).save(f"{stem}_{k}.png")
      samples.append(result)
    mean = original.copy()
    mean[hole] = round(sum(FILLS) / 2)  # 120.5 rounds to even: 120
    biharmonic = restoration.inpaint_biharmonic(original, hole,
                                                channel_axis=-1)
    biharmonic = np.clip(np.round(biharmonic * 255), 0, 255).astype(np.uint8)
    expected[name] = {tool.ONE: sk_scores(samples[0], original),
                      tool.MEAN: sk_scores(mean, original),
                      "biharmonic": sk_scores(biharmonic, original)}
  return tmp_path, expected


def test_scores_equal_scikit_image_per_photo_and_on_average(folders):
  root, expected = folders
  scores = tool.score_photos(str(root / "faces"), str(root / "masks"),
                             str(root / "out"), num_samples=2)
  assert scores["num_photos"] == 3 and scores["k"] == 2
  for photo in scores["photos"]:
    want = expected[photo["image"]]
    for method, (psnr, ssim) in want.items():
      np.testing.assert_allclose(photo[method]["psnr"], psnr, rtol=1e-5)
      np.testing.assert_allclose(photo[method]["ssim"], ssim, atol=2e-5)
  for method in (tool.ONE, tool.MEAN, "biharmonic"):
    np.testing.assert_allclose(
        scores["methods"][method]["psnr"],
        np.mean([e[method][0] for e in expected.values()]), rtol=1e-5)
  assert "| mean of 2 |" in tool.markdown(scores)


def test_a_protocol_mask_is_read_from_the_mask_the_command_wrote(folders):
  root, expected = folders
  for name in SIZES:  # as the command saves a generated mask
    stem = root / "out" / pathlib.Path(name).with_suffix("")
    mask = root / "masks" / pathlib.Path(name).with_suffix(".png")
    mask.rename(f"{stem}_mask.png")
  scores = tool.score_photos(str(root / "faces"), "center",
                             str(root / "out"), num_samples=2)
  for photo in scores["photos"]:
    np.testing.assert_allclose(photo[tool.ONE]["psnr"],
                               expected[photo["image"]][tool.ONE][0],
                               rtol=1e-5)


def test_the_commands_own_mean_is_scored_as_the_mean_of_k(folders):
  """--reduce=mean: name.png is the command's mean of K, scored as such
  (here made equal to the mean of the two fills), with no one-sample row."""
  root, expected = folders
  for name in SIZES:
    stem = root / "out" / pathlib.Path(name).with_suffix("")
    samples = [np.asarray(Image.open(f"{stem}_{k}.png")) for k in (0, 1)]
    mean = np.round(np.mean(samples, axis=0)).astype(np.uint8)
    Image.fromarray(mean).save(f"{stem}.png")
  scores = tool.score_photos(str(root / "faces"), str(root / "masks"),
                             str(root / "out"), num_samples=2, reduce="mean")
  assert scores["k"] == 2
  assert list(scores["methods"]) == [tool.MEAN, "biharmonic"]
  for photo in scores["photos"]:
    np.testing.assert_allclose(photo[tool.MEAN]["psnr"],
                               expected[photo["image"]][tool.MEAN][0],
                               rtol=1e-5)


def test_results_that_do_not_match_the_command_are_one_line(folders):
  """--num_samples=3 asks for a name_2.png that was never written."""
  root, _ = folders
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "score_inpainting.py"),
       f"--image={root / 'faces'}", f"--mask={root / 'masks'}",
       f"--output={root / 'out'}", "--num_samples=3"],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --output: no result ") and "_2.png" in last
  assert "Traceback" not in result.stderr
