"""Loading configs from Python files and checking them before any compute.

Configs are Python files with `get_config()` (see `configs/`). Variants import
the shared base as `from configs import default`, so the folder above a
config's folder is put on `sys.path` when it is loaded.

`validate` checks every field's type and range and raises `ConfigError` with
one line naming the field, the value and what was expected.
"""

import difflib
import importlib.util
import os
import pathlib
import sys
from typing import Any, Callable

import ml_collections

from ffc_ddpm import files


class ConfigError(ValueError):
  """A config field has a wrong type or an out-of-range value."""


def add_config_root_to_path(config_path: str) -> None:
  """Lets `from configs import default` work wherever the program is run from."""
  root = str(pathlib.Path(config_path).resolve().parent.parent)
  if root not in sys.path:
    sys.path.insert(0, root)


def load_config(path: str) -> ml_collections.ConfigDict:
  """Reads `get_config()` from a config file (for tests, notebooks, tools)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config: no config file at {path}")
  add_config_root_to_path(path)
  spec = importlib.util.spec_from_file_location(
      f"ffc_ddpm_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def default_config() -> ml_collections.ConfigDict:
  """configs/default.py's config: every field with its default."""
  return load_config(str(pathlib.Path(__file__).resolve().parents[1] /
                         "configs" / "default.py"))


