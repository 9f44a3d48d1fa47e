"""Inpainting users' photos: sizes, modes, masks, files; sampling.

The promise checked everywhere: the result has the photo's size and mode,
every pixel outside the hole is the photo's own, and the hole is filled.
"""

import pathlib

import cv2
import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from ffc_ddpm import compositing, images, inference, inpaint, inpaint_command
from ffc_ddpm import photos as photos_lib
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
def random_hole(rng, height, width):
  """A few rectangles and scattered pixels: holes of every shape."""
  hole = (rng.random((height, width, 1)) < rng.uniform(0, 0.03)).astype(
      np.float32)
  for _ in range(rng.integers(0, 3)):
    top, left = rng.integers(0, height), rng.integers(0, width)
    hole[top:top + rng.integers(1, height), left:left + rng.integers(
        1, width)] = 1
  return hole


def footprint_hole(hole, size):
  """The model's hole by interval arithmetic: model row i stands for the
  photo rows whose centres lie in (i s, (i + 1) s], s = side / size (when
  enlarging, s < 1: the row under its centre); a hole if any is a hole."""
  side = hole.shape[0]
  scale = side / size
  def rows(i):
    if scale < 1:
      return [int((i + 0.5) * scale)]
    return [j for j in range(side) if i * scale < j + 0.5 <= (i + 1) * scale]
  out = np.zeros((size, size, 1), np.float32)
  for r in range(size):
    for c in range(size):
      out[r, c] = hole[np.ix_(rows(r), rows(c))].max()
  return out


def telea(photo, hole):
  """OpenCV's Telea fill (radius 5) of the hole, cleared first: the
  reference prefill."""
  inside = hole[..., 0] > 0.5
  cleared = np.where(inside[..., None], 0, photo).astype(np.uint8)
  return cv2.inpaint(cleared, inside.astype(np.uint8), 5, cv2.INPAINT_TELEA)


def test_the_models_hole_is_the_footprint_of_the_photos_on_random_holes():
  rng = np.random.default_rng(0)
  for _ in range(200):
    side, size = int(rng.integers(4, 90)), int(rng.choice([8, 16, 32]))
    hole = random_hole(rng, side, side)
    photo = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    _, mask = photos_lib.to_model_input(photo, hole, size)
    np.testing.assert_array_equal(mask, footprint_hole(hole, size))
    # Every model pixel whose centre lies in the hole is a hole.
    assert (mask[nearest(hole, size, size)[..., 0] == 1] == 1).all()


def test_a_centred_hole_at_twice_the_size_is_the_evaluations_centre_hole():
  """A 64x64 hole in the middle of a 128x128 photo is, for the model at
  64x64, the centre mask that evaluation scores: 32x32, no pixel grown."""
  photo = np.zeros((128, 128, 3), np.uint8)
  hole = rectangle_hole(128, 128, 32, 32, 64, 64)
  _, mask = photos_lib.to_model_input(photo, hole, 64)
  np.testing.assert_array_equal(mask, masks_lib.eval_mask("center", 64, 0, 0))


def test_a_photo_at_the_models_size_keeps_its_hole_and_context():
  """At equal sizes nothing is resized: the model sees the photo's known
  pixels and exactly its hole (as evaluation does), nothing grown."""
  rng = np.random.default_rng(1)
  for _ in range(20):
    hole = random_hole(rng, 16, 16)
    photo = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x, mask = photos_lib.to_model_input(photo, hole, 16)
    np.testing.assert_array_equal(mask, hole)
    np.testing.assert_array_equal(
        x, telea(photo, hole).astype(np.float32) / 127.5 - 1)


