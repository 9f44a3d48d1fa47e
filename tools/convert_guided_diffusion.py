"""Converts a guided-diffusion / RePaint PyTorch checkpoint for ffc_ddpm.

  python tools/convert_guided_diffusion.py --checkpoint=celeba256_250000.pt \
      --model_flags=face_example.yml --workdir=runs/repaint_celeba

reads the state dict (`.pt` through torch, or an `.npz` of the same arrays),
checks every weight against the network the flags describe, and writes
WORKDIR/checkpoints (orbax, the weights as `params`) and WORKDIR/config.py.
Then: python -m ffc_ddpm.main --mode=inpaint --config=WORKDIR/config.py
--workdir=WORKDIR --image=face.png --mask=center --output=filled.png

--model_flags is a JSON object, or a .json / .yml / .yaml file, of
guided-diffusion's flags (image_size, num_channels, ..., diffusion_steps,
noise_schedule, timestep_respacing; RePaint's schedule_jump_params).
"""

import json
import os
import pathlib
import sys

from absl import app
from absl import flags
import yaml

from ffc_ddpm import checkpoint, configuration, convert

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "guided-diffusion state dict (.pt, .pth or .npz).",
    required=True)
_MODEL_FLAGS = flags.DEFINE_string(
    "model_flags", None, "JSON object or .json/.yml file of the model's flags.",
    required=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where to write checkpoints/ and config.py.",
    required=True)
_STEP = flags.DEFINE_integer("step", 0, "Step number to store it under.")

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"


def read_model_flags(value: str) -> dict:
  """--model_flags: inline JSON, or a JSON / YAML file."""
  if os.path.isfile(value):
    with open(value) as f:
      text = f.read()
    flags_ = (yaml.safe_load(text) if value.endswith((".yml", ".yaml"))
              else json.loads(text))
  else:
    try:
      flags_ = json.loads(value)
    except json.JSONDecodeError as e:
      raise ValueError(f"--model_flags: neither a file nor JSON ({e})") from None
  if not isinstance(flags_, dict):
    raise ValueError("--model_flags: expected a mapping of flag names to values")
  return flags_


def convert_checkpoint(checkpoint_path: str, model_flags: dict, workdir: str,
                       step: int = 0) -> str:
  """Writes WORKDIR/checkpoints/STEP and WORKDIR/config.py; returns the latter."""
  base = configuration.load_config(str(DEFAULT_CONFIG))
  config = configuration.validate(
      convert.config_from_guided_diffusion(base, model_flags))
  params = convert.params_from_guided_diffusion(
      convert.load_state_dict(checkpoint_path), config.model)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(step, {"params": params},
            {"step": step, "converted_from": os.path.basename(checkpoint_path)})
  ckpt.wait()
  ckpt.close()
  config_path = os.path.join(workdir, "config.py")
  with open(config_path, "w") as f:
    f.write(convert.config_file_text(config, os.path.basename(checkpoint_path)))
  return config_path


def main(argv):
  del argv
  try:
    config_path = convert_checkpoint(_CHECKPOINT.value,
                                     read_model_flags(_MODEL_FLAGS.value),
                                     _WORKDIR.value, _STEP.value)
  except (ValueError, OSError, KeyError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(f"Wrote {config_path} and {checkpoint.checkpoint_dir(_WORKDIR.value)}.\n"
        f"Inpaint: python -m ffc_ddpm.main --mode=inpaint --config={config_path} "
        f"--workdir={_WORKDIR.value} --image=IMAGE --mask=center --output=OUT.png")


if __name__ == "__main__":
  app.run(main)
