"""The released model (weights/celeba64.npz) still wins on real faces.

Through the command users run: 16 held-out CelebA crops of ../shared (the
first of configs/celeba64.py's test split, which training never read) at
their stored 128x128, twice the model's size, with a centred 64x64 hole,
are inpainted with `--weights`, no workdir and the mean of K samples;
scored by scikit-image against the originals, beside scikit-image's
biharmonic inpainting of the same holes. A change that breaks the network,
the sampler, the weights format or the inpainting path (the window, the
resize, the hole at the model's size, the paste back) fails here.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from skimage import metrics as sk_metrics
from skimage import restoration

from ffc_ddpm import configuration, weights
from ffc_ddpm.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASED = ROOT / "weights" / "celeba64.npz"
NUM_FACES = 16
PHOTO_SIZE = 128  # the crops' own size; the model's is 64
K = 8
# Ancestral DDPM in 10 calls: the released model's best sampler at this
# cost (benchmarks/quality.md), so the check takes about a minute on CI.
SAMPLER = ("--config.eval.sampler=ddpm", "--config.eval.num_steps=10")
# The released model scores 24.76 dB / 0.864 here against biharmonic's
# 21.66 / 0.852 (weights/README.md). At 128x128 biharmonic's smooth ramps
# keep its SSIM close (at the model's 64x64 the model leads by 0.06), so
# the SSIM check asks only that it wins; PSNR keeps a margin no broken
# model reaches.
MIN_PSNR_GAIN = 2.0  # dB over biharmonic
MIN_SSIM_GAIN = 0.0


def held_out_faces(shared_dir: pathlib.Path) -> np.ndarray:
  """The first NUM_FACES test faces of configs/celeba64.py at their stored
  PHOTO_SIZE, uint8."""
  config = configuration.load_config(str(ROOT / "configs" / "celeba64.py"))
  config.data.path = str(shared_dir / "data" / "celeba_crops_128")
  config.data.image_size = PHOTO_SIZE
  batch = next(pipeline.eval_batches(config, "test", "center", NUM_FACES,
                                     NUM_FACES))
  assert batch["valid"].all()
  return np.round((batch["image"] + 1) * 127.5).clip(0, 255).astype(np.uint8)


def centre_hole(size: int) -> np.ndarray:
  """The centre mask: the middle square of half the side (True = hole)."""
  hole = np.zeros((size, size), bool)
  hole[size // 4:size // 4 + size // 2, size // 4:size // 4 + size // 2] = True
  return hole


def scores(outputs, originals) -> tuple[float, float]:
  """Mean PSNR and SSIM (the evaluation's: Gaussian window, sigma 1.5)."""
  psnr = [sk_metrics.peak_signal_noise_ratio(x, o, data_range=255)
          for o, x in zip(outputs, originals)]
  ssim = [sk_metrics.structural_similarity(
      x, o, channel_axis=-1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=255)
          for o, x in zip(outputs, originals)]
  return float(np.mean(psnr)), float(np.mean(ssim))


@pytest.fixture(scope="module")
def inpainted(shared_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("released")
  faces = held_out_faces(shared_dir)
  hole = centre_hole(faces.shape[1])
  for folder in ("faces", "masks"):
    (root / folder).mkdir()
  for i, face in enumerate(faces):
    Image.fromarray(face).save(root / "faces" / f"{i:02d}.png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(
        root / "masks" / f"{i:02d}.png")
  # As users run it: without conftest's XLA_FLAGS, which trade run time for
  # compile time on the tests' tiny networks; this network is the real one.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", "--mode=inpaint",
       "--config=configs/celeba64.py", f"--weights={RELEASED}",
       f"--image={root / 'faces'}", f"--mask={root / 'masks'}",
       f"--output={root / 'out'}", f"--num_samples={K}", "--reduce=mean",
       "--compilation_cache=", *SAMPLER],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  outputs = np.stack([np.asarray(Image.open(root / "out" / f"{i:02d}.png"))
                      for i in range(len(faces))])
  return faces, hole, outputs


def test_the_released_file_is_the_documented_one():
  meta = weights.read_metadata(str(RELEASED))
  readme = (ROOT / "weights" / "README.md").read_text()
  assert f"{meta['step']:,}" in readme
  assert os.path.getsize(RELEASED) <= 8_000_000


def test_known_pixels_are_kept_and_the_hole_filled(inpainted):
  faces, hole, outputs = inpainted
  np.testing.assert_array_equal(outputs[:, ~hole], faces[:, ~hole])
  assert (outputs[:, hole] != faces[:, hole]).any(-1).mean() > 0.9


def test_the_mean_of_k_beats_biharmonic_on_held_out_faces(inpainted):
  faces, hole, outputs = inpainted
  biharmonic = np.stack([
      np.round(restoration.inpaint_biharmonic(
          face, hole, channel_axis=-1) * 255).clip(0, 255).astype(np.uint8)
      for face in faces])
  model_psnr, model_ssim = scores(outputs, faces)
  classic_psnr, classic_ssim = scores(biharmonic, faces)
  assert model_psnr >= classic_psnr + MIN_PSNR_GAIN, (model_psnr,
                                                      classic_psnr)
  assert model_ssim >= classic_ssim + MIN_SSIM_GAIN, (model_ssim,
                                                      classic_ssim)


def test_the_documented_command_runs_from_a_clone_without_shared(tmp_path):
  """weights/README.md's command, run as a user runs it: from a copy of the
  repository with no ../shared beside it, on their own photo and mask."""
  from ffc_ddpm.data import synthetic  # pylint: disable=g-import-not-at-top
  clone = tmp_path / "clone" / "ffc_ddpm"
  shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache"))
  assert not (clone.parent / "shared").exists()
  for folder in ("faces", "masks"):
    (tmp_path / folder).mkdir()
  face = synthetic.render_face(0, 0, PHOTO_SIZE)
  Image.fromarray(face).save(tmp_path / "faces" / "me.png")
  hole = centre_hole(PHOTO_SIZE)
  Image.fromarray(hole.astype(np.uint8) * 255).save(
      tmp_path / "masks" / "me.png")
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "PYTHONPATH")}
  result = subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", "--mode=inpaint",
       "--config=configs/celeba64.py", "--weights=weights/celeba64.npz",
       f"--image={tmp_path / 'faces'}", f"--mask={tmp_path / 'masks'}",
       f"--output={tmp_path / 'out'}", "--num_samples=8",
       "--compilation_cache="],
      cwd=clone, env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  written = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert written == [f"me_{k}.png" for k in range(8)] + ["me_uncertainty.png"]
  first = np.asarray(Image.open(tmp_path / "out" / "me_0.png"))
  np.testing.assert_array_equal(first[~hole], face[~hole])
