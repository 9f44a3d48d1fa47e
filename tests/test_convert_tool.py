"""tools/convert_guided_diffusion.py: a PyTorch checkpoint becomes a workdir
that eval, inpaint and sample load, giving PyTorch's outputs."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ffc_ddpm import configuration, convert, inference, parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import convert_guided_diffusion as tool  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def converted(shared_dir, tmp_path_factory):
  folder = shared_dir / "reference" / "guided_diffusion"
  workdir = tmp_path_factory.mktemp("repaint_like")
  flags = json.loads((folder / "repaint_like.json").read_text())
  flags["schedule_jump_params"] = {"t_T": 250, "jump_length": 10,
                                   "jump_n_sample": 10}
  config_path = tool.convert_checkpoint(
      str(folder / "repaint_like_state.npz"), flags, str(workdir), step=7)
  return folder, workdir, config_path


def test_written_config_describes_repaint_sampling(converted):
  _, _, config_path = converted
  config = configuration.validate(configuration.load_config(config_path))
  assert config.diffusion.conditioning == "none"
  assert config.diffusion.schedule == "scaled_linear"
  assert config.diffusion.num_steps == 1000
  assert (config.eval.sampler, config.eval.num_steps, config.eval.jump_length,
          config.eval.jump_n_sample) == ("repaint", 250, 10, 10)
  assert config.model.learn_sigma and not config.model.ffc.enabled
  assert config.data.image_size == config.model.image_size == 64


def test_loaded_checkpoint_gives_pytorch_outputs(converted):
  folder, workdir, config_path = converted
  config = configuration.load_config(config_path)
  mesh = parallel.create_mesh()
  model, params, step, item = inference.load_weights(config, str(workdir), mesh)
  assert (step, item) == (7, "params")  # no EMA: the raw weights are used
  with np.load(folder / "repaint_like_io.npz") as io:
    apply = jax.jit(model.apply,
                    compiler_options={"xla_backend_optimization_level": 0})
    out = apply({"params": params}, io["x_nchw"].transpose(0, 2, 3, 1),
                io["t"].astype(np.float32))
    ref = io["y_nchw"].transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(out) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_model_flags_from_yaml_and_inline_json(tmp_path):
  yml = tmp_path / "face.yml"
  yml.write_text("image_size: 256\nnum_channels: 256\nmodel_path: x.pt\n"
                 "schedule_jump_params:\n  t_T: 250\n  jump_length: 10\n")
  assert tool.read_model_flags(str(yml))["schedule_jump_params"]["t_T"] == 250
  assert tool.read_model_flags('{"image_size": 64}') == {"image_size": 64}
  with pytest.raises(ValueError, match="--model_flags"):
    tool.read_model_flags("{not json")


def test_respacing_and_schedule_flags_are_honoured():
  base = configuration.load_config(str(ROOT / "configs" / "default.py"))
  flags = {"image_size": 64, "num_channels": 32, "num_res_blocks": 1,
           "noise_schedule": "cosine", "diffusion_steps": 400,
           "timestep_respacing": "ddim25"}
  config = convert.config_from_guided_diffusion(base, flags)
  assert (config.diffusion.schedule, config.diffusion.num_steps,
          config.eval.num_steps) == ("cosine", 400, 25)
  with pytest.raises(ValueError, match="noise_schedule='sqrt'"):
    convert.config_from_guided_diffusion(base, {**flags,
                                                "noise_schedule": "sqrt"})


def test_mismatched_flags_end_in_one_line(shared_dir, tmp_path):
  folder = shared_dir / "reference" / "guided_diffusion"
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "convert_guided_diffusion.py"),
       f"--checkpoint={folder / 'repaint_like_state.npz'}",
       f"--model_flags={folder / 'plain_neworder.json'}",
       f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "input_blocks" in last, last
  assert not (tmp_path / "config.py").exists()
