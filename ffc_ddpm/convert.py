"""PyTorch guided-diffusion (and RePaint) checkpoints -> ffc_ddpm parameters.

guided-diffusion's state-dict keys are module paths
(`input_blocks.3.0.in_layers.2.weight`); `ffc_ddpm.models.UNet` mirrors them
(`input_blocks_3_0/in_conv/kernel`), so every key maps to one parameter:
- block indices: `input_blocks.i.j` -> `input_blocks_i_j`, `middle_block.j` ->
  `middle_block_j`, `output_blocks.i.j` -> `output_blocks_i_j`;
- sub-modules renamed after what they are (`SUBMODULES`);
- layouts: conv OIHW -> HWIO; linear [out, in] -> [in, out]; the attention's
  1-D convs [out, in, 1] -> dense [in, out]; GroupNorm weight -> scale; the
  label embedding as it is.
Every key must be used and every parameter filled, with matching shapes.

Typical use (RePaint's CelebA-HQ model, `confs/face_example.yml`):
    kwargs = {k: v for k, v in yml.items() if k in CREATE_MODEL_DEFAULTS}
    model_config = model_config_from_guided_diffusion(kwargs)
    params = params_from_guided_diffusion(
        load_state_dict("celeba256_250000.pt"), model_config)
"""

import os
import pprint
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from ffc_ddpm import models
from ffc_ddpm.models import unet

# guided-diffusion's script_util.create_model signature: name -> default
# (None: required).
CREATE_MODEL_DEFAULTS = {
    "image_size": None,
    "num_channels": None,
    "num_res_blocks": None,
    "channel_mult": "",
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "16",
    "num_heads": 1,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": False,
    "dropout": 0.0,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
}
NUM_CLASSES = 1000  # guided-diffusion's class_cond models are ImageNet's

# PyTorch module path (below a block, or at the top) -> our module name.
SUBMODULES = {
    "": (),  # the input conv, input_blocks.0.0 itself
    "in_layers.0": ("in_norm",),
    "in_layers.2": ("in_conv",),
    "emb_layers.1": ("emb_proj",),
    "out_layers.0": ("out_norm",),
    "out_layers.3": ("out_conv",),
    "skip_connection": ("skip",),
    "norm": ("norm",),
    "qkv": ("qkv",),
    "proj_out": ("proj_out",),
    "op": ("conv",),  # Downsample
    "conv": ("conv",),  # Upsample
}
TOP_MODULES = {
    "time_embed.0": ("time_embed_0",),
    "time_embed.2": ("time_embed_1",),
    "label_emb": ("label_emb",),
    "out.0": ("out_norm",),
    "out.2": ("out_conv",),
}


# ------------------------------------------------------------------ config
def parse_ints(value: Any, field: str) -> tuple[int, ...]:
  """A comma string ("32,16,8"; "" = none), an int or a list -> ints."""
  if isinstance(value, str):
    items = [v for v in value.split(",") if v.strip()]
  elif isinstance(value, (int, float)):
    items = [value]
  else:
    items = list(value)
  try:
    return tuple(int(v) for v in items)
  except (TypeError, ValueError):
    raise ValueError(f"create_model argument {field}={value!r}: expected "
                     f"integers separated by commas") from None


