"""Inpainting users' photos: sizes, modes, masks, files; sampling.

The promise checked everywhere: the result has the photo's size and mode,
every pixel outside the hole is the photo's own, and the hole is filled.
"""

import pathlib

import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from ffc_ddpm import inference, inpaint
from ffc_ddpm.data import masks as masks_lib


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return helpers.trained_workdir(tmp_path_factory)


def nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize: output pixel centres sampled in the input."""
  rows = ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(int)
  cols = ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(int)
  return mask[rows][:, cols]


def rectangle_hole(height, width, top, left, h, w):
  hole = np.zeros((height, width, 1), np.float32)
  hole[top:top + h, left:left + w] = 1
  return hole


# ------------------------------------------------------ resize in and out
@pytest.mark.parametrize("height,width", [(37, 23), (9, 11)])
def test_no_colour_from_the_hole_reaches_the_known_model_pixels(height,
                                                                width):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  hole = rectangle_hole(height, width, height // 3, width // 4, height // 3,
                        width // 2)
  repainted = np.where(hole == 1, rng.integers(0, 256, photo.shape), photo)
  x, mask = inpaint.to_model_input(photo, hole, 16)
  y, mask2 = inpaint.to_model_input(repainted.astype(np.uint8), hole, 16)
  np.testing.assert_array_equal(mask, mask2)
  known = mask[..., 0] == 0
  np.testing.assert_array_equal(x[known], y[known])
  assert x.shape == (16, 16, 3) and x.min() >= -1 and x.max() <= 1
  # Every model pixel whose centre lies in the hole is a hole.
  assert (mask[nearest(hole, 16, 16)[..., 0] == 1] == 1).all()
  assert 0 < mask.mean() < 1


@pytest.mark.parametrize("channels", [None, 2, 3, 4])
def test_results_keep_the_known_pixels_and_mode_of_the_photo(channels):
  rng = np.random.default_rng(1)
  shape = (13, 29) if channels is None else (13, 29, channels)
  pixels = rng.integers(0, 256, shape, dtype=np.uint8)
  photo = inpaint.photo_from_array(pixels)
  hole = rectangle_hole(13, 29, 2, 5, 6, 11)
  colour = np.array([200, 40, 90], np.uint8)
  output = np.broadcast_to(colour / 127.5 - 1, (16, 16, 3))
  result = inpaint.from_model_output(output, photo, hole)
  assert result.shape == pixels.shape and result.dtype == np.uint8
  inside = hole[..., 0] == 1
  np.testing.assert_array_equal(result[~inside], pixels[~inside])
  grey = (200 * 19595 + 40 * 38470 + 90 * 7471 + 0x8000) >> 16  # PIL's L
  fill = {None: grey, 2: [grey, 255], 3: colour, 4: [*colour, 255]}[channels]
  assert (result[inside] == fill).all()


def test_photos_are_read_in_their_mode_and_seen_on_white(tmp_path):
  rgba = np.zeros((4, 6, 4), np.uint8)
  rgba[..., :3] = [10, 100, 250]
  rgba[..., 3] = 64  # a quarter opaque
  Image.fromarray(rgba).save(tmp_path / "a.png")
  photo = inpaint.read_photo(str(tmp_path / "a.png"))
  np.testing.assert_array_equal(photo.pixels, rgba)
  on_white = np.round(64 / 255 * np.array([10, 100, 250]) + 191 / 255 * 255)
  np.testing.assert_allclose(photo.rgb[0, 0], on_white, atol=1)

  grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
  Image.fromarray(grey).save(tmp_path / "g.png")
  photo = inpaint.read_photo(str(tmp_path / "g.png"))
  np.testing.assert_array_equal(photo.pixels, grey)
  np.testing.assert_array_equal(photo.rgb, np.repeat(grey[..., None], 3, -1))
  with pytest.raises(ValueError, match="expected a uint8 image"):
    inpaint.photo_from_array(np.zeros((4, 4, 5), np.uint8))


# ----------------------------------------------------------- masks, paths
def test_mask_files_folders_and_names(tmp_path):
  config = helpers.tiny_config()
  masks = tmp_path / "masks" / "sub"
  masks.mkdir(parents=True)
  small = np.zeros((5, 4), np.uint8)
  small[1:3, 1:3] = 255
  Image.fromarray(small).save(masks / "face.png")
  relative = pathlib.Path("sub/face.jpg")
  hole, generated = inpaint.user_hole(str(tmp_path / "masks"), relative, 15,
                                      8, config, 0)
  assert not generated
  np.testing.assert_array_equal(hole[..., 0], nearest(small == 255, 15, 8))
  hole, generated = inpaint.user_hole("center", relative, 15, 8, config, 3)
  assert generated
  centre = masks_lib.eval_mask("center", 16, config.seed, 3)
  np.testing.assert_array_equal(hole, nearest(centre, 15, 8))
  with pytest.raises(FileNotFoundError, match="no mask named sub/other"):
    inpaint.user_hole(str(tmp_path / "masks"), pathlib.Path("sub/other.png"),
                      5, 5, config, 0)
  with pytest.raises(ValueError, match="--mask=oval: not a file or folder"):
    inpaint.user_hole("oval", relative, 5, 5, config, 0)


def test_output_paths():
  one = [pathlib.Path("face.jpg")]
  many = [pathlib.Path("a.png"), pathlib.Path("sub/b.png")]
  assert inpaint.output_paths("out.png", one, 1) == [(["out.png"],
                                                      "out_mask.png")]
  assert inpaint.output_paths("out.PNG", one, 2) == [
      (["out_0.png", "out_1.png"], "out_mask.png")]
  assert inpaint.output_paths("res", many, 1) == [
      (["res/a.png"], "res/a_mask.png"),
      (["res/sub/b.png"], "res/sub/b_mask.png")]
  with pytest.raises(ValueError, match="written as PNG"):
    inpaint.output_paths("out.jpg", one, 1)
  with pytest.raises(ValueError, match="names one file but there are 2"):
    inpaint.output_paths("out.png", many, 1)
  with pytest.raises(ValueError, match="would both be written to res/a.png"):
    inpaint.output_paths("res", [pathlib.Path("a.png"),
                                 pathlib.Path("a.jpg")], 1)
  with pytest.raises(ValueError, match="would both be written to "
                     "res/a_mask.png"):
    inpaint.output_paths("res", [pathlib.Path("a.png"),
                                 pathlib.Path("a_mask.png")], 1)


# ------------------------------------------------------ with the model
PHOTOS = {  # name -> (height, width, channels or None)
    "odd.png": (37, 23, 3), "wide.png": (11, 40, 3), "grey.png": (21, 21, None),
    "sub/alpha.png": (16, 19, 4)}


@pytest.fixture(scope="module")
def inpainted(trained, tmp_path_factory):
  """A folder of photos inpainted twice each with `random` masks."""
  root = tmp_path_factory.mktemp("inpaint")
  rng = np.random.default_rng(2)
  for name, (h, w, c) in PHOTOS.items():
    shape = (h, w) if c is None else (h, w, c)
    (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        root / "in" / name)
  written = inpaint.inpaint_files(helpers.tiny_config(), str(trained),
                                  str(root / "in"), "random",
                                  str(root / "out"), num_samples=2)
  return root, written


def test_results_have_the_photos_size_and_mode_and_known_pixels(inpainted):
  root, written = inpainted
  assert len(written) == 2 * len(PHOTOS)
  for name in PHOTOS:
    photo = np.asarray(Image.open(root / "in" / name))
    stem = str(pathlib.Path(name).with_suffix(""))
    hole = np.asarray(Image.open(root / "out" / f"{stem}_mask.png")) == 255
    assert hole.shape == photo.shape[:2] and 0.1 < hole.mean() < 0.5
    results = [np.asarray(Image.open(root / "out" / f"{stem}_{k}.png"))
               for k in range(2)]
    for result in results:
      assert result.shape == photo.shape and result.dtype == np.uint8
      changed = result != photo
      if changed.ndim == 3:
        changed = changed.any(-1)
      np.testing.assert_array_equal(changed & ~hole, False)  # known: exact
      assert changed[hole].mean() > 0.9  # the hole the user sees is filled
    differ = results[0] != results[1]
    assert differ.reshape(*hole.shape, -1).any(-1)[hole].mean() > 0.9


def test_named_masks_are_the_evaluation_masks_stretched(inpainted):
  root, _ = inpainted
  config = helpers.tiny_config()
  for i, name in enumerate(sorted(PHOTOS)):  # the order images are found in
    h, w, _ = PHOTOS[name]
    stem = str(pathlib.Path(name).with_suffix(""))
    hole = np.asarray(Image.open(root / "out" / f"{stem}_mask.png")) == 255
    drawn = masks_lib.eval_mask("random", 16, config.seed, i)[..., 0] == 1
    np.testing.assert_array_equal(hole, nearest(drawn, h, w))


# ----------------------------------------------- an unconditional model
@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
  """Random weights of an unconditional model, sampled by RePaint."""
  config = helpers.tiny_config()
  config.diffusion.conditioning = "none"
  config.diffusion.loss_region = "full"
  config.model.in_channels = 3
  config.eval.sampler = "repaint"
  config.eval.jump_length = 2
  config.eval.jump_n_sample = 2
  workdir = helpers.random_checkpoint(config,
                                      tmp_path_factory.mktemp("uncond"))
  return config, workdir, inpaint.Inpainter(config, str(workdir))


def test_sample_files_draw_different_images_whatever_the_calls(
    unconditional, tmp_path):
  """8 samples written in two calls of 4 are the 8 drawn in one call."""
  config, workdir, inpainter = unconditional
  written = inpaint.sample_files(config, str(workdir), str(tmp_path / "s"), 8)
  assert [pathlib.Path(p).name for p in written] == [
      f"sample_000{i}.png" for i in range(8)]
  samples = np.stack([np.asarray(Image.open(p)) for p in written])
  assert samples.shape == (8, 16, 16, 3)
  np.testing.assert_array_equal(samples, inpainter.sample(8))
  assert all((samples[i] != samples[i + 1]).any() for i in range(7))


def test_repaint_inpainting_keeps_the_known_pixels(unconditional):
  _, _, inpainter = unconditional
  rng = np.random.default_rng(3)
  pixels = rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)
  hole = rectangle_hole(20, 27, 5, 5, 9, 12)
  inside = hole[..., 0] == 1
  results, = inpainter.inpaint([inpaint.photo_from_array(pixels)], [hole],
                               num_samples=4)
  for result in results:
    np.testing.assert_array_equal(result[~inside], pixels[~inside])
    assert (result[inside] != pixels[inside]).any(-1).mean() > 0.9
  assert (results[0] != results[3]).any()


def test_few_examples_are_sampled_in_small_batches():
  assert [inference.padded_batch_size(16, n) for n in (1, 2, 3, 5, 16, 40)
          ] == [1, 2, 4, 8, 16, 16]


def test_sampling_refuses_a_conditional_model(tmp_path):
  with pytest.raises(ValueError, match="conditioning='none'"):
    inpaint.sample_files(helpers.tiny_config(), str(tmp_path), str(tmp_path),
                         2)
