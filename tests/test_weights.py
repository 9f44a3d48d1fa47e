"""Weights files: tools/export_weights.py writes a checkpoint's weights with
its config; --weights loads them in place of a workdir, giving the same
results as the checkpoint."""

import json
import pathlib
import subprocess
import sys

from flax import traverse_util
import ml_dtypes
import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from ffc_ddpm import configuration, evaluate, inference, inpaint
from ffc_ddpm import inpaint_command, parallel, weights
from ffc_ddpm import photos as photos_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import export_weights  # pylint: disable=g-import-not-at-top,wrong-import-position


def random_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"conv": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
                   "bias": rng.normal(size=(8,)).astype(np.float32)},
          "norm": {"scale": (1 + 1e-3 * rng.normal(size=(8,))).astype(
              np.float32)}}


@pytest.mark.parametrize("dtype, cast", [
    ("float32", np.float32), ("float16", np.float16),
    ("bfloat16", ml_dtypes.bfloat16)])
def test_parameters_come_back_as_stored(tmp_path, dtype, cast):
  """Each parameter reads back as float32 of its value rounded to the
  storage type (rounded by NumPy / ml_dtypes, not by the code under test)."""
  params = random_params()
  path = str(tmp_path / "w.npz")
  config = helpers.tiny_config()
  weights.save(path, params, config, step=12, source="ema_params",
               dtype=dtype)
  meta, loaded = weights.load(path)
  assert (meta["step"], meta["source"], meta["dtype"]) == (12, "ema_params",
                                                          dtype)
  assert meta["num_params"] == 3 * 3 * 4 * 8 + 8 + 8
  for group, names in (("conv", ("kernel", "bias")), ("norm", ("scale",))):
    for name in names:
      want = params[group][name].astype(cast).astype(np.float32)
      assert loaded[group][name].dtype == np.float32
      np.testing.assert_array_equal(loaded[group][name], want)
  assert meta["config"] == json.loads(config.to_json_best_effort())
  assert not list(tmp_path.glob("*partial*"))


def test_the_files_config_replaces_the_model_sections(tmp_path):
  stored = helpers.tiny_config()
  stored.model.channel_mult = (1, 2, 2)
  stored.model.ffc.num_blocks = 2
  stored.diffusion.beta_end = 0.02
  stored.data.image_size = 32
  stored.eval.num_steps = 99  # not a model field: the user's stays
  path = str(tmp_path / "w.npz")
  weights.save(path, random_params(), stored, 3, "params")
  given = helpers.tiny_config()
  config, changed = weights.model_config(given, weights.read_metadata(path),
                                         path)
  assert config.model.channel_mult == (1, 2, 2)
  assert config.model.ffc.num_blocks == 2
  assert config.diffusion.beta_end == 0.02
  assert config.data.image_size == config.model.image_size == 32
  assert config.eval.num_steps == given.eval.num_steps
  assert given.model.channel_mult == (1, 2)  # the given config is unchanged
  assert sorted(c.split(":")[0] for c in changed) == [
      "data.image_size", "diffusion.beta_end", "model.channel_mult",
      "model.ffc.num_blocks"]
  configuration.validate(config)
  assert weights.model_config(config, weights.read_metadata(path),
                              path)[1] == []


def test_a_training_runs_config_json_reads_back(tmp_path):
  config = helpers.tiny_config()
  config.model.attention_resolutions = (4, 8)
  config.train.learning_rate = 3e-4
  configuration.save_json(config, str(tmp_path / "config.json"))
  base = configuration.load_config(str(export_weights.DEFAULT_CONFIG))
  read = weights.config_from_json(base, str(tmp_path / "config.json"))
  assert read.to_dict() == config.to_dict()


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_bad_files_give_one_line_naming_the_file(tmp_path):
  png = tmp_path / "photo.npz"
  Image.new("RGB", (4, 4)).save(png, format="PNG")
  good = str(tmp_path / "good.npz")
  weights.save(good, random_params(), helpers.tiny_config(), 1, "params")
  meta = json.loads(str(np.load(good)["ffc_ddpm"]))
  cases = {
      str(tmp_path / "missing.npz"): "no such file",
      str(png): "not a weights file",
      write_npz(tmp_path / "plain.npz", a=np.zeros(2)): "no 'ffc_ddpm' entry",
      write_npz(tmp_path / "other.npz", ffc_ddpm=np.array(json.dumps(
          dict(meta, format="v0")))): "format is 'v0'",
      write_npz(tmp_path / "nojson.npz", ffc_ddpm=np.array("{")): "not JSON",
  }
  for path, expected in cases.items():
    with pytest.raises(weights.WeightsError) as error:
      weights.load(path)
    message = str(error.value)
    assert message.startswith(f"--weights={path}: ") and expected in message
    assert "\n" not in message


def test_parameters_must_fit_the_network(tmp_path):
  path = "w.npz"
  shapes = random_params()
  weights.check_shapes(random_params(1), shapes, path)
  wrong = random_params()
  wrong["conv"]["bias"] = np.zeros(7, np.float32)
  with pytest.raises(weights.WeightsError, match=r"conv/bias has shape \(7,\)"
                     r", the network needs \(8,\)"):
    weights.check_shapes(wrong, shapes, path)
  del wrong["conv"]["bias"]
  with pytest.raises(weights.WeightsError, match="no parameter conv/bias"):
    weights.check_shapes(wrong, shapes, path)
  wrong = random_params()
  wrong["extra"] = {"w": np.zeros(1)}
  with pytest.raises(weights.WeightsError, match="extra/w is not in"):
    weights.check_shapes(wrong, shapes, path)


