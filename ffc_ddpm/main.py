"""Entry point: `python -m ffc_ddpm.main --config=configs/X.py --workdir=DIR`.

Intentionally short: parse and check the flags and the config, then hand over
to the mode's function. Bad input (an unknown mode or config field, a wrong
value, missing data) ends with one line naming the problem and exit code 2,
before any compute starts. Any later failure ends the same way: one
`error: ...` line, the last on the screen (the full trace at debug level,
--verbosity=1).
"""

import contextlib
import logging as std_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ffc_ddpm import compositing, configuration

MODES = ("train", "eval", "inpaint", "sample")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/celebahq.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs, metrics and images.")
_MODE = flags.DEFINE_string("mode", "train", f"One of {', '.join(MODES)}; "
                            "train is followed by eval when "
                            "config.train.eval_after_train.")
_IMAGE = flags.DEFINE_string(
    "image", None, "inpaint: an image file or a folder of images.")
_MASK = flags.DEFINE_string(
    "mask", "center", "inpaint: a mask image (white = hole), a folder of masks "
    "named like the images, or a mask name (center, random, large, thick, ...).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "inpaint: output PNG (or folder); sample: output folder.")
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 1, "inpaint: results per image; sample: images to draw.")
_REDUCE = flags.DEFINE_enum(
    "reduce", "none", ["none", "mean"], "inpaint with --num_samples=K: none "
    "writes the K results, mean their per-pixel mean; with K > 1 an "
    "uncertainty map (NAME_uncertainty.png) is written too.")
_COMPOSITE = flags.DEFINE_enum(
    "composite", "paste", list(compositing.COMPOSITES), "inpaint: how a "
    "result joins the photo: paste (the model's pixels in the hole) or "
    "poisson (its gradients in the hole, the photo's pixels on the hole's "
    "edge: no seam).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process run (TPU pod, GPU cluster) "
    "with jax.distributed.initialize(); only process 0 writes logs and images.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: host:port of process 0 "
    "(default: detected from SLURM, Open MPI, TPU or Kubernetes).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: how many processes (default: detected).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's id (default: detected).")
_CACHE = flags.DEFINE_string(
    "compilation_cache", os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "ffc_ddpm", "jax"),
    "Persistent XLA compilation cache, so restarts skip compiling ('' = off).")
_STEP = flags.DEFINE_integer(
    "step", None, "eval/inpaint/sample: checkpoint step (default: the latest).")
_LOG_PARAMETERS = flags.DEFINE_bool(
    "log_parameters", False, "train: log the table of the network's "
    "parameters (shapes and counts) before the first step.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "inpaint: replace result files that already exist "
    "(without it, a run that would overwrite one is refused before any "
    "compute).")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "eval/inpaint/sample: a weights file (.npz written by "
    "tools/export_weights.py) instead of a checkpoint; its model and "
    "diffusion settings replace --config's, and inpaint and sample then "
    "need no --workdir.")


# At the default verbosity the screen shows this program's lines, warnings,
# the training progress and the parameter table that --log_parameters asks
# for; the libraries' other INFO lines (orbax writes ~20 per checkpoint)
# appear with --verbosity=1.
_SHOWN_SOURCES = ("clu/metric_writers/logging_writer.py",
                  "clu/platform/local.py", "clu/parameter_overview.py")
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # our lines
_TIMING_SCALARS = re.compile(r"\[\d+\] (steps_per_sec|uptime)=")


def quiet_log(record: std_logging.LogRecord) -> bool:
  """Whether a log record is shown at the default verbosity."""
  if record.levelno >= std_logging.WARNING:
    return True
  if os.path.abspath(record.pathname).startswith(_PACKAGE):
    return True
  path = record.pathname.replace(os.sep, "/")
  if path.endswith(_SHOWN_SOURCES):  # the loss, steps/s and ETA, the table
    return not _TIMING_SCALARS.match(record.getMessage())
  return False


