"""Running the command as a user does, for the tests of its behaviour: a
subprocess of `python -m ffc_ddpm.main`, its last line, small photos, and
another process holding a lock."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
_HOLD = ("import sys, time\n"
         "from ffc_ddpm import lock\n"
         "held = lock.hold_workdir(sys.argv[1])\n"
         "held.__enter__()\n"
         "print('held', flush=True)\n"
         "time.sleep(300)\n")


def run_main(*args, cwd=ROOT, timeout=300) -> subprocess.CompletedProcess:
  """`python -m ffc_ddpm.main ARGS` on the CPU, its output captured."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", *args], cwd=cwd, env=env,
      capture_output=True, text=True, timeout=timeout)


def last_line(result) -> str:
  """The last line on stderr, which must come with no traceback."""
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return result.stderr.strip().splitlines()[-1]


def write_photos(folder: pathlib.Path, count: int) -> list[pathlib.Path]:
  """`count` random 24x20 RGB PNGs, face_<i>.png, in `folder`."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  paths = []
  for i in range(count):
    paths.append(folder / f"face_{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), np.uint8)).save(
        paths[-1])
  return paths


def hold_elsewhere(folder: pathlib.Path) -> subprocess.Popen:
  """Another process that takes `folder`'s lock (`lock.hold_workdir`) and
  keeps it until killed."""
  process = subprocess.Popen(
      [sys.executable, "-c", _HOLD, str(folder)], cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
      text=True)
  assert process.stdout.readline() == "held\n"
  return process