# ------------------------------------------- a trained checkpoint, exported
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  workdir = helpers.trained_workdir(tmp_path_factory)
  out = tmp_path_factory.mktemp("export") / "tiny.npz"
  meta = export_weights.export(str(workdir), str(out))
  return workdir, out, meta


def test_export_writes_the_ema_weights_of_the_newest_step(exported):
  workdir, out, meta = exported
  config = helpers.tiny_config()
  mesh = parallel.create_mesh()
  _, ema, step, source = inference.load_weights(config, str(workdir), mesh)
  assert (meta["step"], meta["source"], source) == (step, "ema_params",
                                                    "ema_params")
  assert step == config.train.num_steps
  _, params = weights.load(str(out))
  flat = lambda tree: traverse_util.flatten_dict(tree, sep="/")
  stored, restored = flat(params), flat(inference.fetch(ema))
  assert stored.keys() == restored.keys()
  for name, value in stored.items():
    np.testing.assert_array_equal(value, restored[name])
  assert meta["config"] == json.loads(
      configuration.validate(config).to_json_best_effort())


def test_inpainting_from_the_file_equals_inpainting_from_the_workdir(
    exported):
  workdir, out, _ = exported
  rng = np.random.default_rng(3)
  photo = photos_lib.photo_from_array(rng.integers(0, 256, (16, 16, 3),
                                                dtype=np.uint8))
  hole = np.zeros((16, 16, 1), np.float32)
  hole[4:12, 3:11] = 1
  config = helpers.tiny_config()
  from_workdir, = inpaint.Inpainter(config, str(workdir)).inpaint(
      [photo], [hole], 2)
  from_file, = inpaint.Inpainter(config, None, weights_file=str(out)).inpaint(
      [photo], [hole], 2)
  for a, b in zip(from_workdir.results, from_file.results):
    np.testing.assert_array_equal(a, b)


def test_a_config_that_differs_from_the_file_is_refused_in_process(exported):
  _, out, _ = exported
  config = helpers.tiny_config()
  config.model.model_channels = 64
  with pytest.raises(weights.WeightsError,
                     match="model.model_channels: 64 -> 32"):
    inference.load(config, None, weights_file=str(out))


def test_the_command_inpaints_from_the_file_without_a_workdir(exported,
                                                              tmp_path):
  """--weights with another --config: the file's model is used (one warning
  line names what it changed), and the result is the in-process one."""
  _, out, _ = exported
  photo = np.random.default_rng(4).integers(0, 256, (16, 16, 3), np.uint8)
  Image.fromarray(photo).save(tmp_path / "face.png")
  result = subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", "--mode=inpaint",
       "--config=configs/test.py", "--config.model.model_channels=64",
       f"--weights={out}", f"--image={tmp_path / 'face.png'}",
       "--mask=center", f"--output={tmp_path / 'filled.png'}",
       "--compilation_cache="],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "model.model_channels: 64 -> 32" in result.stderr
  config = helpers.tiny_config()
  expected, = inpaint.Inpainter(config, None, weights_file=str(out)).inpaint(
      [photos_lib.photo_from_array(photo)],
      [photos_lib.named_hole("center", 16, 16, config, 0)])
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "filled.png")), expected.results[0])


def test_evaluating_the_file_scores_what_the_workdir_scores(exported,
                                                          tmp_path):
  workdir, out, meta = exported
  config = helpers.tiny_config()
  config.eval.masks = ("center",)
  config.eval.baselines = ()
  from_workdir = evaluate.evaluate(config, str(workdir))
  from_file = evaluate.evaluate(config, str(tmp_path), weights_file=str(out))
  assert from_file["masks"] == from_workdir["masks"]
  assert from_file["step"] == meta["step"]
  assert from_file["weights"] == "tiny.npz:ema_params"
  assert (tmp_path / "eval" / "results.json").is_file()


def test_sampling_from_the_file_draws_what_the_workdir_draws(tmp_path):
  """An unconditional model (random weights, stored as `params`, like a
  converted one) exported without its EMA."""
  config = helpers.tiny_config()
  config.diffusion.conditioning = "none"
  config.diffusion.loss_region = "full"
  config.model.in_channels = 3
  config.eval.sampler = "ddim"
  workdir = helpers.random_checkpoint(config, tmp_path / "run")
  configuration.save_json(config, str(workdir / "config.json"))
  meta = export_weights.export(str(workdir), str(tmp_path / "u.npz"),
                               dtype="float16")
  assert (meta["source"], meta["dtype"]) == ("params", "float16")
  from_workdir = inpaint.Inpainter(config, str(workdir)).sample(4)
  from_file = inpaint_command.sample_files(
      weights.model_config(helpers.tiny_config(), meta, "u.npz")[0], None,
      str(tmp_path / "s"), 4, weights_file=str(tmp_path / "u.npz"))
  drawn = np.stack([np.asarray(Image.open(p)) for p in from_file])
  assert drawn.shape == from_workdir.shape
  # float16 storage: the same images up to the rounding of the weights
  assert np.abs(drawn.astype(int) - from_workdir).mean() < 2


@pytest.mark.parametrize("flags, expected", [
    (("--mode=train",), "--weights: for --mode=eval, inpaint or sample"),
    (("--mode=inpaint", "--step=2", "--image=a.png", "--output=b.png"),
     "--step: picks a checkpoint"),
    (("--mode=eval",), "--workdir: required"),
])
def test_weights_flag_misuse_is_one_line(exported, flags, expected):
  _, out, _ = exported
  result = subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.main", "--config=configs/test.py",
       f"--weights={out}", *flags], cwd=ROOT, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {expected}")


def test_export_without_a_config_names_the_flag(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "export_weights.py"),
       str(tmp_path), str(tmp_path / "w.npz")], capture_output=True,
      text=True, check=False)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "--config=CONFIG_FILE" in last