def attention_resolutions(value: Any, image_size: int,
                          levels: int) -> tuple[int, ...]:
  """The resolutions where guided-diffusion really puts attention.

  It attends at downsample rate image_size // res; rates the network never
  reaches are silently ignored there, so they are dropped here.
  """
  resolutions = parse_ints(value, "attention_resolutions")
  if any(res <= 0 for res in resolutions):
    raise ValueError(f"create_model argument attention_resolutions={value!r}:"
                     f" expected positive resolutions")
  reachable = {2 ** level for level in range(levels)}
  rates = {image_size // res for res in resolutions}
  return tuple(sorted((image_size // ds for ds in rates & reachable),
                      reverse=True))


def model_config_from_guided_diffusion(
    kwargs: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """`config.model` for guided-diffusion's `create_model(**kwargs)`.

  An unconditional 3-channel eps model on integer timesteps, FFC off;
  channel_mult "" stays () (guided-diffusion's default for the image size).
  `use_fp16` becomes bfloat16 compute and `use_checkpoint` rematerialisation,
  their JAX counterparts.
  """
  unknown = sorted(set(kwargs) - set(CREATE_MODEL_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown create_model argument(s) {unknown}; expected "
                     f"some of {sorted(CREATE_MODEL_DEFAULTS)}")
  args = {**CREATE_MODEL_DEFAULTS, **kwargs}
  missing = sorted(k for k, v in args.items() if v is None)
  if missing:
    raise ValueError(f"create_model argument(s) {missing} are required")
  image_size = int(args["image_size"])
  channel_mult = parse_ints(args["channel_mult"], "channel_mult")
  levels = len(channel_mult or unet.default_channel_mult(image_size))
  return ml_collections.ConfigDict({
      "image_size": image_size,
      "in_channels": 3,
      "out_channels": 3,
      "model_channels": int(args["num_channels"]),
      "channel_mult": channel_mult,
      "num_res_blocks": int(args["num_res_blocks"]),
      "attention_resolutions": attention_resolutions(
          args["attention_resolutions"], image_size, levels),
      "num_heads": int(args["num_heads"]),
      "num_head_channels": int(args["num_head_channels"]),
      "num_heads_upsample": int(args["num_heads_upsample"]),
      "use_new_attention_order": bool(args["use_new_attention_order"]),
      "use_scale_shift_norm": bool(args["use_scale_shift_norm"]),
      "resblock_updown": bool(args["resblock_updown"]),
      "conv_resample": True,
      "dropout": float(args["dropout"]),
      "learn_sigma": bool(args["learn_sigma"]),
      "num_classes": NUM_CLASSES if args["class_cond"] else 0,
      "noise_conditioning": "timestep",
      "noise_level_scale": 1000.0,
      "dtype": "bfloat16" if args["use_fp16"] else "float32",
      "remat": bool(args["use_checkpoint"]),
      "ffc": {
          "enabled": False,
          "num_blocks": 2,
          "decoder_blocks": 0,
          "ratio_gin": 0.75,
          "ratio_gout": 0.75,
          "enable_lfu": False,
      },
  })


# ------------------------------------------------------------------ params
def module_path(key: str) -> tuple[tuple[str, ...], str]:
  """(our module path, 'weight' | 'bias') for a guided-diffusion key."""
  parts = key.split(".")
  if parts[0] in ("input_blocks", "output_blocks") and len(parts) >= 4:
    block, rest, table = ("_".join(parts[:3]),), parts[3:], SUBMODULES
  elif parts[0] == "middle_block" and len(parts) >= 3:
    block, rest, table = ("_".join(parts[:2]),), parts[2:], SUBMODULES
  else:
    block, rest, table = (), parts, TOP_MODULES
  module, leaf = ".".join(rest[:-1]), rest[-1]
  if module not in table or leaf not in ("weight", "bias"):
    raise ValueError(f"state dict key {key!r} is not a parameter of "
                     f"guided-diffusion's UNetModel")
  return block + table[module], leaf


def convert_entry(key: str,
                  array: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
  """(our parameter path, the array in our layout) for one state-dict entry."""
  module, leaf = module_path(key)
  if leaf == "bias":
    return module + ("bias",), array
  if module[-1] == "label_emb":
    return module + ("embedding",), array
  if array.ndim == 1:  # GroupNorm
    return module + ("scale",), array
  if array.ndim == 4:  # conv OIHW -> HWIO
    return module + ("kernel",), array.transpose(2, 3, 1, 0)
  # linear [out, in] and 1-D conv [out, in, 1] -> dense [in, out]
  return module + ("kernel",), array.reshape(array.shape[0], -1).T


def params_from_guided_diffusion(state_dict: Mapping[str, Any],
                                 model_config) -> dict:
  """guided-diffusion state dict (name -> array) -> our float32 params tree.

  `model_config` is `config.model` (from `model_config_from_guided_diffusion`
  or compatible). Raises ValueError naming the key for an unknown key, a shape
  mismatch or a parameter the state dict lacks.
  """
  if model_config.ffc.enabled:
    raise ValueError("model.ffc.enabled must be False to import a "
                     "guided-diffusion checkpoint: it has no FFC blocks")
  model = models.create_model(model_config)
  expected = traverse_util.flatten_dict(jax.eval_shape(
      lambda: models.init_params(model, model_config, jax.random.key(0))))
  params = {}
  for key, value in state_dict.items():
    path, array = convert_entry(key, np.asarray(value, dtype=np.float32))
    if path not in expected:
      raise ValueError(f"state dict key {key!r} (our {'/'.join(path)}) has "
                       f"no counterpart in this model config")
    if array.shape != expected[path].shape:
      raise ValueError(
          f"state dict key {key!r} has shape {np.shape(value)}; this model "
          f"config needs {expected[path].shape} (our layout) for "
          f"{'/'.join(path)}")
    params[path] = np.ascontiguousarray(array)
  missing = sorted("/".join(p) for p in set(expected) - set(params))
  if missing:
    raise ValueError(f"the state dict lacks {len(missing)} parameter(s) this "
                     f"model config needs, e.g. {missing[:5]}")
  return traverse_util.unflatten_dict(params)


# -------------------------------------------------------------------- files
def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """name -> array from a PyTorch `.pt`/`.pth` state dict or an `.npz`.

  `.pt` files need PyTorch (an optional dependency, imported only here).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if path.endswith(".npz"):
    with np.load(path) as arrays:
      return {name: arrays[name] for name in arrays.files}
  if path.endswith((".pt", ".pth")):
    return load_torch_state_dict(path)
  raise ValueError(f"checkpoint {path}: expected a PyTorch .pt/.pth state "
                   f"dict or an .npz of arrays")


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError(
        f"reading {path} needs PyTorch (pip install torch), or save its "
        f"state dict as .npz elsewhere and load that") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in state.values()):
    raise ValueError(f"checkpoint {path} is not a state dict (a mapping of "
                     f"parameter names to tensors)")
  return {name: tensor.detach().float().numpy() if tensor.is_floating_point()
          else tensor.numpy() for name, tensor in state.items()}


# ------------------------------------------------------------ whole config
# guided-diffusion's diffusion arguments we honour, with its defaults; RePaint
# adds `schedule_jump_params` (t_T, jump_length, jump_n_sample).
DIFFUSION_DEFAULTS = {
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "timestep_respacing": "",
    "schedule_jump_params": None,
}
_SCHEDULES = {"linear": "scaled_linear", "cosine": "cosine"}


def config_from_guided_diffusion(base: ml_collections.ConfigDict,
                                 flags: Mapping[str, Any]
                                 ) -> ml_collections.ConfigDict:
  """A whole ffc_ddpm config for a guided-diffusion / RePaint model.

  `flags` are guided-diffusion's command-line flags (or a RePaint yml):
  model arguments plus `diffusion_steps`, `noise_schedule`,
  `timestep_respacing` and RePaint's `schedule_jump_params`; other keys are
  ignored. The model is unconditional, so inpainting uses RePaint sampling
  (250 steps with 10 x 10 jumps unless the flags say otherwise).
  """
  model = model_config_from_guided_diffusion(
      {k: v for k, v in flags.items() if k in CREATE_MODEL_DEFAULTS})
  diff = {**DIFFUSION_DEFAULTS,
          **{k: v for k, v in flags.items() if k in DIFFUSION_DEFAULTS}}
  if diff["noise_schedule"] not in _SCHEDULES:
    raise ValueError(f"noise_schedule={diff['noise_schedule']!r}: expected "
                     f"one of {', '.join(_SCHEDULES)}")
  jumps = diff["schedule_jump_params"] or {}
  respacing = str(diff["timestep_respacing"] or "").removeprefix("ddim")
  num_steps = int(diff["diffusion_steps"])
  sampling_steps = int(jumps.get("t_T") or respacing or min(250, num_steps))

  config = ml_collections.ConfigDict(base.to_dict())
  config.data.image_size = model.image_size
  config.model = model
  config.diffusion.schedule = _SCHEDULES[diff["noise_schedule"]]
  config.diffusion.num_steps = num_steps
  config.diffusion.conditioning = "none"
  config.diffusion.loss_region = "full"
  config.eval.sampler = "repaint"
  config.eval.num_steps = sampling_steps
  config.eval.eta = 0.0
  config.eval.jump_length = int(jumps.get("jump_length", 10))
  config.eval.jump_n_sample = int(jumps.get("jump_n_sample", 10))
  return config


def config_file_text(config: ml_collections.ConfigDict, source: str) -> str:
  """A config file (`get_config()`) that reproduces `config` exactly."""
  body = pprint.pformat(config.to_dict(), indent=2, width=76, sort_dicts=False)
  body = "\n".join("      " + line for line in body.splitlines())
  return (f'"""ffc_ddpm config of a model converted from {source}.\n\n'
          "Written by tools/convert_guided_diffusion.py; edit it freely.\n"
          '"""\n\nimport ml_collections\n\n\ndef get_config():\n'
          f"  return ml_collections.ConfigDict(\n{body})\n")
