"""ffc_ddpm.export and tools/export_model.py: the sharded train step and
every sampler lower for cpu, cuda and tpu on this CPU-only machine, and the
exported model gives the library's numbers.

Lowering for a platform needs no device of it; `jax.export` refuses host
callbacks and custom calls without a compatibility guarantee, and fails on
an operation the platform cannot lower, so a CPU-only operation in the
train step or a sampler fails here by the platform's name.
"""

import hashlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inference_helpers as helpers
from ffc_ddpm import configuration, export, inference, models
from ffc_ddpm import parallel, train, weights
from ffc_ddpm.diffusion import process

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lower_everywhere(fn, args):
  """(`fn` lowered for every platform at once, []), or (None, the errors
  'platform: ...' of each platform it does not lower for by itself)."""
  try:
    return export.lower(fn, args, export.PLATFORMS), []
  except Exception as e:  # pylint: disable=broad-except
    together = e
  failures = []
  for platform in export.PLATFORMS:
    try:
      export.lower(fn, args, [platform])
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"{platform}: {type(e).__name__}: "
                      f"{' '.join(str(e).split())[:400]}")
  return None, failures or [f"together: {together}"]


# -------------------------------------------------------------- train step
@pytest.mark.parametrize("devices", [1, 2])
def test_the_sharded_train_step_lowers_for_every_platform(devices):
  """The step `train.train` jits, over the mesh of a host with `devices`
  devices (abstract: no device is needed to lower)."""
  config = helpers.tiny_config()
  mesh = jax.sharding.AbstractMesh((devices, 1), (parallel.DATA_AXIS,
                                                  parallel.MODEL_AXIS))
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  state = train.abstract_train_state(config, model, tx, mesh)
  n, size = config.train.batch_size, config.data.image_size
  split = parallel.data_sharding(mesh)
  batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32,
                                         sharding=split),
           "mask": jax.ShapeDtypeStruct((n, size, size, 1), jnp.float32,
                                        sharding=split)}
  step = train.jit_train_step(
      train.make_train_step(config, model,
                            process.from_config(config.diffusion), tx),
      jax.tree.map(lambda a: a.sharding, state), mesh)
  lowered, failures = lower_everywhere(step, (state, batch))
  assert not failures, "cannot lower for " + "; ".join(failures)
  assert lowered.platforms == export.PLATFORMS
  assert lowered.nr_devices == devices


# ---------------------------------------------------------------- samplers
def sampler_config(conditioning: str, method: str):
  config = helpers.tiny_config()
  config.diffusion.conditioning = conditioning
  config.model.in_channels = 7 if conditioning == "concat" else 3
  config.eval.sampler = method
  config.eval.jump_length = config.eval.jump_n_sample = 2  # RePaint jumps
  return configuration.validate(config)


def abstract_inference(config) -> inference.Inference:
  """Shapes of random weights and the config's sampler: enough to lower."""
  model = models.create_model(config.model)
  params = jax.eval_shape(
      lambda: models.init_params(model, config.model, jax.random.key(0)))
  return inference.Inference(parallel.create_mesh(), params, 0, "shapes",
                             inference.create_sampler(config, model))


@pytest.mark.parametrize("conditioning,method", [
    ("concat", "ddpm"), ("concat", "ddim"), ("concat", "dpm_solver"),
    ("none", "ddpm"), ("none", "ddim"), ("none", "repaint"),
    ("none", "dpm_solver")])
def test_the_sampling_scan_lowers_for_every_platform(conditioning, method):
  """The whole inpainting sampler (every chunk of the scan, K samples,
  their mean and std), at a symbolic batch size."""
  config = sampler_config(conditioning, method)
  loaded = abstract_inference(config)
  lowered, failures = lower_everywhere(
      jax.jit(export.sampler_function(loaded, 2)),
      [loaded.params, *export.input_specs(config, "sampler")])
  assert not failures, "cannot lower for " + "; ".join(failures)
  samples = lowered.out_avals[0].shape
  assert str(samples[0]) == export.BATCH and samples[1:] == (2, 16, 16, 3)


@pytest.mark.parametrize("conditioning", ["concat", "none"])
def test_the_denoiser_lowers_for_every_platform(conditioning):
  config = sampler_config(conditioning, "ddim")
  loaded = abstract_inference(config)
  fn = export.functions(config, loaded, 2)["denoiser"]
  lowered, failures = lower_everywhere(
      jax.jit(fn), [loaded.params, *export.input_specs(config, "denoiser")])
  assert not failures, "cannot lower for " + "; ".join(failures)
  output, = lowered.out_avals
  assert str(output.shape[0]) == export.BATCH
  assert output.shape[1:] == (16, 16, 3)


