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
import threading

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


# ------------------------------------------------------- subprocesses
def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _sigterm_after(step: int, workdir, pair) -> None:
  """SIGTERM to process 1 alone once process 0 has logged `step`."""
  if runs.wait_until(lambda: runs.last_logged_step(workdir) >= step, pair[0],
                     timeout=400):
    pair[1].send_signal(signal.SIGTERM)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  """Starts the slow subprocesses side by side (compiling dominates and
  each is single-threaded, so they share the cores):
  - the reference run's first updates on 8 devices (tests/parallel_worker.py);
  - 2 processes x 4 devices joined by jax.distributed, FFC off (this tests
    the plumbing), SIGTERM to process 1 alone after step 2;
  - the reference run itself (one device), returned when done."""
  basetemp = tmp_path_factory.getbasetemp()
  out = tmp_path_factory.mktemp("eight_devices")
  with open(out / "log.txt", "w") as log:
    worker = subprocess.Popen(
        [sys.executable, str(runs.HERE / "parallel_worker.py"), str(out)],
        cwd=runs.ROOT, env=runs.environment(basetemp, num_devices=8),
        stdout=log, stderr=subprocess.STDOUT)
  workdir = tmp_path_factory.mktemp("two_processes")
  flags = runs.LOOP + runs.QUIET + (
      "--config.model.ffc.enabled=False", "--distributed",
      f"--coordinator_address=localhost:{_free_port()}", "--num_processes=2")
  env = runs.environment(basetemp, num_devices=4)
  pair = [runs.start(env, workdir, *flags, f"--process_id={i}")
          for i in range(2)]
  watcher = threading.Thread(target=_sigterm_after, args=(2, workdir, pair))
  watcher.start()
  reference = runs.reference_run(basetemp)
  return {"worker": (worker, out), "pair": (pair, watcher, workdir),
          "reference": reference}


# ------------------------------------------------------ eight devices
@pytest.fixture(scope="module")
def eight_devices(launched):
  """The 8-device runs and the reference run (one device) they follow."""
  worker, out = launched["worker"]
  assert worker.wait(timeout=400) == 0, (out / "log.txt").read_text()[-3000:]
  reference = launched["reference"]
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
@pytest.fixture(scope="module")
def two_processes(launched):
  pair, watcher, workdir = launched["pair"]
  outputs = [runs.finish(p, timeout=400) for p in pair]
  watcher.join()
  return {"workdir": workdir, "outputs": outputs,
          "status": [p.returncode for p in pair],
          "stopped": runs.last_logged_step(workdir)}


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_after_a_joint_checkpoint(
    two_processes):
  outputs, workdir = two_processes["outputs"], two_processes["workdir"]
  assert two_processes["status"] == [0, 0], outputs[1][-3000:]
  assert "JAX process 1/2" in outputs[1]
  stopped = two_processes["stopped"]
  assert 2 < stopped < runs.STEPS
  assert runs.checkpoint_steps(workdir)[-1] == stopped
  data = sorted(p.name for p in (workdir / "checkpoints" / str(stopped) /
                                 "data").iterdir() if p.suffix == ".json")
  assert data == ["process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.slow
def test_only_process_zero_writes_and_both_log_the_same(two_processes):
  outputs, workdir = two_processes["outputs"], two_processes["workdir"]
  steps = [r["step"] for r in runs.records(workdir) if "loss" in r]
  assert steps == list(range(1, two_processes["stopped"] + 1))
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1
  losses = runs.losses(workdir)
  for step, loss in losses.items():
    assert f"[{step}] grad_norm=" in outputs[1]
    assert f"loss={loss:.6g}" in outputs[1], (step, loss)
