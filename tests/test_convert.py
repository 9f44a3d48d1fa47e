"""guided-diffusion checkpoints load into our U-Net with PyTorch's outputs."""

import json
import math
import pathlib
import sys

import jax
import numpy as np
import pytest

from ffc_ddpm import configuration, convert, models

sys.path.insert(0, str(pathlib.Path(__file__).parent / "models"))
import gd_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

FIXTURES = ("repaint_like", "plain_neworder")
# Correctness, not speed, is under test: skip XLA's slow CPU optimisations.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
DEFAULT_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "default.py"


def fixture(shared_dir, name):
  folder = shared_dir / "reference" / "guided_diffusion"
  kwargs = json.loads((folder / f"{name}.json").read_text())
  with np.load(folder / f"{name}_io.npz") as io:
    return kwargs, folder / f"{name}_state.npz", dict(io)


def ours(kwargs, state_dict, x_nchw, t, y=None):
  """Our converted model's output on guided-diffusion's inputs, NCHW."""
  model_config = convert.model_config_from_guided_diffusion(kwargs)
  params = convert.params_from_guided_diffusion(state_dict, model_config)
  model = models.create_model(model_config)
  apply = jax.jit(model.apply, compiler_options=FAST_COMPILE)
  out = apply({"params": params}, x_nchw.transpose(0, 2, 3, 1), t, y=y)
  return np.asarray(out).transpose(0, 3, 1, 2)


def assert_close(out, ref, rtol=1e-4):
  assert out.shape == ref.shape
  error = np.abs(out - ref).max() / np.abs(ref).max()
  assert error <= rtol, f"max|diff| / max|ref| = {error:.2e}"


# ------------------------------------------------------- PyTorch fixtures
@pytest.mark.parametrize("name", FIXTURES)
def test_matches_pytorch_on_fixtures(shared_dir, name):
  kwargs, state_path, io = fixture(shared_dir, name)
  state_dict = convert.load_state_dict(state_path)
  out = ours(kwargs, state_dict, io["x_nchw"], io["t"])
  assert_close(out, io["y_nchw"])


@pytest.mark.parametrize("name", FIXTURES)
def test_numpy_reference_matches_pytorch(shared_dir, name):
  """The reference used for other layouts below is itself PyTorch's."""
  kwargs, state_path, io = fixture(shared_dir, name)
  state_dict = convert.load_state_dict(state_path)
  shapes = gd_reference.state_shapes(kwargs)
  assert shapes == {k: v.shape for k, v in state_dict.items()}
  ref = gd_reference.forward(state_dict, kwargs, io["x_nchw"], io["t"])
  assert_close(ref, io["y_nchw"], rtol=1e-5)


# --------------------------------------------------------- other layouts
# Options the fixtures leave out: class labels, heads by count with more
# heads when upsampling, attention at full resolution, the legacy qkv order
# with heads by count, scale-shift norm with conv resampling.
LAYOUT = dict(image_size=16, num_channels=32, num_res_blocks=1,
              channel_mult="1,2", attention_resolutions="16,8", num_heads=2,
              num_heads_upsample=4, use_scale_shift_norm=True,
              learn_sigma=True, class_cond=True)


def test_matches_reference_on_another_layout():
  state_dict = gd_reference.random_state_dict(LAYOUT, seed=1)
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
  t, y = np.array([5, 800]), np.array([3, 997])
  ref = gd_reference.forward(state_dict, LAYOUT, x, t, y)
  assert_close(ours(LAYOUT, state_dict, x, t, y), ref)


def test_repaint_celebahq_parameter_count():
  """RePaint's celeba256 layout has guided-diffusion's 552,814,086 weights."""
  kwargs = dict(image_size=256, num_channels=256, num_res_blocks=2,
                attention_resolutions="32,16,8", num_heads=4,
                num_head_channels=64, learn_sigma=True, resblock_updown=True,
                use_scale_shift_norm=True, channel_mult="")
  model_config = convert.model_config_from_guided_diffusion(kwargs)
  model = models.create_model(model_config)
  shapes = jax.eval_shape(
      lambda: models.init_params(model, model_config, jax.random.key(0)))
  count = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
  assert count == 552_814_086
  reference = sum(math.prod(s)
                  for s in gd_reference.state_shapes(kwargs).values())
  assert count == reference


# ----------------------------------------------------------- model config
def config_keys(config, prefix=""):
  keys = set()
  for key, value in config.items():
    keys.add(prefix + key)
    if hasattr(value, "items"):
      keys |= config_keys(value, prefix + key + ".")
  return keys


def test_model_config_has_exactly_the_default_fields(shared_dir):
  kwargs, _, _ = fixture(shared_dir, "repaint_like")
  model_config = convert.model_config_from_guided_diffusion(kwargs)
  default = configuration.load_config(str(DEFAULT_CONFIG)).model
  assert config_keys(model_config) == config_keys(default)


def test_model_config_values(shared_dir):
  kwargs, _, _ = fixture(shared_dir, "repaint_like")
  c = convert.model_config_from_guided_diffusion(kwargs)
  assert (c.image_size, c.in_channels, c.out_channels) == (64, 3, 3)
  assert (c.model_channels, c.num_res_blocks, c.channel_mult) == (32, 1, ())
  assert c.attention_resolutions == (16, 8)
  assert (c.num_heads, c.num_head_channels, c.num_heads_upsample) == (
      4, 16, -1)
  assert c.learn_sigma and c.resblock_updown and c.use_scale_shift_norm
  assert not c.use_new_attention_order and c.conv_resample
  assert (c.num_classes, c.noise_conditioning, c.dtype) == (
      0, "timestep", "float32")
  assert not c.ffc.enabled and not c.remat


