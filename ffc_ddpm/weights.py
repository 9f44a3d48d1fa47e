"""Released weights: one file holding a network's parameters and its config.

A weights file is an `.npz` (readable with NumPy alone, no pickle):
- `params/<module>/.../<name>`: each parameter, float32, float16 or bfloat16
  (bfloat16 stored as its uint16 bit pattern, `bfloat16_names` listing them);
- `ffc_ddpm`: a JSON string: the file `format`, the training `step`, the
  checkpoint item it came from (`source`, "ema_params" or "params"), and the
  full `config` it was trained with.

The stored config defines the model: `config.model`, `config.diffusion` and
`config.data.image_size` are taken from the file, whatever the config given
on the command line says (its `eval` settings, seed and batch size apply).
"""

import copy
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from ffc_ddpm import files

FORMAT = "ffc_ddpm.weights.v1"
# The config sections that define the network and what it was trained for.
MODEL_SECTIONS = ("model", "diffusion")
RUN_CONFIG = "config.json"  # WORKDIR/config.json: the config a run trains with
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
_PREFIX = "params/"


class WeightsError(ValueError):
  """A weights file is missing, unreadable or does not fit its config."""


def save(path: str, params: Any, config: ml_collections.ConfigDict,
         step: int, source: str, dtype: str = "float32") -> dict:
  """Writes `params` (a pytree of arrays) and `config` to `path` (.npz).

  Returns the metadata written. Written to a temporary name first and
  renamed, so an interrupted export never leaves a partial file at `path`.
  """
  if dtype not in STORAGE_DTYPES:
    raise WeightsError(f"dtype={dtype}: expected one of "
                       f"{', '.join(STORAGE_DTYPES)}")
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  arrays, bfloat16_names = {}, []
  for name, value in flat.items():
    value = np.asarray(value, np.float32).astype(jax.numpy.dtype(dtype))
    if dtype == "bfloat16":
      value = value.view(np.uint16)
      bfloat16_names.append(name)
    arrays[_PREFIX + name] = value
  meta = {"format": FORMAT, "step": int(step), "source": source,
          "dtype": dtype, "bfloat16_names": bfloat16_names,
          "num_params": int(sum(v.size for v in arrays.values())),
          "config": json.loads(config.to_json_best_effort())}
  arrays["ffc_ddpm"] = np.array(json.dumps(meta))
  with files.atomic_write(path, "wb") as f:
    np.savez(f, **arrays)
  return meta


def load(path: str) -> tuple[dict, dict]:
  """(metadata, params as a nested dict of float32 NumPy arrays) of a
  weights file; one-line `WeightsError`s for anything else."""
  arrays = _read(path)
  meta = _metadata(arrays.pop("ffc_ddpm", None), path)
  bfloat16_names = set(meta["bfloat16_names"])
  flat = {}
  for key, value in arrays.items():
    if not key.startswith(_PREFIX):
      raise WeightsError(f"--weights={path}: unexpected entry {key!r}")
    name = key[len(_PREFIX):]
    if name in bfloat16_names:
      value = value.view(jax.numpy.bfloat16)
    flat[name] = value.astype(np.float32)
  return meta, traverse_util.unflatten_dict(flat, sep="/")


def read_metadata(path: str) -> dict:
  """The metadata of a weights file (its config, step, ...), without
  reading the parameters."""
  return _metadata(_read(path, only="ffc_ddpm").get("ffc_ddpm"), path)


