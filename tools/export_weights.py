"""Exports a checkpoint's weights as one file that users can inpaint with.

  python tools/export_weights.py WORKDIR OUT.npz [--step=N] [--dtype=float16]

writes the EMA parameters of WORKDIR's newest readable checkpoint (or
--step's; the raw parameters with --noema, or when there are no EMA ones)
with the run's config inside (`ffc_ddpm.weights`). The config is the one
training saved as WORKDIR/config.json, the converter's WORKDIR/config.py, or
--config. Then:

  python -m ffc_ddpm.main --mode=inpaint --config=configs/celeba64.py \
      --weights=OUT.npz --image=FACES --mask=MASKS --output=OUT_DIR
"""

import hashlib
import os
import pathlib
import sys

from absl import app
from absl import flags
import jax

from ffc_ddpm import configuration, inference, parallel, train, weights

DEFAULT_CONFIG = (pathlib.Path(__file__).resolve().parents[1] / "configs" /
                  "default.py")


def run_config(workdir: str, config_path: str | None):
  """The config WORKDIR was trained with (or converted to)."""
  if config_path:
    return configuration.load_config(config_path)
  saved = os.path.join(workdir, train.CONFIG_FILE)
  if os.path.isfile(saved):
    base = configuration.load_config(str(DEFAULT_CONFIG))
    return weights.config_from_json(base, saved)
  converted = os.path.join(workdir, "config.py")
  if os.path.isfile(converted):
    return configuration.load_config(converted)
  raise FileNotFoundError(
      f"{workdir} has neither {train.CONFIG_FILE} nor config.py: pass "
      "--config=CONFIG_FILE, the config it was trained with")


def export(workdir: str, out: str, step: int | None = None,
           dtype: str = "float32", use_ema: bool = True,
           config_path: str | None = None) -> dict:
  """Writes the weights file; returns its metadata (and sha256, size)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"{workdir}: no checkpoints folder")
  config = configuration.validate(run_config(workdir, config_path))
  config.eval.use_ema = use_ema
  mesh = parallel.create_mesh(1, jax.local_devices()[:1])
  _, params, step, source = inference.load_weights(config, workdir, mesh, step)
  meta = weights.save(out, params, config, step, source, dtype)
  with open(out, "rb") as f:
    meta["sha256"] = hashlib.sha256(f.read()).hexdigest()
  meta["bytes"] = os.path.getsize(out)
  return meta


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  tests can import its functions beside other tools' flags."""
  global _STEP, _DTYPE, _EMA, _CONFIG
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the "
                               "newest that reads).")
  _DTYPE = flags.DEFINE_enum(
      "dtype", "float32", list(weights.STORAGE_DTYPES), "How the parameters "
      "are stored (float16 halves the file; they are read back as float32).")
  _EMA = flags.DEFINE_bool("ema", True, "Export the EMA parameters (when "
                           "the checkpoint has them).")
  _CONFIG = flags.DEFINE_string(
      "config", None, "The run's config file (default: WORKDIR/config.json, "
      "then WORKDIR/config.py).")


def main(argv):
  if len(argv) != 3:
    sys.exit("usage: export_weights.py WORKDIR OUT.npz [--step=N] "
             "[--dtype=float32|float16|bfloat16] [--noema] [--config=FILE]")
  workdir, out = argv[1:]
  if not out.endswith(".npz"):
    sys.exit(f"error: {out}: the weights file's name must end in .npz")
  try:
    meta = export(workdir, out, _STEP.value, _DTYPE.value, _EMA.value,
                  _CONFIG.value)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(f"wrote {out}: {meta['source']} of step {meta['step']}, "
        f"{meta['num_params']:,} parameters as {meta['dtype']}, "
        f"{meta['bytes']:,} bytes, sha256 {meta['sha256']}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
