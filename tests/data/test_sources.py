"""Data sources: folders, synthetic faces, TFDS celeb_a_hq, packed files."""

import io
import pickle
import subprocess
import sys
import tarfile

import cv2
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm.data import images
from ffc_ddpm.data import records
from ffc_ddpm.data import sources
from ffc_ddpm.data import synthetic


@pytest.fixture(name="data_config", scope="module")
def _data_config_fixture(default_config):
  """data_config(**overrides): config.data of the default config, updated."""

  def make(**overrides):
    config = default_config().data
    config.update(overrides)
    return config

  return make


def _split_names(config) -> dict[str, list[str]]:
  named = {}
  for split in sources.SPLITS:
    source = sources.create_source(config, split)
    named[split] = [source.name(i) for i in range(len(source))]
  return named


def _write_faces(folder, count: int, size: int = 16) -> list[np.ndarray]:
  """count PNGs named face_00.png.. with distinct synthetic faces."""
  folder.mkdir(parents=True, exist_ok=True)
  faces = [synthetic.render_face(9, i, size) for i in range(count)]
  for i, face in enumerate(faces):
    Image.fromarray(face).save(folder / f"face_{i:02d}.png")
  return faces


# ---------------------------------------------------------------- folder


def test_folder_reads_celebahq_256(shared_dir, data_config):
  folder = shared_dir / "data" / "celebahq_256"
  config = data_config(source="folder", path=str(folder), image_size=256,
                        num_val=2, num_test=10)
  test = sources.create_source(config, "test")
  assert len(test) == 10
  record = test[3]
  assert record["index"] == 3 and record["image"].dtype == np.uint8
  expected = np.asarray(Image.open(test.name(3)).convert("RGB"))
  np.testing.assert_array_equal(record["image"], expected)


def test_folder_reads_celeba_crops_and_resizes(shared_dir, data_config):
  folder = shared_dir / "data" / "celeba_crops_128"
  config = data_config(source="folder", path=str(folder), image_size=64,
                        num_val=18, num_test=2000)
  train = sources.create_source(config, "train")
  assert len(train) == 22711 - 2018
  image = train[0]["image"]
  assert image.shape == (64, 64, 3)
  original = np.asarray(Image.open(train.name(0)).convert("RGB"))
  area = cv2.resize(original, (64, 64), interpolation=cv2.INTER_AREA)
  assert np.abs(image.astype(float) - area).mean() < 3


def test_folder_splits_are_seeded_disjoint_and_complete(shared_dir,
                                                       data_config):
  folder = str(shared_dir / "data" / "celebahq_256")
  config = data_config(source="folder", path=folder, num_val=5, num_test=20)
  named = _split_names(config)
  assert [len(named[s]) for s in sources.SPLITS] == [75, 5, 20]
  every = sum(named.values(), [])
  assert sorted(every) == images.find_images(folder)
  assert named == _split_names(config)  # the same every time
  config.split_seed = 1
  assert set(_split_names(config)["test"]) != set(named["test"])


def test_ordered_split_holds_out_the_last_names(tmp_path, data_config):
  _write_faces(tmp_path, 10)
  config = data_config(source="folder", path=str(tmp_path), split_seed=-1,
                        num_val=2, num_test=3, image_size=16)
  named = _split_names(config)
  base = [f"face_{i:02d}.png" for i in range(10)]
  assert [n.rsplit("/", 1)[1] for n in named["test"]] == base[7:]
  assert [n.rsplit("/", 1)[1] for n in named["validation"]] == base[5:7]


def test_source_errors_are_one_line(tmp_path, data_config):
  with pytest.raises(ValueError, match="config.data.source='lmdb'"):
    sources.create_source(data_config(source="lmdb"), "train")
  with pytest.raises(ValueError, match="config.data.path is empty"):
    sources.create_source(data_config(source="folder", path=""), "train")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.create_source(
        data_config(source="folder", path=str(tmp_path / "x")), "train")
  with pytest.raises(FileNotFoundError, match="no images"):
    sources.create_source(data_config(source="folder", path=str(tmp_path)),
                          "train")
  _write_faces(tmp_path, 4)
  with pytest.raises(ValueError, match="too few images: 4 found"):
    sources.create_source(
        data_config(source="folder", path=str(tmp_path)), "test")
  with pytest.raises(ValueError, match="split 'val'"):
    sources.create_source(data_config(), "val")


