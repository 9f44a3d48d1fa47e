"""The command line: bad input ends in one line and a non-zero exit."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", *args], cwd=cwd, env=env,
      capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra,needle", [
    (["--mode=fly"], "--mode=fly: expected one of train, eval, inpaint, sample"),
    (["--config.trian.num_steps=1"], "trian"),
    (["--config.train.num_steps=abc"], "config.train.num_steps"),
    (["--config.train.batch_size=0"], "config.train.batch_size=0"),
    (["--config.eval.masks=('center','oval')"],
     "config.eval.masks: unknown mask 'oval'"),
    (["--config.data.train_masks=center,oval"],
     "config.data.train_masks: unknown mask 'oval'"),
    (["--config.data.source=folder", "--config.data.path=/nonexistent/faces"],
     "config.data.path='/nonexistent/faces'"),
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