# ----------------------------------------------------- the exported files
def random_weights(config, path: pathlib.Path) -> pathlib.Path:
  """A weights file of freshly drawn parameters (no compilation)."""
  model = models.create_model(config.model)
  shapes = jax.eval_shape(
      lambda: models.init_params(model, config.model, jax.random.key(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * 0.05).astype(np.float32), shapes)
  weights.save(str(path), params, config, 3, "ema_params")
  return path


def run_tool(*flags):
  return subprocess.run(
      [sys.executable, str(ROOT / "tools" / "export_model.py"), *flags],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """configs/test.py's network with random weights, through the command
  (K = 3, the sampler the file stores: DDIM, 4 steps)."""
  tmp = tmp_path_factory.mktemp("export")
  path = random_weights(helpers.tiny_config(), tmp / "tiny.npz")
  result = run_tool(f"--weights={path}", f"--out={tmp / 'out'}",
                    "--num_samples=3")
  assert result.returncode == 0, result.stderr
  return path, tmp / "out", result.stdout


def load_exported(out: pathlib.Path, name: str):
  return jax.export.deserialize((out / f"{name}.cpu.jaxexport").read_bytes())


def test_the_command_writes_every_platform_and_their_hashes(exported):
  _, out, stdout = exported
  meta = json.loads((out / export.METADATA_FILE).read_text())
  assert sorted(meta["functions"]) == ["denoiser", "sampler"]
  for function in meta["functions"].values():
    assert sorted(function["files"]) == sorted(export.PLATFORMS)
    for entry in function["files"].values():
      blob = (out / entry["file"]).read_bytes()
      assert entry["bytes"] == len(blob)
      assert entry["sha256"] == hashlib.sha256(blob).hexdigest()
      assert jax.export.deserialize(blob).platforms == (
          entry["file"].split(".")[1],)
      assert f"{entry['file']}: {len(blob):,} bytes" in stdout
  sampler = meta["functions"]["sampler"]
  assert sampler["inputs"]["image"] == {"shape": ["b", 16, 16, 3],
                                        "dtype": "float32"}
  assert sampler["outputs"]["samples"]["shape"] == ["b", 3, 16, 16, 3]
  assert meta["sampler"]["method"] == "ddim"
  assert meta["sampler"]["num_steps"] == 4 and meta["step"] == 3
  assert not list(out.glob("*.partial"))


def test_the_exported_sampler_gives_the_librarys_samples(exported):
  """Same inputs and key as the library's sampler (as the inpaint command
  keys it); the known pixels exactly."""
  path, out, _ = exported
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  mask = np.zeros((2, 16, 16, 1), np.float32)
  mask[0, 4:12, 4:12] = 1.0
  mask[1, :, 8:] = 1.0
  samples, mean, std = load_exported(out, "sampler").call(
      image, mask, jax.random.key_data(jax.random.key(7)))
  samples = np.asarray(samples)
  config = configuration.validate(weights.file_config(str(path)))
  loaded = inference.load(config, None, weights_file=str(path))
  library = inference.sample_padded(
      loaded, image, mask, np.arange(2), 7, inference.Purpose.INPAINT, 6,
      num_samples=3).samples
  np.testing.assert_allclose(samples, library, atol=1e-5)
  assert np.abs(samples[:, 0] - samples[:, 1]).max() > 0.1  # K distinct
  hole = np.broadcast_to(mask[:, None] > 0.5, samples.shape)
  known = np.broadcast_to(image[:, None], samples.shape)
  np.testing.assert_array_equal(samples[~hole], known[~hole])
  expected_mean = np.where(mask > 0.5, samples.mean(axis=1), image)
  np.testing.assert_allclose(mean, expected_mean, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(mean)[mask[..., 0] < 0.5],
                                image[mask[..., 0] < 0.5])
  np.testing.assert_allclose(std, inference.std_of_samples(library, mask),
                             atol=1e-5)


def test_one_denoiser_file_serves_any_batch_size(exported):
  """The network's output for (x_t, abar, masked image, mask), as the
  library calls it, at batch 3 and for its first example alone."""
  path, out, _ = exported
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
  abar = rng.uniform(0.01, 0.99, 3).astype(np.float32)
  known = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
  mask = (rng.uniform(size=(3, 16, 16, 1)) > 0.5).astype(np.float32)
  denoiser = load_exported(out, "denoiser")
  output = denoiser.call(x, abar, known, mask)
  first = denoiser.call(x[:1], abar[:1], known[:1], mask[:1])
  _, params = weights.load(str(path))
  apply = inference.inference_apply(
      models.create_model(helpers.tiny_config().model))
  library = jax.jit(apply)(params, x, abar,
                           process.inpainting_condition(known, mask))
  assert output.shape == (3, 16, 16, 3) and first.shape == (1, 16, 16, 3)
  np.testing.assert_allclose(output, library, atol=1e-5)
  np.testing.assert_allclose(first, library[:1], atol=1e-5)


def test_a_workdirs_checkpoint_exports_with_its_config(tmp_path):
  """--workdir and --config: the checkpoint's step and weights, the
  config's sampler, only the platforms asked for."""
  config = helpers.tiny_config()
  helpers.random_checkpoint(config, tmp_path / "run", step=5)
  result = run_tool(f"--workdir={tmp_path / 'run'}", f"--out={tmp_path}/out",
                    f"--config={ROOT / 'configs' / 'test.py'}",
                    "--config.eval.sampler=dpm_solver", "--platforms=cpu",
                    "--num_samples=2")
  assert result.returncode == 0, result.stderr
  meta = json.loads((tmp_path / "out" / export.METADATA_FILE).read_text())
  assert (meta["step"], meta["weights"]) == (5, "params")
  assert meta["sampler"]["method"] == "dpm_solver"
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      "denoiser.cpu.jaxexport", "export.json", "sampler.cpu.jaxexport"]


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("flags,expected", [
    (["--weights=missing.npz", "--out=unused", "--platforms=cpu,gpu"],
     "error: --platforms=cpu,gpu: expected some of cpu, cuda, tpu"),
    (["--weights=missing.npz", "--out=unused"],
     "error: --weights=missing.npz: no such file"),
])
def test_bad_input_is_one_line(flags, expected):
  result = run_tool(*flags)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == expected
