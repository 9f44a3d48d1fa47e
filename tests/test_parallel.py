"""The mesh and layouts; training on 8 devices and on 2 processes.

The multi-device runs use simulated host devices in subprocesses
(--xla_force_host_platform_device_count), as JAX fixes the device count
when it starts.
"""

import json
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import training_runs as runs
from ffc_ddpm import checkpoint, parallel

NUM_STEPS = 2  # tests/parallel_worker.py's


# ------------------------------------------------------------ one device
def test_mesh_covers_every_device_with_a_model_axis():
  mesh = parallel.create_mesh()
  assert mesh.axis_names == (parallel.DATA_AXIS, parallel.MODEL_AXIS)
  assert mesh.devices.shape == (jax.device_count(), 1)


@pytest.mark.parametrize("size", [0, 3])
def test_bad_model_axis_size_is_one_line(size):
  with pytest.raises(ValueError, match=f"model_axis_size={size} must"):
    parallel.create_mesh(size, jax.devices() * 2)


def test_batch_size_must_split_over_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert parallel.local_batch_size(16) == 8
  with pytest.raises(ValueError, match="batch size 12 must be a multiple"):
    parallel.local_batch_size(12)


def test_large_arrays_are_sharded_along_a_dimension_the_axis_divides():
  devices = np.asarray(jax.devices() * 4)  # the rule reads only mesh.shape
  mesh = jax.sharding.Mesh(devices.reshape(2, 2), ("data", "model"))
  shapes = {"big": jax.ShapeDtypeStruct((3, 3, 64, 96), np.float32),
            "odd": jax.ShapeDtypeStruct((3, 4097), np.float32),
            "small": jax.ShapeDtypeStruct((64,), np.float32)}
  specs = jax.tree.map(lambda s: tuple(s.spec),
                       parallel.param_sharding(mesh, shapes, min_size=4096))
  assert specs == {"big": (None, None, None, "model"),
                   "odd": (), "small": ()}
  replicated = parallel.param_sharding(mesh, shapes)  # default: 2**18
  assert all(s.is_fully_replicated for s in jax.tree.leaves(replicated))


# ------------------------------------------------------ eight devices
@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  """The reference run's first updates on 8 devices (two meshes), and the
  reference run itself (one device)."""
  basetemp = tmp_path_factory.getbasetemp()
  reference = runs.reference_run(basetemp)
  out = tmp_path_factory.mktemp("eight_devices")
  subprocess.run([sys.executable, str(runs.HERE / "parallel_worker.py"),
                  str(out)], check=True, cwd=runs.ROOT, timeout=400,
                 env=runs.environment(basetemp, num_devices=8))
  one = runs.load_items(reference, NUM_STEPS, ("params", "ema_params",
                                               "opt_state"))
  losses = runs.losses(reference)
  return {"one": {"losses": [losses[s] for s in range(1, NUM_STEPS + 1)],
                  **checkpoint.leaf_paths(one)},
          **{name: dict(np.load(out / f"{name}.npz"))
             for name in ("data", "model")},
          "sharding": json.loads((out / "sharding.json").read_text())}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["data", "model"])
def test_eight_devices_train_like_one(eight_devices, name):
  one, many = eight_devices["one"], eight_devices[name]
  np.testing.assert_allclose(many["losses"], one["losses"], rtol=2e-5)
  assert one.keys() == many.keys() and len(one) > 100
  for key in one:
    np.testing.assert_allclose(many[key], one[key], rtol=2e-4, atol=2e-6,
                               err_msg=key)


@pytest.mark.slow
def test_model_axis_shards_weights_ema_and_moments(eight_devices):
  layout = eight_devices["sharding"]
  for tree in ("params/", "ema_params/", "opt_state/"):
    assert sum(k.startswith(tree) for k in layout) >= 4, (tree, layout)
  for path, (shape, shard, spec) in layout.items():
    assert np.prod(shape) >= 2**12 and "model" in spec, path
    assert sorted(np.array(shape) // np.array(shard)) == [1] * (
        len(shape) - 1) + [2], path


# ------------------------------------------------------- two processes
def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_pair(env, workdir, *flags):
  port = _free_port()
  return [runs.start(env, workdir, *flags, "--distributed",
                     f"--coordinator_address=localhost:{port}",
                     "--num_processes=2", f"--process_id={i}")
          for i in range(2)]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_stop_together(tmp_path_factory,
                                                          tmp_path):
  """2 processes x 4 devices. SIGTERM to process 1 alone stops both at the
  same step, after a joint checkpoint (JAX's pre-emption sync point)."""
  env = runs.environment(tmp_path_factory.getbasetemp(), num_devices=4)
  pair = _start_pair(env, tmp_path, *runs.LOOP, *runs.QUIET)
  runs.wait_until(lambda: runs.last_logged_step(tmp_path) >= 2, pair[0],
                  timeout=400)
  pair[1].send_signal(signal.SIGTERM)
  outputs = [runs.finish(p, timeout=400) for p in pair]
  assert [p.returncode for p in pair] == [0, 0], outputs[1][-3000:]
  assert "JAX process 1/2" in outputs[1]
  stopped = runs.last_logged_step(tmp_path)
  assert 2 <= stopped < runs.STEPS
  assert runs.checkpoint_steps(tmp_path)[-1] == stopped
  data = sorted(p.name for p in (tmp_path / "checkpoints" / str(stopped) /
                                 "data").iterdir() if p.suffix == ".json")
  assert data == ["process_0-of-2.json", "process_1-of-2.json"]
  # Only process 0 writes metrics.jsonl; process 1 logs the same losses.
  losses = runs.losses(tmp_path)
  assert sorted(losses) == list(range(1, stopped + 1))
  for step, loss in losses.items():
    assert f"[{step}] grad_norm=" in outputs[1]
    assert f"loss={loss:.6g}" in outputs[1], (step, loss)