def test_bad_file_raises_naming_it(tmp_path, data_config):
  _write_faces(tmp_path, 3)
  (tmp_path / "face_01.png").write_bytes(b"\x89PNG broken")
  config = data_config(source="folder", path=str(tmp_path), num_val=0,
                        num_test=0, image_size=16)
  source = sources.create_source(config, "train")
  with pytest.raises(images.BadImageError, match="face_01.png"):
    source[1]


def test_oversized_file_in_a_folder_is_refused_naming_it(tmp_path,
                                                         data_config):
  _write_faces(tmp_path, 3)
  side = images.MIN_MAX_SIDE * 2
  Image.new("RGB", (side, side)).save(tmp_path / "face_02.png")
  config = data_config(source="folder", path=str(tmp_path), num_val=0,
                        num_test=0, image_size=16)
  source = sources.create_source(config, "train")
  with pytest.raises(images.BadImageError,
                     match=f"face_02.png: declares {side}x{side} pixels"):
    source[2]


# ------------------------------------------------------------- synthetic


def test_synthetic_splits_are_disjoint_index_ranges(data_config):
  config = data_config(image_size=32, num_train=100, num_val=3, num_test=5,
                        split_seed=4)
  named = _split_names(config)
  assert [len(named[s]) for s in sources.SPLITS] == [100, 3, 5]
  assert len(set(sum(named.values(), []))) == 108
  test = sources.create_source(config, "test")
  np.testing.assert_array_equal(test[2]["image"],
                                synthetic.render_face(4, 105, 32))
  restored = pickle.loads(pickle.dumps(test))
  np.testing.assert_array_equal(restored[2]["image"], test[2]["image"])


# ------------------------------------------------------------------ tfds


@pytest.fixture(scope="module")
def celeb_a_hq_32(tmp_path_factory, data_config):
  """A fake manual-download folder: data32x32.tar of 8 PNGs, out of order."""
  manual = tmp_path_factory.mktemp("manual")
  faces = {}
  with tarfile.open(manual / "data32x32.tar", "w") as tar:
    for i in (5, 2, 7, 0, 3, 6, 1, 4):
      face = synthetic.render_face(1, i, 32)
      buffer = io.BytesIO()
      Image.fromarray(face).save(buffer, format="PNG")
      info = tarfile.TarInfo(f"data32x32/img{i:05d}.png")
      info.size = len(buffer.getvalue())
      tar.addfile(info, io.BytesIO(buffer.getvalue()))
      faces[i] = face
  config = data_config(source="tfds", path=str(manual), image_size=32,
                        tfds_data_dir=str(tmp_path_factory.mktemp("tfds")),
                        num_val=1, num_test=3)
  return config, faces


def test_tfds_split_is_sorted_names_tail(celeb_a_hq_32):
  config, faces = celeb_a_hq_32
  named = _split_names(config)
  assert named["test"] == [f"data32x32/img{i:05d}.png" for i in (5, 6, 7)]
  assert named["validation"] == ["data32x32/img00004.png"]
  assert len(named["train"]) == 4
  test = sources.create_source(config, "test")
  for position, face_index in enumerate((5, 6, 7)):
    np.testing.assert_array_equal(test[position]["image"], faces[face_index])
  restored = pickle.loads(pickle.dumps(test))  # grain workers get a copy
  np.testing.assert_array_equal(restored[0]["image"], faces[5])


def test_tfds_errors(tmp_path, data_config):
  config = data_config(source="tfds", path="", image_size=32,
                        tfds_data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="config.data.path is empty"):
    sources.create_source(config, "train")
  config.path = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="data32x32.tar"):
    sources.create_source(config, "train")
  config.image_size = 48
  with pytest.raises(ValueError, match="image_size=48"):
    sources.create_source(config, "train")