class UsageError(ValueError):
  """A command-line flag is missing or wrong."""


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with every problem reduced to one line and exit code 2."""
  try:
    for arg in argv:
      if arg.startswith("--config="):
        path = arg.split("=", 1)[1]
        if not os.path.isfile(path):
          _fail(f"--config={path}: no such config file")
    configuration.check_overrides(argv)
    return flags.FLAGS(argv)
  except configuration.ConfigError as e:
    _fail(_one_line(e))
  except Exception as e:  # pylint: disable=broad-except
    _fail(f"flags: {_one_line(e)}")


def check(config) -> None:
  """Everything that can be checked before any compute."""
  if _MODE.value not in MODES:
    raise UsageError(f"--mode={_MODE.value}: expected one of {', '.join(MODES)}")
  if config is None:
    raise UsageError("--config: required (e.g. --config=configs/demo.py)")
  if _WEIGHTS.value and _MODE.value == "train":
    raise UsageError("--weights: for --mode=eval, inpaint or sample; "
                     "training starts from the config or resumes --workdir")
  if _WEIGHTS.value and _STEP.value is not None:
    raise UsageError("--step: picks a checkpoint of --workdir; a --weights "
                     "file holds one step")
  from_file = _WEIGHTS.value and (
      _MODE.value == "inpaint" or _MODE.value == "sample" and _OUTPUT.value)
  if not (_WORKDIR.value or from_file):
    raise UsageError("--workdir: required (where checkpoints and results go;"
                     " inpaint and sample from --weights need none)")
  configuration.validate(config)
  check_mode_settings(config, _MODE.value)
  if _MODE.value == "inpaint" and not (_IMAGE.value and _OUTPUT.value):
    raise UsageError("--mode=inpaint needs --image=PATH and --output=PATH")
  if _MODE.value == "sample" and config.diffusion.conditioning != "none":
    raise UsageError("--mode=sample draws from unconditional models "
                     "(diffusion.conditioning='none'); use --mode=inpaint")
  if _NUM_SAMPLES.value < 1:
    raise UsageError(f"--num_samples={_NUM_SAMPLES.value}: expected >= 1")


def check_mode_settings(config, mode: str) -> None:
  """The settings that `mode` reads, and only those: inpainting and
  sampling never open the training data or the evaluation masks, so a
  config whose paths exist only beside the training checkout (relative
  `folder:` masks, data.path) still inpaints from any directory."""
  # pylint: disable=g-import-not-at-top
  from ffc_ddpm import models
  from ffc_ddpm.data import masks
  try:
    models.create_model(config.model)  # the network can be built
  except ValueError as e:
    raise UsageError(_one_line(e)) from None
  evaluates = mode == "eval" or (mode == "train" and
                                 config.train.eval_after_train)
  try:
    if mode == "train":
      masks.train_mask_names(config.data.train_masks)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(f"config.data.train_masks: {e}") from None
  try:
    for name in config.eval.masks if evaluates else ():
      masks.validate_mask_name(name)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(f"config.eval.masks: {e}") from None
  if mode == "train":
    configuration.check_data_path(config)
    from ffc_ddpm import train, weights  # pylint: disable=g-import-not-at-top
    try:
      train.initial_params(config, models.create_model(config.model))
    except weights.WeightsError as e:
      raise UsageError(_one_line(e)) from None


def config_of_weights(config, path: str):
  """`config` with the model of weights file `path` (`weights.model_config`):
  one warning line lists the fields the file changed."""
  from ffc_ddpm import weights  # pylint: disable=g-import-not-at-top
  config, changed = weights.model_config(config, weights.read_metadata(path),
                                         path)
  if changed:
    logging.warning("--weights=%s: model settings taken from the file: %s",
                    path, "; ".join(changed))
  return config


def config_of_run(config, workdir: str):
  """`config` with the model of the run in `workdir`
  (`weights.run_model_config`): one warning line lists what it changed."""
  from ffc_ddpm import weights  # pylint: disable=g-import-not-at-top
  config, changed = weights.run_model_config(config, workdir)
  if changed:
    logging.warning("--workdir=%s: model settings taken from the run's %s: "
                    "%s", workdir, weights.RUN_CONFIG, "; ".join(changed))
  return config


def run(config, workdir: str | None) -> None:
  """Hands over to the chosen mode (imports are heavy, so made late).

  Training holds the workdir (one training run at a time), taken before
  anything heavy starts. Evaluation holds only its output folder
  WORKDIR/eval, so a model can be scored while it trains; inpaint and sample
  only read the workdir.
  """
  # pylint: disable=g-import-not-at-top
  from ffc_ddpm import lock
  mode = _MODE.value
  holding = contextlib.nullcontext()
  if mode == "train":
    holding = lock.hold_workdir(workdir)
  elif mode == "eval":  # a missing workdir is reported, not created
    holding = lock.hold_workdir(
        os.path.join(workdir, "eval"),
        create=os.path.isdir(workdir) or bool(_WEIGHTS.value))
  with holding:
    _run_mode(config, workdir, mode)


def _run_mode(config, workdir: str, mode: str) -> None:
  """Runs one mode's function."""
  # pylint: disable=g-import-not-at-top
  from ffc_ddpm import evaluate, inpaint_command, train
  if mode == "train":
    train.train(config, workdir, log_parameters=_LOG_PARAMETERS.value)
    if config.train.eval_after_train:
      evaluate.evaluate(config, workdir)
  elif mode == "eval":
    configuration.check_data_path(config)
    evaluate.evaluate(config, workdir, _STEP.value, _WEIGHTS.value)
  elif mode == "inpaint":
    inpaint_command.inpaint_files(config, workdir, _IMAGE.value, _MASK.value,
                          _OUTPUT.value, _NUM_SAMPLES.value, _STEP.value,
                          reduce=_REDUCE.value, weights_file=_WEIGHTS.value,
                          composite=_COMPOSITE.value,
                          overwrite=_OVERWRITE.value)
  else:
    inpaint_command.sample_files(config, workdir, _OUTPUT.value or workdir,
                         _NUM_SAMPLES.value, _STEP.value, _WEIGHTS.value)


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if flags.FLAGS.verbosity <= 0:
    logging.get_absl_handler().addFilter(quiet_log)
  config = _CONFIG.value
  try:
    if _WEIGHTS.value and config is not None:
      config = config_of_weights(config, _WEIGHTS.value)
    elif config is not None and _WORKDIR.value and _MODE.value != "train":
      config = config_of_run(config, _WORKDIR.value)
    check(config)
    import jax  # pylint: disable=g-import-not-at-top
    if _CACHE.value:
      jax.config.update("jax_compilation_cache_dir", _CACHE.value)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    if _DISTRIBUTED.value:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                                 _PROCESS_ID.value)
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    logging.debug("Config:\n%s", config)  # training saves config.json
    run(config, _WORKDIR.value)
  except KeyboardInterrupt as e:
    _fail(f"interrupted (Ctrl-C){': ' + _one_line(e) if str(e) else ''}",
          status=130)
  except Exception as e:  # pylint: disable=broad-except
    logging.debug("Full trace of the error below:", exc_info=True)
    expected = isinstance(e, (ValueError, OSError))
    _fail(_one_line(e) if expected else f"{type(e).__name__}: {_one_line(e)}")


def _one_line(e: BaseException) -> str:
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  return " ".join(text.split())


def _close_progress_bars() -> None:
  """Ends the progress bars a failure left open, so that the error line
  comes after them instead of being glued to one."""
  import tqdm  # pylint: disable=g-import-not-at-top
  for bar in list(getattr(tqdm.tqdm, "_instances", ())):
    bar.close()


def _fail(message: str, status: int = 2) -> None:
  _close_progress_bars()
  sys.stdout.flush()
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