def save_json(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes `config` as JSON (atomically: a temporary file renamed), so a
  run's workdir records what it was trained with."""
  files.write_text(path,
                   config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------- checks
Check = Callable[[Any], str | None]  # returns what was expected, or None


def _integer(lo=None, hi=None) -> Check:
  def check(v):
    ok = isinstance(v, int) and not isinstance(v, bool)
    ok = ok and (lo is None or v >= lo) and (hi is None or v <= hi)
    return None if ok else f"an integer in [{lo}, {hi if hi is not None else 'inf'}]"
  return check


def _number(lo=None, hi=None, lo_open=False, hi_open=False) -> Check:
  def check(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok and lo is not None:
      ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
      ok = v < hi if hi_open else v <= hi
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return None if ok else f"a number in {left}{lo}, {hi}{right}"
  return check


def _choice(*options) -> Check:
  return lambda v: None if v in options else f"one of {', '.join(options)}"


def _boolean(v):
  return None if isinstance(v, bool) else "True or False"


def _string(v):
  return None if isinstance(v, str) else "a string"


def _int_tuple(v):
  ok = isinstance(v, (tuple, list)) and all(
      isinstance(x, int) and x > 0 for x in v)
  return None if ok else "a tuple of positive integers"


def _names(*options) -> Check:
  def check(v):
    ok = isinstance(v, (tuple, list)) and all(x in options for x in v)
    return None if ok else f"a tuple of names from {', '.join(options)}"
  return check


def _mask_names(v):
  ok = isinstance(v, (tuple, list)) and v and all(isinstance(x, str) for x in v)
  return None if ok else "a non-empty tuple of mask names"


def _optional_file(v):
  if not isinstance(v, str):
    return "a path string"
  return None if not v or os.path.isfile(v) else "an existing file (or '')"


_RANGES = {
    "seed": _integer(0),
    "data.source": _choice("synthetic", "folder", "tfds", "arrayrecord"),
    "data.path": _string,
    "data.tfds_data_dir": _string,
    "data.image_size": _integer(8, 4096),
    "data.resize": _choice("center_crop", "resize"),
    "data.num_val": _integer(0),
    "data.num_test": _integer(0),
    "data.num_train": _integer(1),
    "data.split_seed": _integer(-1),
    "data.skip_bad_files": _boolean,
    "data.num_workers": _integer(0, 256),
    "data.prefetch": _integer(1, 1024),
    "data.train_masks": _string,
    "data.augment.crop_min_scale": _number(0, 1, lo_open=True),
    "data.augment.hflip": _boolean,
    "data.augment.brightness": _number(0, 1, hi_open=True),
    "data.augment.contrast": _number(0, 1, hi_open=True),
    "data.augment.saturation": _number(0, 1, hi_open=True),
    "data.augment.hue": _number(0, 0.5),
    # Mixed folders, identity splits, zoom-out and rotation.
    "data.path_weights": _string,
    "data.identities": _string,
    "data.test_identities": _integer(0),
    "data.val_identities": _integer(0),
    "data.augment.zoom_out_min_scale": _number(0, 1, lo_open=True),
    "data.augment.rotate_degrees": _number(0, 180),
    "data.augment.pad_mode": _choice("reflect", "edge", "black"),
    "diffusion.schedule": _choice("linear", "scaled_linear", "cosine"),
    "diffusion.num_steps": _integer(1, 100_000),
    "diffusion.beta_start": _number(0, 1, lo_open=True, hi_open=True),
    "diffusion.beta_end": _number(0, 1, lo_open=True, hi_open=True),
    "diffusion.conditioning": _choice("concat", "none"),
    "diffusion.prefill": _choice("zeros", "harmonic"),
    "diffusion.loss": _choice("mse", "l1"),
    "diffusion.loss_region": _choice("hole", "full"),
    "diffusion.loss_normalisation": _choice("hole", "all"),
    "diffusion.clip_denoised": _boolean,
    "model.image_size": _integer(8, 4096),
    "model.in_channels": _integer(1),
    "model.out_channels": _integer(1),
    "model.model_channels": _integer(1),
    "model.channel_mult": lambda v: None if not v else _int_tuple(v),
    "model.num_res_blocks": _integer(1),
    "model.attention_resolutions": lambda v: None if not v else _int_tuple(v),
    "model.num_heads": _integer(1),
    "model.num_head_channels": lambda v: None if v == -1 else _integer(1)(v),
    "model.num_heads_upsample": lambda v: None if v == -1 else _integer(1)(v),
    "model.use_new_attention_order": _boolean,
    "model.use_scale_shift_norm": _boolean,
    "model.resblock_updown": _boolean,
    "model.conv_resample": _boolean,
    "model.dropout": _number(0, 1, hi_open=True),
    "model.learn_sigma": _boolean,
    "model.num_classes": _integer(0),
    "model.noise_conditioning": _choice("abar", "timestep"),
    "model.noise_level_scale": _number(0, lo_open=True),
    "model.dtype": _choice("float32", "bfloat16"),
    "model.remat": _boolean,
    "model.ffc.enabled": _boolean,
    "model.ffc.num_blocks": _integer(0),
    "model.ffc.decoder_blocks": _integer(0),
    "model.ffc.ratio_gin": _number(0, 1),
    "model.ffc.ratio_gout": _number(0, 1),
    "model.ffc.enable_lfu": _boolean,
    "train.num_steps": _integer(0),
    "train.batch_size": _integer(1),
    "train.optimizer": _choice("adam", "adamw"),
    "train.learning_rate": _number(0, lo_open=True),
    "train.warmup_steps": _integer(0),
    "train.lr_schedule": _choice("cosine", "constant"),
    "train.min_lr_ratio": _number(0, 1),
    "train.weight_decay": _number(0),
    "train.b1": _number(0, 1, hi_open=True),
    "train.b2": _number(0, 1, hi_open=True),
    "train.grad_clip_norm": _number(0),
    "train.ema_decay": _number(0, 1, hi_open=True),
    "train.log_every": _integer(1),
    "train.checkpoint_every": _integer(1),
    "train.keep_checkpoints": _integer(1),
    "train.keep_every": _integer(0),
    "train.image_every": _integer(0),
    "train.quick_eval_every": _integer(0),
    "train.quick_eval_images": _integer(1),
    "train.eval_after_train": _boolean,
    "train.model_axis_size": _integer(1),
    "eval.masks": _mask_names,
    "eval.num_images": _integer(1),
    "eval.batch_size": _integer(1),
    "eval.split": _choice("train", "validation", "test"),
    "eval.sampler": _choice("ddpm", "ddim", "repaint", "dpm_solver"),
    "eval.num_steps": _integer(1),
    "eval.timestep_spacing": _choice("uniform", "quadratic", "log_snr"),
    "eval.num_samples": _integer(1),
    "eval.eta": _number(0),
    "eval.jump_length": _integer(1),
    "eval.jump_n_sample": _integer(1),
    "eval.use_ema": _boolean,
    "eval.baselines": _names("mean", "telea", "biharmonic"),
    "eval.num_grid_images": _integer(0),
    "eval.lpips_weights": _optional_file,
    "eval.fid_weights": _optional_file,
}


def _get(config, dotted: str):
  for part in dotted.split("."):
    if part not in config:
      raise ConfigError(f"config.{dotted}: missing field (is the config based "
                        "on configs/default.py?)")
    config = config[part]
  return config


def check_field_names(config, overridden: list[str]) -> None:
  """ConfigError naming the full path and the closest existing field, for
  command-line overrides (`train.num_stpes`) that name no field."""
  for dotted in overridden:
    parts, node = dotted.split("."), config
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(f"config.{dotted}: config."
                          f"{'.'.join(parts[:i])} is a value, not a section")
      if part not in node:
        close = difflib.get_close_matches(part, list(node.keys()), n=1)
        hint = (f"did you mean config.{'.'.join(parts[:i] + close)}?" if close
                else f"expected one of {', '.join(sorted(node.keys()))}")
        raise ConfigError(f"config.{dotted}: no such field; {hint}")
      node = node[part]


def overridden_fields(argv: list[str]) -> list[str]:
  """'train.num_steps' of each --config.train.num_steps=V (or
  --noconfig.X) flag."""
  names = []
  for arg in argv:
    for prefix in ("--config.", "--noconfig."):
      if arg.startswith(prefix):
        names.append(arg[len(prefix):].split("=", 1)[0])
  return names


def check_overrides(argv: list[str]) -> None:
  """Before absl parses `argv`: every --config.X=V names a field of the
  --config file (`check_field_names`), which is loaded to see them."""
  for arg in argv:
    if arg.startswith("--config="):
      check_field_names(load_config(arg.split("=", 1)[1]),
                        overridden_fields(argv))


def parse_tool_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for the tools (`app.run(main, flags_parser=...)`):
  --config.X overrides are checked first, and a wrong one ends the program
  with one `error:` line naming the closest field, as the main job does."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    check_overrides(argv)
    return flags.FLAGS(argv)
  except (ConfigError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f"error: flags: {' '.join(str(e).split())}")


def _fail(field: str, value: Any, expected: str) -> None:
  raise ConfigError(f"config.{field}={value!r}: expected {expected}")


def _check_relations(config) -> None:
  """Constraints between fields."""
  d, m, ev = config.diffusion, config.model, config.eval
  if d.schedule == "linear" and not d.beta_start < d.beta_end:
    _fail("diffusion.beta_end", d.beta_end,
          f"a value above diffusion.beta_start={d.beta_start}")
  if m.image_size != config.data.image_size:
    _fail("model.image_size", m.image_size,
          f"the data's image size {config.data.image_size}")
  want_in = 7 if d.conditioning == "concat" else 3
  if m.in_channels != want_in:
    _fail("model.in_channels", m.in_channels,
          f"{want_in} for diffusion.conditioning={d.conditioning!r}")
  if ev.num_steps > d.num_steps:
    _fail("eval.num_steps", ev.num_steps,
          f"at most diffusion.num_steps={d.num_steps}")
  if ev.sampler == "repaint" and d.conditioning != "none":
    _fail("eval.sampler", ev.sampler,
          "ddpm, ddim or dpm_solver for a conditional model (repaint needs "
          "diffusion.conditioning='none')")
  if d.conditioning == "concat" and d.loss_region == "full":
    _fail("diffusion.loss_region", d.loss_region,
          "'hole' for a conditional model (its known pixels are clean, so "
          "their noise cannot be predicted)")
  if ev.eta and ev.sampler != "ddim":
    _fail("eval.eta", ev.eta, "0 unless eval.sampler='ddim'")
  if ev.eta > 1:
    _fail("eval.eta", ev.eta, "a value in [0, 1]")


def check_data_path(config) -> None:
  """The data the config names must exist (before any compute): for
  training and evaluation, not for inpainting users' photos."""
  source, path = config.data.source, config.data.path
  if source == "synthetic":
    return
  if not path:
    _fail("data.path", path, f"the location of the {source!r} data (e.g. "
          "--config.data.path=DIR)")
  kind = "file" if source == "arrayrecord" else "directory"
  paths, tables = [path], []
  if source == "folder":  # data.path may list several folders
    from ffc_ddpm.data import sources  # pylint: disable=g-import-not-at-top
    named = sources.folders(config.data)
    paths = [f.path for f in named]
    tables = [f.identities for f in named if f.identities]
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.data.path={path!r}: no such {kind} "
                              f"for data.source={source!r}")
    if os.path.isfile(path) != (kind == "file"):
      found = "a file" if os.path.isfile(path) else "a directory"
      raise FileNotFoundError(f"config.data.path={path!r} is {found}; "
                              f"data.source={source!r} reads a {kind}")
  for table in tables:
    if not os.path.isfile(table):
      raise FileNotFoundError(f"config.data.identities: no such file "
                              f"{table!r}")


def _check_data_folders(config) -> None:
  """data.path_weights and the identity fields agree with data.path and
  data.source (`sources.check_folder_fields`; reads no file)."""
  from ffc_ddpm.data import sources  # pylint: disable=g-import-not-at-top
  try:
    sources.check_folder_fields(config.data)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first bad field; returns the config."""
  for field, check in _RANGES.items():
    value = _get(config, field)
    expected = check(value)
    if expected:
      _fail(field, value, expected)
  _check_relations(config)
  _check_data_folders(config)
  return config
