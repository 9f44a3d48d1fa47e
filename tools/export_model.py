r"""Exports a model as `jax.export` files that run with jax alone.

  python tools/export_model.py --weights=weights/celeba64.npz --out=DIR
  python tools/export_model.py --workdir=RUN --config=configs/X.py --out=DIR

writes, for each platform of --platforms (default cpu, cuda and tpu),
DIR/denoiser.PLATFORM.jaxexport (x_t, noise level, masked image, mask ->
eps) and DIR/sampler.PLATFORM.jaxexport (image, mask, key -> K samples,
their mean and std), any batch size, the weights inside; and
DIR/export.json: each file's inputs, outputs, size and sha256, and the
model and sampler settings (`ffc_ddpm.export`). A weights file brings its
model; the sampler is --config's (config.eval: --config.eval.sampler=ddim,
--config.eval.num_steps=20, ...) or, without --config, the one stored in the
file. A workdir's config is --config, else the run's config.json (or a
converted checkpoint's config.py). weights/README.md shows how to run them.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from ffc_ddpm import configuration, export



def workdir_config(config, workdir: str):
  """--workdir's config: `config` with the run's model
  (`weights.run_model_config`, as the main job), else the run's own
  (`export_weights`)."""
  # pylint: disable=g-import-not-at-top
  if config is not None:
    from ffc_ddpm import weights
    return weights.run_model_config(config, workdir)[0]
  import export_weights
  return export_weights.run_config(workdir, None)


def export_files(config, out: str, num_samples: int, platforms,
                 workdir: str | None = None, step: int | None = None,
                 weights_file: str | None = None) -> dict:
  """Loads the weights on one device and writes the files
  (`export.export_model`); returns export.json's content."""
  import jax  # pylint: disable=g-import-not-at-top
  from ffc_ddpm import inference, parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.create_mesh(1, jax.local_devices()[:1])
  loaded = inference.load(config, workdir, step, mesh, weights_file)
  return export.export_model(config, loaded, out, num_samples, platforms)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  tests can import its functions beside other tools' flags."""
  global _CONFIG, _WEIGHTS, _WORKDIR, _STEP, _OUT, _NUM_SAMPLES, _PLATFORMS
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file: the sampler (config.eval) and, for "
      "--workdir, the model.", lock_config=True)
  _WEIGHTS = flags.DEFINE_string(
      "weights", None, "A weights file (tools/export_weights.py).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir "
                                 "(instead of --weights).")
  _STEP = flags.DEFINE_integer("step", None, "--workdir's checkpoint step "
                               "(default: the newest that reads).")
  _OUT = flags.DEFINE_string("out", None, "Output folder.")
  _NUM_SAMPLES = flags.DEFINE_integer(
      "num_samples", 8, "K: samples the sampler draws of each image.")
  _PLATFORMS = flags.DEFINE_list(
      "platforms", list(export.PLATFORMS),
      f"Platforms to lower for: {', '.join(export.PLATFORMS)}.")


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if not _OUT.value or bool(_WEIGHTS.value) == bool(_WORKDIR.value):
    sys.exit("error: --out and one of --weights or --workdir are required")
  if _NUM_SAMPLES.value < 1:
    sys.exit(f"error: --num_samples={_NUM_SAMPLES.value}: expected 1 or more")
  unknown = sorted(set(_PLATFORMS.value) - set(export.PLATFORMS))
  if unknown or not _PLATFORMS.value:
    sys.exit(f"error: --platforms={','.join(_PLATFORMS.value)}: expected "
             f"some of {', '.join(export.PLATFORMS)}")
  if _WEIGHTS.value and _STEP.value is not None:
    sys.exit("error: --step: picks a checkpoint of --workdir; a --weights "
             "file holds one step")
  try:
    if _WEIGHTS.value:
      from ffc_ddpm import weights  # pylint: disable=g-import-not-at-top
      config = weights.file_config(_WEIGHTS.value, _CONFIG.value)
    else:
      config = workdir_config(_CONFIG.value, _WORKDIR.value)
    meta = export_files(configuration.validate(config), _OUT.value,
                        _NUM_SAMPLES.value, _PLATFORMS.value, _WORKDIR.value,
                        _STEP.value, _WEIGHTS.value)
  except (ValueError, OSError) as e:  # bad settings, missing files
    sys.exit(f"error: {' '.join(str(e).split())}")
  for function in meta["functions"].values():
    for entry in function["files"].values():
      print(f"wrote {_OUT.value}/{entry['file']}: {entry['bytes']:,} bytes, "
            f"sha256 {entry['sha256']}")
  print(f"wrote {_OUT.value}/{export.METADATA_FILE}: {meta['weights']} of "
        f"step {meta['step']}, {meta['sampler']['method']} with "
        f"{meta['sampler']['num_steps']} steps, K = {_NUM_SAMPLES.value}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=configuration.parse_tool_flags)