def test_model_config_translates_options():
  base = dict(image_size=32, num_channels=32, num_res_blocks=1,
              channel_mult="1,2")
  convert_ = convert.model_config_from_guided_diffusion
  assert convert_({**base, "use_fp16": True}).dtype == "bfloat16"
  assert convert_({**base, "use_checkpoint": True}).remat
  assert convert_({**base, "class_cond": True}).num_classes == 1000
  assert convert_(base).channel_mult == (1, 2)
  # YAML reads "16" as an int; unreachable resolutions are ignored by
  # guided-diffusion (ds 4 at 32x32 with 2 levels) and dropped here.
  assert convert_({**base, "attention_resolutions": 16}) \
      .attention_resolutions == (16,)
  assert convert_({**base, "attention_resolutions": "32,16,8"}) \
      .attention_resolutions == (32, 16)
  # 64 // 24 = 2: guided-diffusion attends at 32x32.
  assert convert_(dict(image_size=64, num_channels=32, num_res_blocks=1,
                       attention_resolutions="24")) \
      .attention_resolutions == (32,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=32, num_channels=32, num_res_blocks=1,
          diffusion_steps=1000), "diffusion_steps"),
    (dict(image_size=32, num_channels=32), "num_res_blocks"),
    (dict(image_size=48, num_channels=32, num_res_blocks=1), "image_size"),
    (dict(image_size=32, num_channels=32, num_res_blocks=1,
          channel_mult="1,x"), "channel_mult"),
    (dict(image_size=32, num_channels=32, num_res_blocks=1,
          channel_mult="1,2", attention_resolutions="16,0"),
     "attention_resolutions"),
])
def test_model_config_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    convert.model_config_from_guided_diffusion(kwargs)


# ---------------------------------------------------------- param errors
@pytest.fixture(scope="module")
def plain(shared_dir):
  kwargs, state_path, _ = fixture(shared_dir, "plain_neworder")
  return (convert.model_config_from_guided_diffusion(kwargs),
          convert.load_state_dict(state_path))


def test_params_tree_and_layouts(plain):
  model_config, state_dict = plain
  params = convert.params_from_guided_diffusion(state_dict, model_config)
  conv = state_dict["input_blocks.1.0.in_layers.2.weight"]
  np.testing.assert_array_equal(
      params["input_blocks_1_0"]["in_conv"]["kernel"][1, 2],
      conv[:, :, 1, 2].T)
  qkv = state_dict["middle_block.1.qkv.weight"]
  np.testing.assert_array_equal(params["middle_block_1"]["qkv"]["kernel"],
                                qkv[:, :, 0].T)
  np.testing.assert_array_equal(params["time_embed_1"]["kernel"],
                                state_dict["time_embed.2.weight"].T)
  np.testing.assert_array_equal(params["out_norm"]["scale"],
                                state_dict["out.0.weight"])
  leaves = jax.tree.leaves(params)
  assert len(leaves) == len(state_dict)
  assert all(leaf.dtype == np.float32 for leaf in leaves)


def test_params_reject_unknown_key(plain):
  model_config, state_dict = plain
  bad = {**state_dict, "input_blocks.1.0.extra.weight": np.zeros(3)}
  with pytest.raises(ValueError, match=r"input_blocks\.1\.0\.extra\.weight"):
    convert.params_from_guided_diffusion(bad, model_config)
  bad = {**state_dict, "input_blocks.9.0.in_layers.0.weight": np.zeros(3)}
  with pytest.raises(ValueError, match=r"input_blocks\.9\.0"):
    convert.params_from_guided_diffusion(bad, model_config)


def test_params_reject_missing_key(plain):
  model_config, state_dict = plain
  bad = dict(state_dict)
  del bad["output_blocks.2.1.conv.weight"]
  with pytest.raises(ValueError, match=r"lacks 1 .*output_blocks_2_1/conv"):
    convert.params_from_guided_diffusion(bad, model_config)


def test_params_reject_wrong_shape(plain):
  model_config, state_dict = plain
  bad = {**state_dict, "out.2.weight": np.zeros((6, 32, 3, 3), np.float32)}
  with pytest.raises(ValueError, match=r"'out\.2\.weight' has shape "
                     r"\(6, 32, 3, 3\)"):
    convert.params_from_guided_diffusion(bad, model_config)


def test_params_need_ffc_off(plain):
  model_config, state_dict = plain
  model_config = model_config.copy_and_resolve_references()
  model_config.ffc.enabled = True
  with pytest.raises(ValueError, match="model.ffc.enabled"):
    convert.params_from_guided_diffusion(state_dict, model_config)


# ------------------------------------------------------------------ files
def test_load_state_dict_reads_npz(shared_dir):
  _, state_path, _ = fixture(shared_dir, "plain_neworder")
  loaded = convert.load_state_dict(state_path)
  with np.load(state_path) as raw:
    assert sorted(loaded) == sorted(raw.files)
    for name in raw.files:
      np.testing.assert_array_equal(loaded[name], raw[name])


def test_load_state_dict_without_torch_says_how(shared_dir, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
  path = shared_dir / "reference" / "guided_diffusion" / "plain_neworder.pt"
  with pytest.raises(ImportError, match="pip install torch"):
    convert.load_state_dict(path)


def test_load_state_dict_rejects_bad_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.pt"):
    convert.load_state_dict(tmp_path / "missing.pt")
  (tmp_path / "weights.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="weights.h5"):
    convert.load_state_dict(tmp_path / "weights.h5")