def _read(path: str, only: str | None = None) -> dict[str, np.ndarray]:
  """The arrays of an .npz (or just entry `only`), with one-line errors."""
  if not os.path.isfile(path):
    raise WeightsError(f"--weights={path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as stored:
      names = [n for n in stored.files if only is None or n == only]
      return {name: stored[name] for name in names}
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(f"--weights={path}: not a weights file (an .npz "
                       f"written by tools/export_weights.py): {e}") from None


def _metadata(entry: np.ndarray | None, path: str) -> dict:
  """The `ffc_ddpm` entry's JSON, checked for what `load` needs."""
  problem = "it has no 'ffc_ddpm' entry"
  if entry is not None:
    try:
      meta = json.loads(str(entry))
      missing = [k for k in ("format", "step", "source", "bfloat16_names",
                             "config") if k not in meta]
      problem = (f"its format is {meta.get('format')!r}, expected {FORMAT!r}"
                 if meta.get("format") != FORMAT else
                 f"its metadata lacks {', '.join(missing)}" if missing else "")
    except (ValueError, AttributeError) as e:
      problem = f"its metadata is not JSON ({e})"
    if not problem:
      return meta
  raise WeightsError(f"--weights={path}: not a weights file of ffc_ddpm: "
                     f"{problem}")


def _as_field(value, current):
  """A JSON value in the type of the config field it replaces (JSON has
  lists where configs have tuples, and may write 1.0 as 1)."""
  if isinstance(value, list) and isinstance(current, tuple):
    return tuple(value)
  if isinstance(value, int) and isinstance(current, float):
    return float(value)
  return value


def _leaves(stored: dict, prefix: str):
  """(dotted name, value) of every field of a stored config section."""
  for field, value in stored.items():
    if isinstance(value, dict):
      yield from _leaves(value, f"{prefix}{field}.")
    else:
      yield f"{prefix}{field}", value


def model_config(config: ml_collections.ConfigDict, meta: dict,
                 path: str) -> tuple[ml_collections.ConfigDict, list[str]]:
  """`config` with the model sections and image size of the weights file;
  also returns the fields whose value changed ('model.model_channels: 128
  -> 32'), so that a --config that differs can be reported."""
  return _with_model_of(config, meta["config"], f"--weights={path}")


def file_config(path: str, config: ml_collections.ConfigDict | None = None
                ) -> ml_collections.ConfigDict:
  """The config to run weights file `path` with: `config` with the file's
  model (`model_config`), or without `config` the whole config the file
  was trained with (its sampler, steps and seed are the released
  defaults) on configs/default.py."""
  meta = read_metadata(path)
  if config is None:
    from ffc_ddpm import configuration  # pylint: disable=g-import-not-at-top
    return with_fields(configuration.default_config(),
                       list(_leaves(meta["config"], "")),
                       f"--weights={path}")[0]
  return model_config(config, meta, path)[0]


def run_model_config(config: ml_collections.ConfigDict, workdir: str
                     ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """`config` with the model sections and image size of the training run
  in `workdir` (its RUN_CONFIG, as `model_config` does for a weights file),
  so a run trained with overrides is scored and sampled with them; also
  the fields that changed. Unchanged when the workdir has no RUN_CONFIG (a
  converted checkpoint)."""
  path = os.path.join(workdir, RUN_CONFIG)
  if not os.path.isfile(path):
    return config, []
  try:
    with open(path) as f:
      stored = json.load(f)
    sections = {s: stored[s] for s in MODEL_SECTIONS + ("data",)}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise WeightsError(f"{path}: not a readable run config ({e})") from None
  return _with_model_of(config, sections, path)


def _with_model_of(config: ml_collections.ConfigDict, stored: dict,
                   source: str) -> tuple[ml_collections.ConfigDict, list[str]]:
  updates = [("data.image_size", stored["data"]["image_size"])]
  for section in MODEL_SECTIONS:
    updates += list(_leaves(stored[section], f"{section}."))
  return with_fields(config, updates, source)


def with_fields(config: ml_collections.ConfigDict, updates, source: str
                ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """A copy of `config` with each (dotted name, JSON value) of `updates`;
  returns it and the changes ('name: old -> new'). `source` names where
  the values come from in the error for a field `config` lacks."""
  config = copy.deepcopy(config)  # keeps model.image_size's reference
  changed = []
  for name, value in updates:
    *sections, field = name.split(".")
    parent = config
    for part in sections:
      parent = parent[part]
    if field not in parent:
      raise WeightsError(f"{source}: its config has {name}, which this "
                         "version of ffc_ddpm does not know")
    value = _as_field(value, parent[field])
    if value != parent[field]:
      changed.append(f"{name}: {parent[field]!r} -> {value!r}")
      parent[field] = value
  return config, changed


def config_from_json(base: ml_collections.ConfigDict, path: str
                     ) -> ml_collections.ConfigDict:
  """A config saved as JSON (WORKDIR/config.json of a training run) as a
  ConfigDict: `base` (configs/default.py) with every saved field."""
  with open(path) as f:
    stored = json.load(f)
  return with_fields(base, list(_leaves(stored, "")), path)[0]


def check_shapes(params: dict, expected: Any, path: str) -> None:
  """Every parameter of `expected` (shapes) present in `params` with its
  shape, and nothing else."""
  want = traverse_util.flatten_dict(expected, sep="/")
  have = traverse_util.flatten_dict(params, sep="/")
  for name in sorted(set(want) | set(have)):
    if name not in have:
      raise WeightsError(f"--weights={path}: no parameter {name}")
    if name not in want:
      raise WeightsError(f"--weights={path}: parameter {name} is not in the "
                         "network its config describes")
    if have[name].shape != tuple(want[name].shape):
      raise WeightsError(f"--weights={path}: {name} has shape "
                         f"{have[name].shape}, the network needs "
                         f"{tuple(want[name].shape)}")
