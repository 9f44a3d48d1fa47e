"""Mask protocols: areas, determinism, LaMa shapes, mask files."""

import hashlib
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm.data import images
from ffc_ddpm.data import masks


def _check_mask(mask: np.ndarray, size: int) -> None:
  assert mask.shape == (size, size, 1)
  assert mask.dtype == np.float32
  assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("size", [256, 64, 32])
def test_center_is_exactly_a_quarter_and_centred(size):
  mask = masks.eval_mask("center", size, 0, 0)
  _check_mask(mask, size)
  assert mask.sum() == size * size / 4
  np.testing.assert_array_equal(mask, mask[::-1, ::-1])  # centred
  q = size // 4
  assert mask[q:size - q, q:size - q].all()  # 128x128 at 256: [64, 192)


def test_center_at_sizes_that_do_not_divide():
  """S = 2 mod 4: still exactly 25%; odd S: side S // 2."""
  assert masks.eval_mask("center", 34, 0, 0).sum() == 17 * 17
  assert masks.eval_mask("center", 33, 0, 0).sum() == 16 * 16


def test_random_always_between_20_and_30_percent():
  rng = np.random.default_rng(0)
  draws = [masks.sample_mask("random", 256, rng) for _ in range(1000)]
  areas = np.array([d.mean() for d in draws])
  assert areas.min() >= 0.20 and areas.max() <= 0.30
  assert areas.std() > 0.02  # spread over the range, not stuck at one end
  digests = {hashlib.sha1(d.tobytes()).hexdigest() for d in draws}
  assert len(digests) == 1000
  _check_mask(draws[0], 256)


@pytest.mark.parametrize("size", [64, 32])
def test_random_and_large_areas_at_small_sizes(size):
  rng = np.random.default_rng(1)
  random = [masks.sample_mask("random", size, rng).mean() for _ in range(200)]
  large = [masks.sample_mask("large", size, rng).mean() for _ in range(200)]
  assert 0.20 <= min(random) and max(random) <= 0.30
  assert 0.40 <= min(large) and max(large) <= 0.60


def _surviving_erosion(mask: np.ndarray, radius: int) -> float:
  """Share of the hole left after eroding with a disk (thick parts only)."""
  disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                   (2 * radius + 1, 2 * radius + 1))
  hole = mask[..., 0].astype(np.uint8)
  return cv2.erode(hole, disk).sum() / max(hole.sum(), 1)


def test_lama_protocols_have_their_published_shapes():
  """thin strokes are at most 14 px wide at 256; thick ones reach 104 px.

  Eroding by a 17 px disk leaves only where thin strokes pile up, but most
  of the medium and thick holes.
  """
  survived = {}
  for name in ("thin", "medium", "thick"):
    drawn = [masks.eval_mask(name, 256, 0, i) for i in range(40)]
    for m in drawn:
      _check_mask(m, 256)
      assert 0 < m.mean() <= 0.5  # LaMa redraws masks over half the image
    survived[name] = np.mean([_surviving_erosion(m, 8) for m in drawn])
  assert survived["thin"] < 0.1
  assert survived["medium"] > 0.3 and survived["thick"] > 0.5


def test_box_masks_are_rectangles_inside_the_margin():
  """LaMa boxes: sides 30-150 px, 10 px from the border, 1-4 of them."""
  square = np.ones((29, 29), np.uint8)
  for i in range(30):
    hole = masks.eval_mask("box", 256, 0, i)[..., 0].astype(np.uint8)
    assert hole[:10].sum() == hole[-10:].sum() == 0
    assert hole[:, :10].sum() == hole[:, -10:].sum() == 0
    assert 30 * 30 <= hole.sum() <= 4 * 150 * 150
    # A union of boxes of side >= 30 survives opening by a 29 px square.
    opened = cv2.morphologyEx(hole, cv2.MORPH_OPEN, square)
    np.testing.assert_array_equal(opened, hole)


def test_mixed_uses_its_mixture():
  rng = np.random.default_rng(3)
  centre = masks.eval_mask("center", 64, 0, 0)
  draws = [masks.sample_mask("mixed", 64, rng) for _ in range(400)]
  share = np.mean([np.array_equal(d, centre) for d in draws])
  assert abs(share - masks.MIXTURE["center"]) < 0.06


def test_eval_masks_are_pure_functions():
  a = masks.eval_mask("random", 64, 5, 17)
  np.testing.assert_array_equal(a, masks.eval_mask("random", 64, 5, 17))
  assert not np.array_equal(a, masks.eval_mask("random", 64, 5, 18))
  assert not np.array_equal(a, masks.eval_mask("random", 64, 6, 17))


