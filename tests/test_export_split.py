"""tools/export_split.py: a split's faces as PNG files are the faces the
evaluation scores, in its order."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from ffc_ddpm import configuration
from ffc_ddpm.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import export_split as tool  # pylint: disable=g-import-not-at-top,wrong-import-position


def evaluated_faces(config, split, count):
  """uint8 faces of the evaluation's own batches."""
  batch = next(pipeline.eval_batches(config, split, "center", count, count))
  assert batch["valid"].all()
  return np.round((batch["image"] + 1) * 127.5).astype(np.uint8)


def test_synthetic_test_split_is_the_evaluated_faces(tmp_path):
  config = configuration.load_config(str(ROOT / "configs" / "test.py"))
  paths = tool.export_split(config, "test", 3, str(tmp_path))
  assert [pathlib.Path(p).name for p in paths] == [
      "test_00000.png", "test_00001.png", "test_00002.png"]
  written = np.stack([np.asarray(Image.open(p)) for p in paths])
  np.testing.assert_array_equal(written, evaluated_faces(config, "test", 3))


def test_a_folders_held_out_faces_at_a_larger_size(tmp_path):
  """Files of a folder source, exported at 24 where the model sees 16:
  the same faces (the split is by file), only larger."""
  rng = np.random.default_rng(0)
  faces = tmp_path / "faces"
  faces.mkdir()
  for i in range(12):
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).save(
        faces / f"face_{i:02d}.png")
  config = configuration.load_config(str(ROOT / "configs" / "test.py"))
  config.data.source, config.data.path = "folder", str(faces)
  config.data.num_val, config.data.num_test = 2, 3
  config.data.image_size = 24  # the files' own size: stored pixels
  paths = tool.export_split(config, "validation", 10, str(tmp_path / "out"))
  assert len(paths) == 2  # all of the split, which is smaller
  written = np.stack([np.asarray(Image.open(p)) for p in paths])
  np.testing.assert_array_equal(written,
                                evaluated_faces(config, "validation", 2))
  originals = {f.name: np.asarray(Image.open(f))
               for f in faces.glob("face_*.png")}
  for face in written:  # byte-exact copies of two of the files
    assert any(np.array_equal(face, o) for o in originals.values())


def test_exporting_into_the_data_folder_is_refused(tmp_path):
  """The files would join the folder source and change its split."""
  for i in range(6):
    Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(
        tmp_path / f"face_{i}.png")
  config = configuration.load_config(str(ROOT / "configs" / "test.py"))
  config.data.source, config.data.path = "folder", str(tmp_path)
  config.data.num_val, config.data.num_test = 1, 1
  with pytest.raises(ValueError, match="inside config.data.path"):
    tool.export_split(config, "test", 1, str(tmp_path / "test_faces"))
  assert not (tmp_path / "test_faces").exists()


def run_tool(*flags):
  """The command on configs/test.py with `flags`."""
  return subprocess.run(
      [sys.executable, str(ROOT / "tools" / "export_split.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", *flags],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


def test_a_mistyped_override_is_one_line():
  result = run_tool("--output=unused", "--config.data.image_sise=32")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.data.image_sise: no such field; did you mean "
      "config.data.image_size?")


def test_the_command_writes_the_files(tmp_path):
  result = run_tool(f"--output={tmp_path}", "--split=validation",
                    "--num_images=2")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f"Wrote 2 validation images to {tmp_path}"
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "validation_00000.png", "validation_00001.png"]


def test_a_bad_flag_value_is_one_line():
  result = run_tool("--output=unused", "--num_images=many")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: flags: ") and "num_images" in last
