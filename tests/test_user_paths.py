"""What a user meets on the command line: settings a mode does not use,
refused runs that change nothing, output folders held and checked before
any compute, Ctrl-C, and a quiet first screen."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from PIL import Image
import pytest

import inference_helpers as helpers
from command_helpers import hold_elsewhere, last_line, run_main
from command_helpers import write_photos
from ffc_ddpm import configuration, evaluate, inpaint, inpaint_command, lock

ROOT = pathlib.Path(__file__).resolve().parents[1]


def checksums(folder: pathlib.Path) -> dict[str, str]:
  """sha256 of every file under `folder`, by relative path."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """A workdir with random weights for configs/test.py."""
  return helpers.random_checkpoint(helpers.tiny_config(),
                                   tmp_path_factory.mktemp("model"))


# ------------------------------------------- settings the mode never reads
def test_inpainting_ignores_evaluation_masks_that_do_not_exist(model,
                                                              tmp_path):
  """configs/celeba64.py names folder:../shared/... masks for evaluation;
  a user without that folder still inpaints. The count of written files
  names results and uncertainty maps apart."""
  photo, = write_photos(tmp_path, 1)
  result = run_main(
      "--config=configs/test.py", "--mode=inpaint", f"--workdir={model}",
      "--config.eval.masks=('folder:no/such/masks',)",
      "--config.data.train_masks=folder:no/such/masks", f"--image={photo}",
      f"--output={tmp_path / 'out.png'}", "--num_samples=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.name for p in tmp_path.glob("out*")) == [
      "out_0.png", "out_1.png", "out_mask.png", "out_uncertainty.png"]
  assert "Wrote 2 inpainted image(s) and 1 uncertainty map(s)" in (
      result.stderr)


def test_evaluation_still_checks_its_masks(model, tmp_path):
  result = run_main("--config=configs/test.py", "--mode=eval",
                    f"--workdir={model}",
                    "--config.eval.masks=('folder:no/such/masks',)")
  assert result.returncode == 2
  assert last_line(result).startswith(
      "error: config.eval.masks: mask folder:no/such/masks")


def test_an_image_size_the_unet_cannot_halve_is_named(tmp_path):
  workdir = tmp_path / "run"
  result = run_main("--config=configs/test.py", f"--workdir={workdir}",
                    "--config.data.image_size=33")
  assert result.returncode == 2
  assert last_line(result) == (
      "error: model.image_size=33 (data.image_size): expected a multiple of "
      "2, since the U-Net halves it 1 times (model.channel_mult has 2 "
      "levels)")
  assert not workdir.exists()


def test_missing_init_weights_are_named_before_any_compute(tmp_path):
  workdir = tmp_path / "run"
  missing = tmp_path / "celeba64.npz"
  result = run_main("--config=configs/test.py", f"--workdir={workdir}",
                    f"--config.train.init_weights={missing}")
  assert result.returncode == 2
  assert last_line(result) == (
      f"error: config.train.init_weights={missing}: no such file")
  assert not workdir.exists()


# ------------------------------------------------- a refused run changes nothing
def test_a_refused_resume_leaves_the_workdir_byte_identical(tmp_path_factory,
                                                            tmp_path):
  trained = helpers.trained_workdir(tmp_path_factory)
  workdir = tmp_path / "run"
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(trained, workdir)
  before = checksums(workdir)
  assert "config.json" in before
  result = run_main("--config=configs/test.py", f"--workdir={workdir}",
                    "--config.model.model_channels=64",
                    "--config.train.num_steps=6")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert checksums(workdir) == before


def test_evaluation_builds_the_network_the_run_trained(tmp_path):
  """A run trained with --config.model.model_channels=64 is scored without
  repeating the override: the model comes from WORKDIR/config.json."""
  trained = helpers.tiny_config()
  trained.model.model_channels = 64
  helpers.random_checkpoint(trained, tmp_path)
  configuration.save_json(trained, str(tmp_path / "config.json"))
  result = run_main("--config=configs/test.py", "--mode=eval",
                    f"--workdir={tmp_path}", "--config.eval.num_images=2",
                    "--config.eval.batch_size=2",
                    "--config.eval.masks=('center',)")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "model settings taken from the run's config.json: " \
         "model.model_channels: 32 -> 64" in result.stderr
  settings = json.loads((tmp_path / "eval" / "settings.json").read_text())
  assert settings["config"]["model"]["model_channels"] == 64


# ------------------------------------------------------ one writer per output
def test_a_second_writer_of_an_output_folder_is_refused(model, tmp_path):
  photo, = write_photos(tmp_path / "in", 1)
  out = tmp_path / "out"
  with lock.hold_workdir(str(out), flag="--output", what="--output"):
    result = run_main("--config=configs/test.py", "--mode=inpaint",
                      f"--workdir={model}", f"--image={photo}",
                      f"--output={out}")
  assert result.returncode == 2
  assert last_line(result) == (
      f"error: --output={out} is in use by another run (pid {os.getpid()} on "
      f"host {os.uname().nodename}); wait for it to finish or use another "
      "--output")
  assert not out.exists()


# ------------------------------------------- output problems, before compute
@pytest.fixture
def no_model(monkeypatch):
  """Inpainting that fails the test if it ever loads the model."""
  def refuse(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")
  monkeypatch.setattr(inpaint, "Inpainter", refuse)


def _inpaint(model, image, output, **kwargs):
  return inpaint_command.inpaint_files(helpers.tiny_config(), str(model), str(image),
                               "center", str(output), **kwargs)


def test_an_output_folder_that_is_a_file_is_refused(model, tmp_path,
                                                    no_model):
  write_photos(tmp_path / "in", 2)
  existing = tmp_path / "results"
  existing.write_text("not a folder")
  with pytest.raises(ValueError, match="is a file, not a folder"):
    _inpaint(model, tmp_path / "in", existing)
  assert existing.read_text() == "not a folder"


def test_an_output_under_a_file_is_refused(model, tmp_path, no_model):
  photo, = write_photos(tmp_path, 1)
  (tmp_path / "notes").write_text("a file")
  with pytest.raises(ValueError, match=r"notes is a file, so no folder can "
                     "be made under it"):
    _inpaint(model, photo, tmp_path / "notes" / "sub" / "out.png")


def test_an_output_without_permission_is_refused(model, tmp_path, no_model,
                                                 monkeypatch):
  photo, = write_photos(tmp_path, 1)
  locked = tmp_path / "locked"
  locked.mkdir(mode=0o500)
  if os.geteuid() == 0:  # root writes anywhere: ask as a user would be told
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (
        str(path) != str(locked) and real_access(path, mode)))
  with pytest.raises(ValueError, match=f"no permission to write in {locked}"):
    _inpaint(model, photo, locked / "out")
  assert not (locked / "out").exists()


def test_an_existing_result_is_replaced_only_with_overwrite(model, tmp_path,
                                                            no_model):
  photo, = write_photos(tmp_path, 1)
  existing = tmp_path / "filled.png"
  existing.write_bytes(b"an earlier result")
  with pytest.raises(ValueError, match=r"1 result file\(s\) exist already "
                     fr"\({existing}\); pass --overwrite"):
    _inpaint(model, photo, existing)
  assert existing.read_bytes() == b"an earlier result"
  with pytest.raises(AssertionError, match="the model was loaded"):
    _inpaint(model, photo, existing, overwrite=True)  # passes the checks


def test_an_output_that_is_neither_png_nor_folder_is_refused(model, tmp_path,
                                                             no_model):
  photo, = write_photos(tmp_path, 1)
  with pytest.raises(ValueError, match="expected a .png file name or a "
                     "folder"):
    _inpaint(model, photo, tmp_path / "x.txt")
  assert not (tmp_path / "x.txt").exists()


def test_overwrite_flag_replaces_an_existing_result(model, tmp_path):
  photo, = write_photos(tmp_path, 1)
  out = tmp_path / "filled.png"
  out.write_bytes(b"old")
  result = run_main("--config=configs/test.py", "--mode=inpaint",
                    f"--workdir={model}", f"--image={photo}",
                    f"--output={out}", "--overwrite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert Image.open(out).size == (24, 20)


# ------------------------------------------ earlier outputs are not inputs
def test_results_inside_the_image_folder_are_not_inputs(tmp_path):
  write_photos(tmp_path, 2)
  earlier = tmp_path / "filled"
  earlier.mkdir()
  Image.new("RGB", (8, 8)).save(earlier / "face_0.png")
  root, relatives = inpaint_command.list_images(str(tmp_path), str(earlier))
  assert root == tmp_path
  assert [str(r) for r in relatives] == ["face_0.png", "face_1.png"]
  _, everything = inpaint_command.list_images(str(tmp_path))
  assert len(everything) == 3


# ---------------------------------------------------- evaluation's own lock
def test_evaluation_after_training_holds_the_eval_folder(tmp_path):
  """`evaluate` itself (which training calls when eval_after_train) takes
  WORKDIR/eval's lock, so it never writes beside a separate --mode=eval."""
  helpers.random_checkpoint(helpers.tiny_config(), tmp_path)
  holder = hold_elsewhere(tmp_path / "eval")
  try:
    with pytest.raises(lock.WorkdirBusyError, match="is in use by another"):
      evaluate.evaluate(helpers.tiny_config(), str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        lock.LOCK_NAME]
  finally:
    holder.kill()
    holder.wait()


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_ends_in_one_line_naming_what_was_written(model, tmp_path):
  folder = tmp_path / "in"
  write_photos(folder, 300)  # far more than a run fits before the signal
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.Popen(
      [sys.executable, "-m", "ffc_ddpm.main", "--config=configs/test.py",
       "--mode=inpaint", f"--workdir={model}", f"--image={folder}",
       f"--output={out}", "--config.eval.batch_size=1",
       "--config.eval.num_steps=100"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  try:
    for _ in range(1200):
      if (out.is_dir() and any(out.glob("*.png"))) or process.poll() is not None:
        break
      time.sleep(0.1)
    assert process.poll() is None, "the run ended before it was interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 130
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: interrupted (Ctrl-C): ") and (
      f"file(s) were written under {out} before it stopped" in last), last
  written = int(last.split(": ")[-1].split()[0])
  results = [p for p in out.glob("*.png") if not p.stem.endswith("_mask")]
  assert written == len(results) < 300
  assert not list(out.glob("*.partial"))


# ------------------------------------------------------- a quiet first screen
def test_training_prints_progress_not_library_chatter(tmp_path):
  result = run_main("--config=configs/test.py", f"--workdir={tmp_path}",
                    "--config.train.eval_after_train=False")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert not [l for l in lines if "orbax" in l or "checkpoint_manager" in l]
  assert sum("Saving the checkpoint of step" in l for l in lines) == 2
  assert sum("loss=" in l for l in lines) == 2  # log_every=2 of 4 steps
  assert not [l for l in lines if "Config:" in l or "steps_per_sec=" in l]
  assert len(lines) < 25, "\n".join(lines)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["num_steps"] == 4
  again = run_main("--config=configs/test.py", f"--workdir={tmp_path}",
                   "--config.train.eval_after_train=False", "--log_parameters")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Total:" in again.stderr and "Total:" not in result.stderr


def test_the_quiet_log_tells_our_lines_from_the_libraries():
  """Decided by where a record comes from: this package's files (not a
  library that merely lies under a folder named ffc_ddpm, as a clone's
  .venv does), warnings from anywhere, and clu's loss and progress lines."""
  script = """
import logging, os, sys
from ffc_ddpm import main
def record(path, message, level=logging.INFO):
  return logging.LogRecord("absl", level, path, 1, message, None, None)
clone_venv = os.path.join(os.sep, "home", "me", "ffc_ddpm", ".venv", "lib",
                          "site-packages")  # a clone named ffc_ddpm
cases = [
    (main.__file__, "Saving the checkpoint of step 2", True),
    (os.path.join(clone_venv, "orbax", "checkpoint", "manager.py"),
     "Found 0 checkpoint steps", False),
    (os.path.join(clone_venv, "clu", "metric_writers", "logging_writer.py"),
     "[100] loss=0.5", True),
    (os.path.join(clone_venv, "clu", "metric_writers", "logging_writer.py"),
     "[100] steps_per_sec=3.1", False),
]
shown = [main.quiet_log(record(p, m)) for p, m, _ in cases]
warning = main.quiet_log(record(cases[1][0], "disk full", logging.WARNING))
print(shown == [want for _, _, want in cases] and warning)
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.strip() == "True", result.stderr[-2000:]
