"""The command line: bad input ends in one line and a non-zero exit."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from command_helpers import last_line, run_main, write_photos
from ffc_ddpm import lock

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra,needle", [
    (["--mode=fly"], "--mode=fly: expected one of train, eval, inpaint, sample"),
    (["--config.trian.num_steps=1"], "trian"),
    (["--config.train.num_stpes=1"], "config.train.num_stpes: no such field; "
     "did you mean config.train.num_steps?"),
    (["--config.data.source=folder", "--config.data.path=README.md"],
     "config.data.path='README.md' is a file; data.source='folder' reads a "
     "directory"),
    (["--config.train.num_steps=abc"], "config.train.num_steps"),
    (["--config.train.batch_size=0"], "config.train.batch_size=0"),
    (["--config.eval.masks=('center','oval')"],
     "config.eval.masks: unknown mask 'oval'"),
    (["--config.data.train_masks=center,oval"],
     "config.data.train_masks: unknown mask 'oval'"),
    (["--config.data.source=folder", "--config.data.path=/nonexistent/faces"],
     "config.data.path='/nonexistent/faces'"),
    (["--config.data.source=folder"], "config.data.path='': expected the "
     "location of the 'folder' data (e.g. --config.data.path=DIR)"),
    (["--config.data.source=folder", "--mode=eval"],
     "config.data.path='': expected the location"),
    (["--mode=inpaint"], "--mode=inpaint needs --image"),
])
def test_bad_input_gives_one_line(tmp_path, extra, needle):
  result = run_main("--config=configs/test.py", f"--workdir={tmp_path}", *extra)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and needle in last, result.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_missing_config_file(tmp_path):
  result = run_main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "nope.py" in result.stderr.strip().splitlines()[-1]


def test_config_found_from_another_directory(tmp_path):
  """Variants import `configs.default`, wherever the program is started."""
  result = run_main(f"--config={ROOT / 'configs' / 'test.py'}",
                    "--config.train.batch_size=0", f"--workdir={tmp_path}",
                    cwd=tmp_path)
  assert "config.train.batch_size=0" in result.stderr.strip().splitlines()[-1]


def test_a_held_workdir_is_refused_before_anything_is_written(tmp_path):
  with lock.hold_workdir(str(tmp_path)):
    result = run_main("--config=configs/test.py", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert last_line(result) == (
      f"error: --workdir={tmp_path} is in use by another run (pid "
      f"{os.getpid()} on host {os.uname().nodename}); wait for it to finish "
      "or use another workdir")
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_eval_without_a_checkpoint_creates_nothing(tmp_path):
  workdir = tmp_path / "never_trained"
  result = run_main("--config=configs/test.py", "--mode=eval",
                    f"--workdir={workdir}")
  assert result.returncode == 2
  assert last_line(result).startswith(f"error: no checkpoint in {workdir}")
  assert not workdir.exists()


# --------------------------------------------------------------- inpaint
@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """A workdir with random weights for configs/test.py."""
  return helpers.random_checkpoint(helpers.tiny_config(),
                                   tmp_path_factory.mktemp("model"))


def test_output_equal_to_image_leaves_the_photo_unchanged(model, tmp_path):
  photo, = write_photos(tmp_path, 1)
  before = photo.read_bytes()
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={model}", f"--image={photo}",
                    f"--output={photo}")
  assert result.returncode == 2
  assert last_line(result) == (
      f"error: --output: writing {photo} would overwrite the input {photo}; "
      "choose another --output")
  assert photo.read_bytes() == before


def test_an_output_folder_may_not_overwrite_the_inputs(model, tmp_path):
  photos = write_photos(tmp_path / "in", 2)
  before = [p.read_bytes() for p in photos]
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={model}", f"--image={tmp_path / 'in'}",
                    f"--output={tmp_path / 'in'}")
  assert result.returncode == 2
  assert "would overwrite the input" in last_line(result)
  assert [p.read_bytes() for p in photos] == before


def test_every_mask_is_checked_before_the_model_loads(model, tmp_path):
  photos = write_photos(tmp_path / "in", 6)
  (tmp_path / "masks").mkdir()
  for i, photo in enumerate(photos):
    hole = np.zeros((20, 24), np.uint8)
    hole[5:12, 6:14] = 255
    if i == 5:
      hole[:] = 128  # grey: neither keep nor hole
    Image.fromarray(hole).save(tmp_path / "masks" / photo.name)
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={model}", f"--image={tmp_path / 'in'}",
                    f"--mask={tmp_path / 'masks'}",
                    f"--output={tmp_path / 'out'}")
  assert result.returncode == 2
  assert last_line(result).startswith(
      f"error: {tmp_path / 'masks' / 'face_5.png'}: a mask must be black")
  assert not (tmp_path / "out").exists()


def test_a_text_file_named_png_is_not_an_image(model, tmp_path):
  fake = tmp_path / "notes.png"
  fake.write_text("shopping list")
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={model}", f"--image={fake}",
                    f"--output={tmp_path / 'out.png'}")
  assert result.returncode == 2
  assert last_line(result) == (f"error: {fake}: not an image (Pillow knows "
                                "no format of its contents)")


def test_the_error_line_comes_after_an_open_progress_bar():
  # In a fresh process: ffc_ddpm.main defines absl flags that other tools'
  # flags would clash with in this test process.
  script = ("import tqdm; from ffc_ddpm import main; "
            "bar = tqdm.tqdm(total=4, desc='inpainting', unit='image'); "
            "bar.update(1); main._fail('the sixth mask is grey')")
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2
  lines = result.stderr.splitlines()
  assert lines[-1] == "error: the sixth mask is grey"
  assert "inpainting" in lines[-2] and "1/4" in lines[-2]


def test_inpainting_falls_back_from_a_damaged_checkpoint(tmp_path):
  config = helpers.tiny_config()
  for step in (0, 1):
    helpers.random_checkpoint(config, tmp_path / "run", seed=step, step=step)
  params = tmp_path / "run" / "checkpoints" / "1" / "params"
  largest = max((p for p in params.rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  photo, = write_photos(tmp_path, 1)
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={tmp_path / 'run'}", f"--image={photo}",
                    f"--output={tmp_path / 'filled.png'}")
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [line for line in result.stderr.splitlines()
              if "unreadable" in line]
  assert len(warnings) == 1 and "checkpoint 1 in " in warnings[0]
  assert warnings[0].endswith("; using step 0")
  assert "Loaded params of step 0" in result.stderr
  assert (tmp_path / "filled.png").exists()
  assert warnings[0].count("left in place (reading only)") == 1
  assert (tmp_path / "run" / "checkpoints" / "1").is_dir()  # not moved
  assert not (tmp_path / "run" / "checkpoints" / "damaged").exists()


def test_a_first_evaluation_holds_its_folder(tmp_path):
  """A workdir never evaluated has no eval/ folder yet: the evaluation
  makes it and holds it, so a second one started meanwhile is refused."""
  workdir = str(tmp_path)
  helpers.random_checkpoint(helpers.tiny_config(), workdir)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # Long enough (56 sampler calls of 100 steps) to outlast the second's
  # start; stopped once the second has been refused.
  first = subprocess.Popen(
      [sys.executable, "-m", "ffc_ddpm.main", "--config=configs/test.py",
       "--mode=eval", f"--workdir={workdir}", "--config.eval.batch_size=1",
       "--config.eval.num_steps=100", "--config.eval.masks=('center', "
       "'random', 'thick', 'thin', 'large', 'medium', 'box')"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    held = tmp_path / "eval" / lock.LOCK_NAME
    for _ in range(600):
      if held.exists() or first.poll() is not None:
        break
      time.sleep(0.1)
    assert held.exists(), "the first evaluation did not hold eval/"
    second = run_main("--config=configs/test.py", "--mode=eval",
                      f"--workdir={workdir}")
    assert first.poll() is None, "the first evaluation ended too soon"
    assert second.returncode == 2
    assert "is in use by another run" in last_line(second)
  finally:
    first.kill()
    first.wait()


def test_eval_runs_while_training_holds_the_workdir(tmp_path):
  # Scoring a model while it trains is common; only a second evaluation of
  # the same workdir is refused.
  workdir = str(tmp_path)
  helpers.random_checkpoint(helpers.tiny_config(), workdir)
  with lock.hold_workdir(workdir):
    result = run_main("--config=configs/test.py", "--mode=eval",
                      f"--workdir={workdir}", "--config.eval.num_images=2",
                      "--config.eval.batch_size=2",
                      "--config.eval.masks=('center',)")
  assert result.returncode == 0, result.stderr[-2000:]
  with lock.hold_workdir(os.path.join(workdir, "eval")):
    result = run_main("--config=configs/test.py", "--mode=eval",
                      f"--workdir={workdir}")
  assert result.returncode == 2
  assert "is in use by another run" in last_line(result)
