"""Configs load, validate, and name the field when a value is wrong."""

import os
import pathlib

import pytest

from ffc_ddpm import configuration, weights

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def load(name):
  return configuration.load_config(str(CONFIGS / f"{name}.py"))


@pytest.mark.parametrize("name", ["default", "demo", "test"])
def test_embedded_configs_validate(name):
  configuration.validate(load(name))


@pytest.mark.parametrize("name", ["celebahq", "celebahq_noffc", "celeba64"])
def test_real_face_configs_need_the_data_path_to_train_not_to_inpaint(
    name, tmp_path):
  """Training and evaluation read data.path; inpainting users' photos with a
  released model (`--weights`) does not, so validation lets it be empty."""
  config = configuration.validate(load(name))
  with pytest.raises(configuration.ConfigError,
                     match=r"config\.data\.path='': expected the location"):
    configuration.check_data_path(config)
  config.data.path = str(tmp_path)
  configuration.check_data_path(config)


def test_the_128_config_mixes_crops_and_aligned_people_from_the_64_weights():
  config = configuration.validate(load("celeba128"))
  folders = config.data.path.split(",")
  assert [os.path.basename(f) for f in folders] == ["celeba_crops_128",
                                                    "celeba_aligned_128"]
  assert config.data.identities.split(",")[0] == ""
  assert config.data.test_identities > 0 and config.data.val_identities > 0
  start = weights.file_config(str(ROOT / config.train.init_weights))
  assert start.model.to_dict() == dict(
      config.model.to_dict(), image_size=start.data.image_size,
      attention_resolutions=tuple(r // 2 for r in
                                  config.model.attention_resolutions))


def test_paper_config_is_the_paper():
  config = load("celebahq")
  assert config.data.image_size == config.model.image_size == 256
  assert (config.diffusion.num_steps, config.diffusion.beta_start,
          config.diffusion.beta_end) == (2000, 1e-6, 1e-2)
  assert config.diffusion.schedule == "linear"
  assert config.model.ffc.enabled and config.model.noise_conditioning == "abar"
  assert config.diffusion.loss == "mse"
  assert config.diffusion.loss_region == "hole"
  assert config.diffusion.loss_normalisation == "hole"
  assert config.train.lr_schedule == "cosine"
  assert (config.data.num_val, config.data.num_test) == (18, 2000)
  assert not load("celebahq_noffc").model.ffc.enabled


def test_image_size_is_shared_by_data_and_model():
  config = load("test")
  config.data.image_size = 32
  assert config.model.image_size == 32


@pytest.mark.parametrize("field,value,expected", [
    ("train.batch_size", 0, "an integer"),
    ("train.num_steps", 1.5, "an integer"),
    ("train.ema_decay", 1.0, "a number in [0, 1)"),
    ("data.source", "imagenet", "one of synthetic"),
    ("eval.sampler", "euler", "one of ddpm"),
    ("eval.timestep_spacing", "cubic", "one of uniform, quadratic, log_snr"),
    ("model.dtype", "float16", "one of float32"),
    ("model.ffc.ratio_gin", 1.5, "a number in [0, 1]"),
    ("eval.baselines", ("mean", "lama"), "a tuple of names"),
    ("eval.masks", (), "a non-empty tuple"),
    ("model.attention_resolutions", (16, 0), "positive integers"),
    ("diffusion.loss_normalisation", "pixels", "one of hole, all"),
    ("eval.num_samples", 0, "an integer in [1, inf]"),
])
def test_bad_value_names_field_value_and_expectation(field, value, expected):
  config = load("test")
  section, _, name = field.rpartition(".")
  node = config
  for part in section.split("."):
    node = node[part]
  with node.ignore_type():
    node[name] = value
  with pytest.raises(configuration.ConfigError) as err:
    configuration.validate(config)
  message = str(err.value)
  assert f"config.{field}={value!r}" in message
  assert expected in message
  assert "\n" not in message


@pytest.mark.parametrize("change,field", [
    (lambda c: setattr(c.diffusion, "beta_end", 1e-5), "diffusion.beta_end"),
    (lambda c: setattr(c.model, "in_channels", 3), "model.in_channels"),
    (lambda c: setattr(c.eval, "num_steps", 1000), "eval.num_steps"),
    (lambda c: setattr(c.eval, "sampler", "repaint"), "eval.sampler"),
    (lambda c: setattr(c.diffusion, "loss_region", "full"),
     "diffusion.loss_region"),
    (lambda c: setattr(c.eval, "eta", 0.5) or setattr(c.eval, "sampler", "ddpm"),
     "eval.eta"),
    (lambda c: setattr(c.eval, "eta", 1.5), "eval.eta"),
])
def test_inconsistent_fields_are_reported(change, field):
  config = load("test")
  change(config)
  with pytest.raises(configuration.ConfigError, match=rf"config\.{field}="):
    configuration.validate(config)


def test_missing_data_directory_is_reported(tmp_path):
  config = load("test")
  config.data.source = "folder"
  config.data.path = str(tmp_path / "nowhere")
  configuration.validate(config)
  with pytest.raises(FileNotFoundError, match="config.data.path=.*nowhere"):
    configuration.check_data_path(config)