# ------------------------------------------------------------ arrayrecord


def test_packed_folder_matches_the_folder(tmp_path, data_config):
  faces = _write_faces(tmp_path / "faces", 12, size=24)
  packed = str(tmp_path / "faces.array_record")
  count = records.pack_folder(str(tmp_path / "faces"), packed, 16,
                              fmt="png", workers=1)
  assert count == 12
  folder_config = data_config(source="folder", path=str(tmp_path / "faces"),
                              image_size=16, num_val=2, num_test=3)
  packed_config = data_config(source="arrayrecord", path=packed,
                              image_size=16, num_val=2, num_test=3)
  for split in sources.SPLITS:
    a = sources.create_source(folder_config, split)
    b = sources.create_source(packed_config, split)
    assert [a.name(i).rsplit("/", 1)[1] for i in range(len(a))] == [
        b.name(i) for i in range(len(b))]
    for i in range(len(a)):
      np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
  train = sources.create_source(packed_config, "train")
  face = faces[int(train.name(0)[len("face_"):-len(".png")])]
  expected = np.asarray(Image.fromarray(face).resize(
      (16, 16), Image.Resampling.BICUBIC))
  restored = pickle.loads(pickle.dumps(train))  # grain workers get a copy
  np.testing.assert_array_equal(restored[0]["image"], expected)


def test_64px_celeba_crops_pack_under_64_mib(shared_dir, tmp_path,
                                             data_config):
  """Default JPEG packing: 500 crops, extrapolated to all 22,711."""
  folder = shared_dir / "data" / "celeba_crops_128"
  packed = tmp_path / "c.array_record"
  records.pack_folder(str(folder), str(packed), 64, limit=500, workers=2)
  assert packed.stat().st_size / 500 * 22711 < 60 * 2**20
  config = data_config(source="arrayrecord", path=str(packed),
                        image_size=64, num_val=0, num_test=0)
  source = sources.create_source(config, "train")
  reference = images.resize_image(images.load_image(str(folder / "00007.jpg")),
                                  64, "center_crop")
  assert np.abs(source[7]["image"].astype(float) - reference).mean() < 3


def test_packing_stops_or_skips_on_bad_files(tmp_path):
  _write_faces(tmp_path / "f", 4)
  (tmp_path / "f" / "face_02.png").write_bytes(b"garbage")
  out = str(tmp_path / "f.array_record")
  with pytest.raises(images.BadImageError, match="face_02.png"):
    records.pack_folder(str(tmp_path / "f"), out, 16, workers=1)
  assert records.pack_folder(str(tmp_path / "f"), out, 16,
                             skip_bad_files=True, workers=1) == 3


def test_prepare_dataset_command_line(tmp_path, data_config, repo_root):
  _write_faces(tmp_path / "f", 5)
  out = tmp_path / "f.array_record"
  subprocess.run([sys.executable, str(repo_root / "tools" /
                                      "prepare_dataset.py"),
                  f"--input={tmp_path / 'f'}", f"--output={out}", "--size=8",
                  "--format=raw", "--limit=4", "--workers=1"], check=True,
                 capture_output=True)
  config = data_config(source="arrayrecord", path=str(out), image_size=8,
                       num_val=0, num_test=0)
  source = sources.create_source(config, "train")
  assert len(source) == 4 and source[3]["image"].shape == (8, 8, 3)


def test_record_format_round_trip_and_errors():
  image = synthetic.render_face(0, 0, 16)
  for fmt in ("raw", "png"):
    name, decoded = records.decode_record(
        records.encode_record(image, "a/b.png", fmt), "r0")
    assert name == "a/b.png"
    np.testing.assert_array_equal(decoded, image)
  with pytest.raises(images.BadImageError, match="r1: not an ffc_ddpm"):
    records.decode_record(b"hello", "r1")
  with pytest.raises(ValueError, match="not a readable ArrayRecord"):
    sources.open_array_record(__file__)