def test_eval_masks_match_across_processes():
  code = ("import hashlib; from ffc_ddpm.data import masks; "
          "print(hashlib.sha256(masks.eval_mask('thick', 64, 3, 7)"
          ".tobytes()).hexdigest())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout.strip()
  here = hashlib.sha256(masks.eval_mask("thick", 64, 3, 7).tobytes())
  assert out == here.hexdigest()


def test_folder_masks_load(shared_dir):
  folder = shared_dir / "data" / "masks" / "thick"
  name = f"folder:{folder}"
  masks.validate_mask_name(name)
  files = images.find_images(str(folder))
  for index in (0, 1, len(files) + 1):
    mask = masks.eval_mask(name, 256, 0, index)
    _check_mask(mask, 256)
    reference = np.asarray(Image.open(files[index % len(files)]).convert("L"))
    np.testing.assert_array_equal(mask[..., 0], reference > 127)
  small = masks.sample_mask(name, 64, np.random.default_rng(0))
  _check_mask(small, 64)


def test_load_mask_resizes_by_nearest_neighbour(tmp_path, caplog):
  hole = np.zeros((40, 40), np.uint8)
  hole[10:30, 20:40] = 255
  Image.fromarray(hole).save(tmp_path / "m.png")
  with caplog.at_level(logging.INFO):
    mask = masks.load_mask(str(tmp_path / "m.png"), 20)
  assert "m.png: mask is 40x40; resized to 20x20" in caplog.text
  _check_mask(mask, 20)
  expected = np.zeros((20, 20), np.float32)
  expected[5:15, 10:20] = 1
  np.testing.assert_array_equal(mask[..., 0], expected)
  native = masks.load_mask(str(tmp_path / "m.png"))  # no size: as stored
  np.testing.assert_array_equal(native[..., 0], hole / 255)


def test_load_mask_accepts_zero_one_and_jpeg_noise(tmp_path, caplog):
  hole = np.zeros((32, 32), np.uint8)
  hole[8:24, 8:24] = 1
  Image.fromarray(hole).save(tmp_path / "01.png")
  np.testing.assert_array_equal(
      masks.load_mask(str(tmp_path / "01.png"), 32)[..., 0], hole)
  noisy = hole * 250 + 3
  Image.fromarray(noisy).save(tmp_path / "noisy.png")
  with caplog.at_level(logging.WARNING):
    loaded = masks.load_mask(str(tmp_path / "noisy.png"), 32)
  np.testing.assert_array_equal(loaded[..., 0], hole)
  assert "noisy.png" in caplog.text


def test_bad_masks_are_named(tmp_path):
  grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
  Image.fromarray(grey).save(tmp_path / "photo.png")
  with pytest.raises(images.BadImageError, match="photo.png.*grey"):
    masks.load_mask(str(tmp_path / "photo.png"), 64)
  with pytest.raises(ValueError, match="unknown mask 'centre'"):
    masks.validate_mask_name("centre")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    masks.validate_mask_name(f"folder:{tmp_path / 'nowhere'}")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    masks.sample_mask(f"folder:{tmp_path / 'empty'}", 64,
                      np.random.default_rng(0))


def _save_16_bit(path, values: np.ndarray) -> str:
  Image.fromarray(values.astype(np.uint16)).save(path)
  assert Image.open(path).mode.startswith("I;16")
  return str(path)


def test_sixteen_bit_masks_follow_the_eight_bit_rule(tmp_path, caplog):
  """White is 65535 in a 16-bit file: 0/65535 and 0/1 files are holes as
  in 8-bit files, near-black noise is not a hole, and mid-grey is refused
  in both."""
  square = np.zeros((16, 16), np.int64)
  square[4:12, 4:12] = 1
  for top in (65535, 1):
    path = _save_16_bit(tmp_path / f"m{top}.png", square * top)
    np.testing.assert_array_equal(masks.load_mask(path)[..., 0], square)
  dark = _save_16_bit(tmp_path / "dark.png", square * 255)  # 0.4% grey
  with caplog.at_level(logging.WARNING):
    np.testing.assert_array_equal(masks.load_mask(dark)[..., 0], 0)
  assert "dark.png" in caplog.text
  grey16 = _save_16_bit(tmp_path / "grey16.png", square * 32768)
  Image.fromarray((square * 128).astype(np.uint8)).save(tmp_path / "g8.png")
  for path in (grey16, str(tmp_path / "g8.png")):
    with pytest.raises(images.BadImageError, match="pixels are grey"):
      masks.load_mask(path)


def test_mask_cache_is_bounded_by_bytes(tmp_path, monkeypatch):
  """Masks at a model's size are cached up to CACHE_BYTES; masks at a
  photo's own size (inpainting) are never kept."""
  monkeypatch.setattr(masks, "_cache", type(masks._cache)())
  monkeypatch.setattr(masks, "_cached_bytes", [0])
  monkeypatch.setattr(masks, "CACHE_BYTES", 5 * 32 * 32)
  hole = np.zeros((48, 48), np.uint8)
  hole[8:40, 8:40] = 255
  paths = []
  for i in range(8):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(hole).save(paths[-1])
    masks.load_mask(paths[-1])  # full size: not cached
  assert not masks._cache
  for path in paths:
    masks.load_mask(path, 32)
  assert list(masks._cache) == [(p, 32) for p in paths[3:]]  # newest five
  assert sum(h.nbytes for h in masks._cache.values()) == 5 * 32 * 32
  assert masks._cached_bytes == [5 * 32 * 32]