@pytest.mark.parametrize("height,width", [(37, 23), (9, 11), (11, 40)])
def test_no_colour_from_the_hole_reaches_the_model(height, width):
  """Whatever the hole holds, the model's input is the same, everywhere:
  the hole is filled from the known pixels before resizing."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    hole = random_hole(rng, height, width)
    repainted = np.where(hole == 1, rng.integers(0, 256, photo.shape), photo)
    x, mask = photos_lib.to_model_input(photo, hole, 16)
    y, mask2 = photos_lib.to_model_input(repainted.astype(np.uint8), hole, 16)
    np.testing.assert_array_equal(mask, mask2)
    np.testing.assert_array_equal(x, y)
    assert x.shape == (16, 16, 3) and x.min() >= -1 and x.max() <= 1


def bicubic(pixels, size):
  return np.asarray(Image.fromarray(pixels).resize(
      (size, size), Image.Resampling.BICUBIC), np.float32) / 127.5 - 1


def test_a_photo_without_a_hole_is_seen_as_it_is_and_one_all_hole_as_black():
  rng = np.random.default_rng(7)
  photo = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
  x, mask = photos_lib.to_model_input(photo, np.zeros((24, 24, 1)), 16)
  np.testing.assert_array_equal(x, bicubic(photo, 16))
  assert not mask.any()
  x, mask = photos_lib.to_model_input(photo, np.ones((24, 24, 1)), 16)
  np.testing.assert_array_equal(x, -1.0)  # nothing of the photo is read
  assert mask.all()


def test_a_wide_photo_is_seen_through_a_square_around_the_hole():
  """No stretching: the model sees the 11 x 11 square centred on the hole,
  its hole filled by Telea, resized by Pillow."""
  rng = np.random.default_rng(4)
  photo = rng.integers(0, 256, (11, 40, 3), dtype=np.uint8)
  hole = rectangle_hole(11, 40, 3, 25, 4, 6)  # columns 25..30, centre 28
  x, mask = photos_lib.to_model_input(photo, hole, 16)
  square, square_hole = photo[:, 22:33], hole[:, 22:33]
  np.testing.assert_array_equal(x, bicubic(telea(square, square_hole), 16))
  np.testing.assert_array_equal(mask, footprint_hole(square_hole, 16))
  at_the_edge = rectangle_hole(11, 40, 3, 36, 4, 4)  # kept inside the photo
  x, _ = photos_lib.to_model_input(photo, at_the_edge, 16)
  np.testing.assert_array_equal(
      x, bicubic(telea(photo[:, 29:40], at_the_edge[:, 29:40]), 16))


def test_a_hole_longer_than_the_short_side_gets_a_reflect_padded_square():
  rng = np.random.default_rng(5)
  photo = rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)
  hole = rectangle_hole(10, 30, 0, 2, 3, 14)  # 14 wide: a 14 x 14 square
  x, mask = photos_lib.to_model_input(photo, hole, 16)
  reflect = lambda a: np.pad(a[:, 2:16], ((2, 2), (0, 0), (0, 0)), "reflect")
  np.testing.assert_array_equal(
      x, bicubic(telea(reflect(photo), reflect(hole)), 16))
  np.testing.assert_array_equal(mask, footprint_hole(reflect(hole), 16))
  colour = np.array([10, 200, 30], np.uint8)
  result = photos_lib.from_model_output(
      np.broadcast_to(colour / 127.5 - 1, (16, 16, 3)),
      photos_lib.photo_from_array(photo), hole)
  inside = hole[..., 0] == 1
  assert result.shape == photo.shape
  np.testing.assert_array_equal(result[~inside], photo[~inside])
  np.testing.assert_array_equal(result[inside], np.broadcast_to(
      colour, result[inside].shape))


@pytest.mark.parametrize("channels", [None, 2, 3, 4])
def test_results_keep_the_known_pixels_and_mode_of_the_photo(channels):
  rng = np.random.default_rng(1)
  shape = (13, 29) if channels is None else (13, 29, channels)
  pixels = rng.integers(0, 256, shape, dtype=np.uint8)
  photo = photos_lib.photo_from_array(pixels)
  hole = rectangle_hole(13, 29, 2, 5, 6, 11)
  colour = np.array([200, 40, 90], np.uint8)
  output = np.broadcast_to(colour / 127.5 - 1, (16, 16, 3))
  result = photos_lib.from_model_output(output, photo, hole)
  assert result.shape == pixels.shape and result.dtype == np.uint8
  inside = hole[..., 0] == 1
  np.testing.assert_array_equal(result[~inside], pixels[~inside])
  grey = (200 * 19595 + 40 * 38470 + 90 * 7471 + 0x8000) >> 16  # PIL's L
  fill = {None: grey, 2: [grey, 255], 3: colour, 4: [*colour, 255]}[channels]
  assert (result[inside] == fill).all()


@pytest.mark.parametrize("channels", [None, 2, 3, 4])
def test_a_poisson_composite_takes_the_photos_colour_at_the_edge(channels):
  """A flat model output in a flat photo of another colour: pasted, the
  hole has the output's colour; blended, the fill's gradients (none) with
  the photo's colour on the edge: the photo's colour (alpha: opaque)."""
  shape = (13, 29) if channels is None else (13, 29, channels)
  photo_colour = np.array([30, 160, 220, 90], np.uint8)
  pixels = np.broadcast_to(photo_colour[:shape[2]] if channels else
                           photo_colour[0], shape).copy()
  photo = photos_lib.photo_from_array(pixels)
  hole = rectangle_hole(13, 29, 2, 5, 6, 11)
  inside = hole[..., 0] == 1
  output = np.broadcast_to(np.array([200, 40, 90]) / 127.5 - 1, (16, 16, 3))
  pasted = photos_lib.from_model_output(output, photo, hole)
  blended = photos_lib.from_model_output(output, photo, hole, "poisson")
  assert blended.shape == pixels.shape and blended.dtype == np.uint8
  np.testing.assert_array_equal(blended[~inside], pixels[~inside])
  expected = pixels[~inside][0].copy()
  if channels in (2, 4):
    expected[-1] = 255
  assert (blended[inside] == expected).all()
  assert (pasted[inside] != pixels[inside]).any()


def test_photos_are_read_in_their_mode_and_seen_on_white(tmp_path):
  rgba = np.zeros((4, 6, 4), np.uint8)
  rgba[..., :3] = [10, 100, 250]
  rgba[..., 3] = 64  # a quarter opaque
  Image.fromarray(rgba).save(tmp_path / "a.png")
  photo = photos_lib.read_photo(str(tmp_path / "a.png"))
  np.testing.assert_array_equal(photo.pixels, rgba)
  on_white = np.round(64 / 255 * np.array([10, 100, 250]) + 191 / 255 * 255)
  np.testing.assert_allclose(photo.rgb[0, 0], on_white, atol=1)

  grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
  Image.fromarray(grey).save(tmp_path / "g.png")
  photo = photos_lib.read_photo(str(tmp_path / "g.png"))
  np.testing.assert_array_equal(photo.pixels, grey)
  np.testing.assert_array_equal(photo.rgb, np.repeat(grey[..., None], 3, -1))
  with pytest.raises(ValueError, match="expected a uint8 image"):
    photos_lib.photo_from_array(np.zeros((4, 4, 5), np.uint8))


# ----------------------------------------------------------- masks, paths
def test_mask_files_folders_and_names(tmp_path):
  config = helpers.tiny_config()
  masks = tmp_path / "masks" / "sub"
  masks.mkdir(parents=True)
  small = np.zeros((5, 4), np.uint8)
  small[1:3, 1:3] = 255
  Image.fromarray(small).save(masks / "face.png")
  relative = pathlib.Path("sub/face.jpg")
  hole, generated = photos_lib.user_hole(str(tmp_path / "masks"), relative, 15,
                                      8, config, 0)
  assert not generated
  np.testing.assert_array_equal(hole[..., 0], nearest(small == 255, 15, 8))
  hole, generated = photos_lib.user_hole("center", relative, 15, 8, config, 3)
  assert generated
  centre = masks_lib.eval_mask("center", 16, config.seed, 3)
  np.testing.assert_array_equal(hole, nearest(centre, 15, 8))
  with pytest.raises(FileNotFoundError, match="no mask named sub/other"):
    photos_lib.user_hole(str(tmp_path / "masks"), pathlib.Path("sub/other.png"),
                      5, 5, config, 0)
  with pytest.raises(ValueError, match="--mask=oval: not a file or folder"):
    photos_lib.user_hole("oval", relative, 5, 5, config, 0)


def test_output_paths():
  one = [pathlib.Path("face.jpg")]
  many = [pathlib.Path("a.png"), pathlib.Path("sub/b.png")]
  assert inpaint_command.output_paths("out.png", one, 1) == [(["out.png"],
                                                      "out_mask.png")]
  assert inpaint_command.output_paths("out.PNG", one, 2) == [
      (["out_0.png", "out_1.png", "out_uncertainty.png"], "out_mask.png")]
  assert inpaint_command.output_paths("out.png", one, 3, "mean") == [
      (["out.png", "out_uncertainty.png"], "out_mask.png")]
  assert inpaint_command.output_paths("out.png", one, 1, "mean") == [
      (["out.png"], "out_mask.png")]
  assert inpaint_command.output_paths("res", many, 1) == [
      (["res/a.png"], "res/a_mask.png"),
      (["res/sub/b.png"], "res/sub/b_mask.png")]
  with pytest.raises(ValueError, match="written as PNG"):
    inpaint_command.output_paths("out.jpg", one, 1)
  with pytest.raises(ValueError, match="names one file but there are 2"):
    inpaint_command.output_paths("out.png", many, 1)
  with pytest.raises(ValueError, match="would both be written to res/a.png"):
    inpaint_command.output_paths("res", [pathlib.Path("a.png"),
                                 pathlib.Path("a.jpg")], 1)
  with pytest.raises(ValueError, match="would both be written to "
                     "res/a_mask.png"):
    inpaint_command.output_paths("res", [pathlib.Path("a.png"),
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
  written = inpaint_command.inpaint_files(helpers.tiny_config(), str(trained),
                                  str(root / "in"), "random",
                                  str(root / "out"), num_samples=2)
  return root, written


def test_results_have_the_photos_size_and_mode_and_known_pixels(inpainted):
  root, written = inpainted
  assert len(written) == 3 * len(PHOTOS)  # 2 samples, 1 uncertainty map
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


def test_uncertainty_maps_are_written_and_zero_outside_the_hole(inpainted):
  root, _ = inpainted
  for name in PHOTOS:
    stem = str(pathlib.Path(name).with_suffix(""))
    hole = np.asarray(Image.open(root / "out" / f"{stem}_mask.png")) == 255
    colours = np.asarray(Image.open(root / "out" / f"{stem}_uncertainty.png"))
    assert colours.shape == hole.shape + (3,)
    np.testing.assert_array_equal(colours[~hole], np.broadcast_to(
        images.INFERNO[0], colours[~hole].shape))
    assert (colours[hole] != images.INFERNO[0]).any(-1).mean() > 0.9


def test_named_masks_are_the_evaluation_masks_stretched(inpainted):
  root, _ = inpainted
  config = helpers.tiny_config()
  for i, name in enumerate(sorted(PHOTOS)):  # the order images are found in
    h, w, _ = PHOTOS[name]
    stem = str(pathlib.Path(name).with_suffix(""))
    hole = np.asarray(Image.open(root / "out" / f"{stem}_mask.png")) == 255
    drawn = masks_lib.eval_mask("random", 16, config.seed, i)[..., 0] == 1
    np.testing.assert_array_equal(hole, nearest(drawn, h, w))


@pytest.fixture(scope="module")
def inpainter(trained):
  return inpaint.Inpainter(helpers.tiny_config(), str(trained))


def test_the_mean_is_the_mean_of_the_samples_and_uncertainty_their_std(
    inpainter):
  """--reduce=mean and --reduce=none share their K samples: the mean file is
  their per-pixel float mean (numpy's) brought to the photo; the uncertainty
  map is numpy's std of the K model outputs brought to the photo, 0 outside
  the hole."""
  rng = np.random.default_rng(6)
  photo = photos_lib.photo_from_array(rng.integers(0, 256, (20, 27, 3),
                                                dtype=np.uint8))
  hole = rectangle_hole(20, 27, 4, 6, 10, 12)
  inside = hole[..., 0] == 1
  samples, = inpainter.inpaint([photo], [hole], 4)
  mean, = inpainter.inpaint([photo], [hole], 4, reduce="mean")
  assert len(samples.results) == 4 and len(mean.results) == 1
  x, m = photos_lib.to_model_input(photo.rgb, hole, 16)
  drawn = inpainter._sample(x[None], m[None], 0, inference.Purpose.INPAINT,
                            None, 4).samples
  for k in range(4):  # the same draws
    np.testing.assert_array_equal(samples.results[k], photos_lib.from_model_output(
        drawn[0, k], photo, hole))
  np.testing.assert_array_equal(mean.results[0], photos_lib.from_model_output(
      np.where(m > 0.5, drawn[0].astype(np.float64).mean(0), x), photo, hole))
  stack = np.stack(samples.results).astype(np.float64)
  assert np.abs(mean.results[0] - stack[0])[inside].mean() > 3
  np.testing.assert_array_equal(mean.results[0][~inside], photo.pixels[
      ~inside])
  np.testing.assert_array_equal(mean.uncertainty, samples.uncertainty)
  std = samples.uncertainty[..., 0]
  np.testing.assert_array_equal(std[~inside], 0)
  numpy_std = np.sqrt(np.var(drawn[0].astype(np.float64), 0, ddof=1).mean(-1))
  np.testing.assert_allclose(samples.uncertainty, photos_lib.uncertainty_at_photo(
      np.where(m[..., 0] > 0.5, numpy_std, 0)[..., None], m, hole), atol=1e-6)
  assert (std[inside] > 0).mean() > 0.9
  single, = inpainter.inpaint([photo], [hole], 1)
  assert single.uncertainty is None
  np.testing.assert_array_equal(single.results[0], samples.results[0])


def test_a_composite_changes_only_how_the_same_samples_join_the_photo(
    inpainter):
  rng = np.random.default_rng(7)
  photo = photos_lib.photo_from_array(rng.integers(0, 256, (20, 27, 3),
                                                dtype=np.uint8))
  hole = rectangle_hole(20, 27, 4, 6, 10, 12)
  pasted, = inpainter.inpaint([photo], [hole], 2)
  blended, = inpainter.inpaint([photo], [hole], 2, composite="poisson")
  x, m = photos_lib.to_model_input(photo.rgb, hole, 16)
  drawn = inpainter._sample(x[None], m[None], 0, inference.Purpose.INPAINT,
                            None, 2).samples
  for k in range(2):
    np.testing.assert_array_equal(blended.results[k], compositing.poisson(
        photo.pixels, pasted.results[k], hole[..., 0] == 1))
    np.testing.assert_array_equal(pasted.results[k], photos_lib.from_model_output(
        drawn[0, k], photo, hole))
  np.testing.assert_array_equal(blended.uncertainty, pasted.uncertainty)
  with pytest.raises(ValueError, match="--composite=blur: expected one of "
                     "paste, poisson"):
    inpainter.inpaint([photo], [hole], 1, composite="blur")


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
  written = inpaint_command.sample_files(config, str(workdir), str(tmp_path / "s"), 8)
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
  inpainted, = inpainter.inpaint([photos_lib.photo_from_array(pixels)], [hole],
                                 num_samples=4)
  results = inpainted.results
  for result in results:
    np.testing.assert_array_equal(result[~inside], pixels[~inside])
    assert (result[inside] != pixels[inside]).any(-1).mean() > 0.9
  assert (results[0] != results[3]).any()


def test_few_examples_are_sampled_in_small_batches():
  assert [inference.padded_batch_size(16, n) for n in (1, 2, 3, 5, 16, 40)
          ] == [1, 2, 4, 8, 16, 16]


def test_a_sampler_call_holds_batch_size_images_whatever_k():
  assert [inference.examples_per_call(16, k) for k in (1, 2, 3, 8, 16, 40)
          ] == [16, 8, 5, 2, 1, 1]


def test_sampling_refuses_a_conditional_model(tmp_path):
  with pytest.raises(ValueError, match="conditioning='none'"):
    inpaint_command.sample_files(helpers.tiny_config(), str(tmp_path), str(tmp_path),
                         2)


def test_the_uncertainty_map_keeps_its_level_up_to_the_hole_s_edge():
  """A constant std c in the model's hole is c at every pixel of the
  photo's hole, edges included: the resize averages only hole pixels (a
  plain bilinear resize blends in the zeros outside it)."""
  hole = np.zeros((128, 128, 1), np.float32)
  hole[32:96, 32:96] = 1
  model_hole = photos_lib.hole_at_size(hole, 16)
  std = np.where(model_hole > 0.5, 0.25, 0.0).astype(np.float32)
  big = photos_lib.uncertainty_at_photo(std, model_hole, hole)
  inside = hole[..., 0] > 0.5
  np.testing.assert_allclose(big[..., 0][inside], 0.25, rtol=1e-6)
  np.testing.assert_array_equal(big[..., 0][~inside], 0)
