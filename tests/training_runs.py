"""Training runs in subprocesses, for the end-to-end tests (not collected).

Every run of a test session shares one persistent JAX compilation cache, so
only the first run of a given program pays for compiling it; the others
start in seconds. Runs write their console output to WORKDIR/log_N.txt.
"""

import importlib.metadata
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from ffc_ddpm import configuration

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent

# configs/test.py with one resolution level (so compiling takes half the
# time), a global batch that 8 devices split, and no evaluation after.
TINY_OVERRIDES = {"model.channel_mult": (1,), "model.attention_resolutions": (),
                  "train.batch_size": 8, "train.eval_after_train": False}
TINY = ("--config=configs/test.py",) + tuple(
    f"--config.{k}={v!r}" for k, v in TINY_OVERRIDES.items())

# The whole-run tests: 8 updates, every one logged, a checkpoint every 2.
STEPS = 8
LOOP = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2",
        "--config.train.keep_checkpoints=10")
QUIET = ("--config.train.image_every=0", "--config.train.quick_eval_every=0")


def tiny_config():
  """The config the TINY flags give, for runs inside a test process."""
  config = configuration.load_config(str(ROOT / "configs" / "test.py"))
  for dotted, value in TINY_OVERRIDES.items():
    section, field = dotted.split(".")
    config[section][field] = value
  return config


def environment(cache_root: pathlib.Path, num_devices: int = 1) -> dict:
  """The subprocess environment: CPU, `num_devices` host devices, the cache.

  The XLA flags of tests/conftest.py are kept; XLA's older fusion emitters
  (which compile these programs in half the time; jaxlib 0.10 only, as
  later XLA may not know the flag, and XLA stops on a flag it does not know)
  and the device count are appended.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if importlib.metadata.version("jaxlib").startswith("0.10."):
    flags += " --xla_cpu_use_fusion_emitters=false"
  if num_devices > 1:
    flags += f" --xla_force_host_platform_device_count={num_devices}"
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip(),
              JAX_COMPILATION_CACHE_DIR=str(cache_root / "jax_cache"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def start(env: dict, workdir: pathlib.Path, *flags: str,
          script: str = "") -> subprocess.Popen:
  """Starts `python -m ffc_ddpm.main` (or a script in tests/ that takes its
  flags) on `workdir`, compiling into the session's cache."""
  workdir.mkdir(parents=True, exist_ok=True)
  log = workdir / f"log_{len(list(workdir.glob('log_*.txt')))}.txt"
  program = [str(HERE / script)] if script else ["-m", "ffc_ddpm.main"]
  cache = f"--compilation_cache={env['JAX_COMPILATION_CACHE_DIR']}"
  with open(log, "w") as f:
    process = subprocess.Popen(
        [sys.executable, *program, *TINY, cache, f"--workdir={workdir}",
         *flags], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
  process.log = log
  return process


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
  """Waits for the process; returns its console output."""
  process.wait(timeout=timeout)
  return process.log.read_text()


def run(env: dict, workdir: pathlib.Path, *flags: str, script: str = ""):
  """(exit status, console output) of a run to completion."""
  process = start(env, workdir, *flags, script=script)
  output = finish(process)
  return process.returncode, output


def wait_until(condition, process: subprocess.Popen,
               timeout: float = 240) -> bool:
  """Polls `condition()` every 5 ms; False if the process ended first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return True
    if process.poll() is not None:
      return False
    time.sleep(0.005)
  raise TimeoutError(f"condition not met in {timeout} s; see {process.log}")


def kill(process: subprocess.Popen, sig=signal.SIGKILL) -> str:
  process.send_signal(sig)
  return finish(process)


def resumed(process: subprocess.Popen) -> bool:
  """Whether the run has restored its checkpoint (train.py logs it)."""
  return "Resumed from step" in process.log.read_text()


def records(workdir: pathlib.Path) -> list[dict]:
  """Every complete record of WORKDIR/metrics.jsonl (a run may be writing)."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  lines = path.read_text().splitlines(keepends=True)
  return [json.loads(line) for line in lines if line.endswith("\n")]


def losses(workdir: pathlib.Path) -> dict[int, float]:
  """{step: loss} of the records that have a loss."""
  return {r["step"]: r["loss"] for r in records(workdir) if "loss" in r}


def last_logged_step(workdir: pathlib.Path) -> int:
  return max(losses(workdir), default=0)


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """Committed checkpoints (unfinished saves have a temporary name)."""
  folder = workdir / "checkpoints"
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def saving(workdir: pathlib.Path) -> bool:
  """Whether a save is under way (orbax's temporary folder exists)."""
  folder = workdir / "checkpoints"
  return folder.exists() and any(
      "tmp" in p.name for p in folder.iterdir())


def load_items(workdir: pathlib.Path, step: int, names) -> dict:
  """Items of a checkpoint as stored, read with orbax alone; NumPy arrays
  (typed keys as their key data)."""
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        **{name: ocp.args.StandardRestore() for name in names}))
  finally:
    manager.close()
  as_numpy = lambda x: np.asarray(
      jax.random.key_data(x) if jax.dtypes.issubdtype(
          x.dtype, jax.dtypes.prng_key) else x)
  return {name: jax.tree.map(as_numpy, restored[name]) for name in names}


def reference_run(basetemp: pathlib.Path) -> pathlib.Path:
  """WORKDIR of one uninterrupted LOOP + QUIET run, made once per session
  and compared with by the resumed and the multi-device runs."""
  workdir = basetemp / "reference"
  if not (workdir / "done").exists():
    shutil.rmtree(workdir, ignore_errors=True)
    status, output = run(environment(basetemp), workdir, *LOOP, *QUIET)
    if status:
      raise RuntimeError(f"reference run failed:\n{output[-3000:]}")
    (workdir / "done").touch()
  return workdir
