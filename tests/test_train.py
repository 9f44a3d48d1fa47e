"""Training: schedule, optimizer, EMA, the step, monitoring, and whole runs
that are poisoned with NaN, killed and resumed.

The whole-run tests start `python -m ffc_ddpm.main` in subprocesses sharing
one compilation cache (tests/training_runs.py); the step tests compile once
per module. Pre-emption across processes is in test_parallel.py.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys

from clu import metric_writers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.metrics

import training_runs as runs
from ffc_ddpm import checkpoint, configuration, models, parallel, train
from ffc_ddpm import training_monitor, weights
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import losses, process


def _config(**train_fields):
  config = runs.tiny_config()
  config.train.update(train_fields)
  return config


# -------------------------------------------------------------- schedule
def test_learning_rate_is_warmup_then_cosine():
  tc = _config(learning_rate=2e-3, warmup_steps=10, num_steps=110,
               min_lr_ratio=0.1).train
  lr = train.create_learning_rate_fn(tc)
  for t in (0, 3, 10, 37, 60, 109, 110, 500):
    if t < 10:
      expected = 2e-3 * t / 10
    else:
      progress = min(t - 10, 100) / 100
      expected = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert float(lr(t)) == pytest.approx(expected, rel=1e-5, abs=1e-10), t


def test_learning_rate_constant_after_warmup():
  lr = train.create_learning_rate_fn(
      _config(lr_schedule="constant", warmup_steps=4,
              learning_rate=1e-3).train)
  assert [float(lr(t)) for t in (0, 2, 4, 1000)] == pytest.approx(
      [0.0, 5e-4, 1e-3, 1e-3])


# ------------------------------------------------------------- optimizer
def _first_update(tc, grads, params):
  tx = train.create_optimizer(tc)
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  return updates, optax.tree_utils.tree_get(state, "mu")


def test_gradients_are_clipped_by_global_norm_before_adam():
  tc = _config(lr_schedule="constant", warmup_steps=0, learning_rate=0.1,
               grad_clip_norm=1.0).train
  g = {"a": jnp.array([6.0, -8.0]), "b": jnp.zeros(3)}  # global norm 10
  params = {"a": jnp.ones(2), "b": jnp.ones(3)}
  updates, mu = _first_update(tc, g, params)
  np.testing.assert_allclose(mu["a"], (1 - tc.b1) * np.array([0.6, -0.8]),
                             rtol=1e-6)
  # Adam's first step is -lr * g / |g| whatever the scale (Kingma & Ba).
  np.testing.assert_allclose(updates["a"], [-0.1, 0.1], rtol=1e-5)
  tc.grad_clip_norm = 0.0
  _, mu = _first_update(tc, g, params)
  np.testing.assert_allclose(mu["a"], (1 - tc.b1) * np.array([6.0, -8.0]),
                             rtol=1e-6)


def test_adamw_decays_weights():
  tc = _config(optimizer="adamw", weight_decay=0.5, lr_schedule="constant",
               warmup_steps=0, learning_rate=0.1).train
  params = {"w": jnp.array([2.0, -4.0])}
  updates, _ = _first_update(tc, {"w": jnp.zeros(2)}, params)
  np.testing.assert_allclose(updates["w"], [-0.1 * 0.5 * 2.0, 0.1 * 0.5 * 4.0],
                             rtol=1e-6)


# ------------------------------------------------------------------- EMA
def test_ema_decay_warms_up_to_the_configured_decay():
  steps = np.arange(0, 200_000, 997)
  expected = np.minimum(0.9999, (1.0 + steps) / (10.0 + steps))
  np.testing.assert_allclose(train.ema_decay(jnp.asarray(steps), 0.9999),
                             expected, rtol=1e-6)


def test_ema_update_matches_numpy():
  rng = np.random.default_rng(0)
  ema = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
  expected = ema["w"].astype(np.float64)
  for step in range(6):
    params = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    rate = min(0.9, (1 + step) / (10 + step))
    expected = rate * expected + (1 - rate) * params["w"]
    ema = train.ema_update(ema, params, train.ema_decay(step, 0.9))
  np.testing.assert_allclose(ema["w"], expected, rtol=1e-5)


# ----------------------------------------------------------- small units
def test_learn_sigma_is_refused_before_anything_runs(tmp_path):
  config = _config()
  config.model.learn_sigma = True
  with pytest.raises(configuration.ConfigError, match="model.learn_sigma"):
    train.train(config, str(tmp_path))
  assert not list(tmp_path.iterdir())


def _step_and_batch(config, model, tx, state, mesh):
  """The jitted train step for `state` and the first batch of the data."""
  step_fn = train.jit_train_step(
      train.make_train_step(config, model, process.from_config(
          config.diffusion), tx),
      jax.tree.map(lambda x: x.sharding, state), mesh)
  return step_fn, parallel.global_batch(
      next(pipeline.create_train_iterator(config, mesh)), mesh)


def _weights_file(path, config, seed=5):
  """A weights file of `config`'s network with parameters of `seed`."""
  params = models.init_params(models.create_model(config.model), config.model,
                              jax.random.key(seed))
  weights.save(str(path), params, config, 7, "ema_params")
  return jax.device_get(params)


def test_init_weights_start_a_run_at_another_image_size(tmp_path):
  """A 16x16 network's weights start a 32x32 run of the same network (its
  attention one level up, at 16 instead of 8): weights and EMA are the
  file's, exactly; optimizer moments and step start afresh."""
  small = _config()
  small.model.channel_mult, small.model.attention_resolutions = (1, 2), (8,)
  stored = _weights_file(tmp_path / "small.npz", small)
  config = _config(init_weights=str(tmp_path / "small.npz"))
  config.model.channel_mult = (1, 2)
  config.data.image_size = 32
  config.model.attention_resolutions = (16,)
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  mesh = parallel.create_mesh()
  started = train.create_train_state(config, model, tx, mesh)
  state = jax.device_get(started)
  step_fn, batch = _step_and_batch(config, model, tx, started, mesh)
  stepped, _ = step_fn(started, batch)  # the step may donate both trees
  assert int(stepped.step) == 1
  for got in (state.params, state.ema_params):
    jax.tree.map(np.testing.assert_array_equal, got, stored)
  assert int(state.step) == 0
  moments = jax.tree.leaves(state.opt_state)
  assert moments and not any(np.any(m) for m in moments
                             if np.asarray(m).dtype.kind == "f")
  config.train.init_weights = ""
  fresh = jax.device_get(train.create_train_state(config, model, tx, mesh))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, fresh.params,
                                              stored)))


def test_init_weights_of_another_network_are_refused(tmp_path):
  other = _config()
  other.model.model_channels = 64
  _weights_file(tmp_path / "wide.npz", other)
  config = _config(init_weights=str(tmp_path / "wide.npz"))
  with pytest.raises(weights.WeightsError,
                     match=r"config.train.init_weights=.*wide.npz: .* shape"):
    train.initial_params(config, models.create_model(config.model))


def test_periodic_work_and_last_step():
  due = [s for s in range(1, 11) if train.is_time(s, 4, 10)]
  assert due == [4, 8, 10]
  assert not any(train.is_time(s, 0, 10) for s in range(1, 11))


def test_metric_buffer_means_and_names_the_bad_step():
  buffer = train.MetricBuffer()
  for step, loss in ((1, 1.0), (2, 3.0)):
    buffer.append(step, {"loss": jnp.float32(loss),
                         "grad_norm": jnp.float32(1.0)})
  assert buffer.summary() == {"loss": 2.0, "grad_norm": 1.0}
  buffer.append(3, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(1.0)})
  buffer.append(4, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(np.inf)})
  with pytest.raises(train.NonFiniteLossError, match="at step 4 "):
    buffer.fetch()


def test_the_host_runs_at_most_one_step_ahead_of_the_device():
  """So a SIGTERM's checkpoint waits for one step, not for every step
  dispatched since the last fetch."""
  slow = jax.jit(lambda x: jax.lax.fori_loop(
      0, 30, lambda _, y: jnp.tanh(y @ y), x))
  x = jnp.ones((500, 500)) / 500
  slow(x).block_until_ready()  # compiled before the clock matters
  buffer = train.MetricBuffer()
  for step in range(1, 6):
    buffer.append(step, {"loss": slow(x), "grad_norm": jnp.float32(1.0)})
    pending = [s for s, m in buffer._steps  # pylint: disable=protected-access
               if not m["loss"].is_ready()]
    assert pending in ([], [step]), (step, pending)


def test_sigterm_asks_a_single_process_to_stop(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    with train.Preemption(ckpt) as stop:
      assert not stop.reached(1)
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.reached(2)
  assert signal.getsignal(signal.SIGTERM) is previous


def test_metrics_jsonl_is_cut_back_to_the_resumed_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  writer = train.JsonlWriter(str(path))
  for step in (1, 2, 3):
    writer.write_scalars(step, {"loss": np.float32(step / 2)})
  with open(path, "a") as f:
    f.write('{"step": 4, "lo')  # torn by a kill
  train.truncate_jsonl(str(path), 2)
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"step": 1, "loss": 0.5}, {"step": 2, "loss": 1.0}]


# ------------------------------------------------------------ the step
@pytest.mark.parametrize("normalisation", ["hole", "all"])
def test_the_step_uses_the_configured_loss_normalisation(monkeypatch,
                                                         normalisation):
  """Traced only (no compile): the loss gets diffusion.loss_normalisation."""
  seen, loss = [], losses.inpainting_loss
  monkeypatch.setattr(losses, "inpainting_loss", lambda *a, **k: (
      seen.append(k["normalisation"]) or loss(*a, **k)))
  config = _config()
  config.diffusion.loss_normalisation = normalisation
  model, tx = models.create_model(config.model), train.create_optimizer(
      config.train)
  abstract = train.abstract_train_state(config, model, tx,
                                        parallel.create_mesh())
  size = config.data.image_size
  batch = {"image": jax.ShapeDtypeStruct((4, size, size, 3), jnp.float32),
           "mask": jax.ShapeDtypeStruct((4, size, size, 1), jnp.float32)}
  step = train.make_train_step(config, model, process.from_config(
      config.diffusion), tx)
  jax.eval_shape(step, abstract, batch)
  assert seen == [normalisation]


@pytest.fixture(scope="module")
def overfit():
  """25 updates on one batch with one noise draw (the step is reset)."""
  config = _config(lr_schedule="constant", warmup_steps=0,
                   learning_rate=2e-3, batch_size=4)
  mesh = parallel.create_mesh()
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  state = train.create_train_state(config, model, tx, mesh)
  abstract = train.abstract_train_state(config, model, tx, mesh)
  step_fn, batch = _step_and_batch(config, model, tx, state, mesh)
  before = jax.device_get(state)
  first, history = None, []
  for _ in range(25):
    state, step_metrics = step_fn(state.replace(step=jnp.zeros_like(
        state.step)), batch)
    history.append(step_metrics)
    if first is None:
      first = jax.device_get(state)
  return {"abstract": abstract, "before": before, "first": first,
          "last": jax.device_get(state), "metrics": jax.device_get(history),
          "config": config, "model": model, "mesh": mesh,
          "ema_params": state.ema_params}


def test_overfitting_one_batch_lowers_the_loss_tenfold(overfit):
  losses = [m["loss"] for m in overfit["metrics"]]
  assert losses[0] > 0.5  # zero-initialised output: eps-MSE near 1
  assert losses[-1] < losses[0] / 10, losses


def test_step_updates_the_ema_and_counts(overfit):
  before, after = overfit["before"], overfit["first"]
  assert int(after.step) == 1
  rate = min(0.9, 1 / 10)  # ema_decay 0.9 of configs/test.py, update 0
  for e0, p1, e1 in zip(jax.tree.leaves(before.ema_params),
                        jax.tree.leaves(after.params),
                        jax.tree.leaves(after.ema_params)):
    np.testing.assert_allclose(e1, rate * e0 + (1 - rate) * p1, rtol=1e-5,
                               atol=1e-7)
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before.params), jax.tree.leaves(overfit["last"].params))]
  assert all(changed)  # the first update moves the zero-initialised layers
  # only; after 25, gradients have reached every parameter
  assert all(m["learning_rate"] == pytest.approx(2e-3)
             for m in overfit["metrics"])


def test_abstract_state_matches_the_real_one(overfit):
  abstract, real = overfit["abstract"], overfit["first"]
  assert jax.tree.structure(abstract) == jax.tree.structure(real)
  for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real)):
    assert (a.shape, a.dtype) == (r.shape, r.dtype)
    assert a.sharding.is_fully_replicated  # model_axis_size=1
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(real.params))


def _step_jaxpr(dtype: str, remat: bool) -> str:
  config = _config()
  config.model.dtype, config.model.remat = dtype, remat
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  state = train.abstract_train_state(config, model, tx,
                                     parallel.create_mesh())
  step = train.make_train_step(config, model,
                               process.from_config(config.diffusion), tx)
  batch = {"image": jax.ShapeDtypeStruct((8, 16, 16, 3), jnp.float32),
           "mask": jax.ShapeDtypeStruct((8, 16, 16, 1), jnp.float32)}
  new_state, step_metrics = jax.eval_shape(step, state, batch)
  assert {x.dtype for x in jax.tree.leaves((
      new_state.params, new_state.ema_params))} == {jnp.dtype(jnp.float32)}
  assert step_metrics["loss"].dtype == jnp.float32
  return str(jax.make_jaxpr(step)(state, batch))


def test_bfloat16_and_remat_come_from_the_config():
  """Convolutions run in bfloat16 and blocks are rematerialised; the
  parameters, EMA and loss stay float32."""
  fast = _step_jaxpr("bfloat16", True)
  convs = [line for line in fast.splitlines() if "conv_general_dilated" in line]
  assert sum(line.split("=")[0].count("bf16") for line in convs) > (
      len(convs) // 2)
  assert "remat" in fast
  plain = _step_jaxpr("float32", False)
  assert "bf16" not in plain and "remat" not in plain


# ------------------------------------------------------------ monitoring
class Recorder(metric_writers.MetricWriter):
  """Keeps what it is given."""

  def __init__(self):
    self.scalars, self.images = [], []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))

  def write_images(self, step, images):
    self.images.append((step, {k: v.shape for k, v in images.items()}))

  def _ignore(self, *args, **kwargs):
    pass

  write_summaries = write_videos = write_audios = write_texts = _ignore
  write_histograms = write_hparams = flush = close = _ignore


def _uint8(x):
  return np.clip(np.round((np.asarray(x) + 1) * 127.5), 0, 255).astype(
      np.uint8)


def test_monitor_scores_match_scikit_image_and_grids_are_separate(
    overfit, tmp_path):
  writer = Recorder()
  monitor = training_monitor.Monitor(overfit["config"], overfit["model"], overfit["mesh"],
                          str(tmp_path), writer)
  out = monitor.sample(overfit["ema_params"])
  scores = monitor.write_scores(5, out)
  assert writer.scalars == [(5, scores)] and not writer.images
  truth, ours = _uint8(monitor.batch["image"]), _uint8(out)
  assert len(truth) == 4  # configs/test.py: 4 validation images
  psnr = [skimage.metrics.peak_signal_noise_ratio(t, o, data_range=255)
          for t, o in zip(truth, ours)]
  ssim = [skimage.metrics.structural_similarity(
      t, o, channel_axis=-1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=255)
          for t, o in zip(truth, ours)]
  assert scores["val_psnr"] == pytest.approx(np.mean(psnr), rel=1e-5)
  assert scores["val_ssim"] == pytest.approx(np.mean(ssim), abs=1e-5)
  monitor.write_grid(6, out)
  assert [s for s, _ in writer.images] == [6] and len(writer.scalars) == 1
  assert (tmp_path / "images" / "step_00000006.png").exists()


def test_monitor_is_off_without_validation_images(overfit, tmp_path):
  config = overfit["config"].copy_and_resolve_references()
  config.data.num_val = 0
  assert training_monitor.create_monitor(config, overfit["model"], overfit["mesh"],
                              str(tmp_path), Recorder()) is None


# ------------------------------------------------------------- whole runs
ITEMS = ("params", "ema_params", "opt_state", "progress")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return runs.environment(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return runs.reference_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def interrupted(reference, env, tmp_path_factory):
  """One workdir trained by four processes, all with the reference's config:
  1. NaN put into update 5, logging every 4 steps (so the check before
     saving step 6 must catch it);
  2. resumed, SIGKILLed after saving step 6, in the middle of step 7 or 8;
  3. resumed, SIGKILLed while saving (orbax's temporary folder exists);
  4. resumed to the end.
  Returns what each stage left behind."""
  del reference  # compiles the programs these runs reuse
  workdir = tmp_path_factory.mktemp("interrupted")
  flags = runs.LOOP + runs.QUIET
  seen = {}
  status, output = runs.run(env, workdir, *flags, "--config.train.log_every=4",
                            "--nan_at=5", script="train_worker.py")
  seen["nan"] = {"status": status, "output": output,
                 "checkpoints": runs.checkpoint_steps(workdir),
                 "saving": runs.saving(workdir),
                 "logged": sorted(runs.losses(workdir))}

  run = runs.start(env, workdir, *flags)
  runs.wait_until(lambda: 6 in runs.checkpoint_steps(workdir) and
                  runs.last_logged_step(workdir) >= 7, run)
  seen["kill_after_save"] = (runs.kill(run), run.returncode)

  run = runs.start(env, workdir, *flags)  # not a save left by stage 2
  runs.wait_until(lambda: runs.saving(workdir) and runs.resumed(run), run)
  seen["kill_while_saving"] = (runs.kill(run), run.returncode)

  seen["last"] = runs.run(env, workdir, *flags)
  seen["workdir"] = workdir
  return seen


@pytest.mark.slow
def test_nan_stops_with_the_step_named_and_keeps_good_checkpoints(
    interrupted):
  nan = interrupted["nan"]
  last = nan["output"].strip().splitlines()[-1]
  assert nan["status"] == 2, nan["output"][-3000:]
  assert last.startswith("error: non-finite loss or gradient at step 5 ")
  assert nan["checkpoints"] == [2, 4] and not nan["saving"]
  assert nan["logged"] == [4]


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_losses_and_state(interrupted,
                                                         reference):
  for stage in ("kill_after_save", "kill_while_saving"):
    output, status = interrupted[stage]
    assert status == -signal.SIGKILL, (stage, output[-3000:])
  status, output = interrupted["last"]
  assert status == 0, output[-3000:]
  workdir = interrupted["workdir"]
  ours, theirs = runs.losses(workdir), runs.losses(reference)
  assert sorted(r["step"] for r in runs.records(workdir) if "loss" in r) == [
      4, 5, 6, 7, 8]  # one record per logged step, whatever was redone
  assert ours[4] == pytest.approx(np.mean([theirs[s] for s in range(1, 5)]),
                                  rel=1e-6)
  assert [ours[s] for s in range(5, 9)] == [theirs[s] for s in range(5, 9)]
  final = [runs.load_items(w, runs.STEPS, ITEMS) for w in (workdir,
                                                           reference)]
  assert jax.tree.structure(final[0]) == jax.tree.structure(final[1])
  for a, b in zip(*map(jax.tree.leaves, final)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_resuming_with_another_model_is_refused(reference):
  steps = runs.checkpoint_steps(reference)
  config = runs.tiny_config()
  config.model.model_channels = 64
  with pytest.raises(ValueError) as error:
    train.train(config, str(reference))
  message = str(error.value)
  assert message.startswith(f"checkpoint {runs.STEPS} in ")
  assert "'params'" in message and "(32,)" in message and "(64,)" in message
  assert "\n" not in message
  assert runs.checkpoint_steps(reference) == steps


@pytest.mark.slow
def test_resuming_with_another_seed_is_refused(reference):
  config = runs.tiny_config()
  config.seed = 1
  with pytest.raises(configuration.ConfigError,
                     match=r"config.seed=1: expected 0, the seed of the run"):
    train.train(config, str(reference))


@pytest.mark.slow
def test_training_summary_reads_what_a_run_logs(reference, tmp_path):
  """tools/training_summary.py on a real run: the loss means per block of
  4 steps, the images seen and a training time from the logged speeds."""
  out = tmp_path / "summary.json"
  subprocess.run([sys.executable, str(runs.ROOT / "tools" /
                                      "training_summary.py"),
                  str(reference), "--every=4", f"--json={out}"], check=True,
                 capture_output=True)
  summary = json.loads(out.read_text())
  logged = runs.losses(reference)
  assert [r["loss"] for r in summary["rows"]] == pytest.approx(
      [np.mean([logged[s] for s in range(1, 5)]),
       np.mean([logged[s] for s in range(5, 9)])])
  assert summary["images_seen"] == runs.STEPS * runs.TINY_OVERRIDES[
      "train.batch_size"]
  assert summary["train_hours"] > 0


# ------------------------------------------- one run per workdir; damage
@pytest.mark.slow
def test_a_second_trainer_on_a_workdir_stops_and_the_first_finishes(
    reference, env, tmp_path):
  workdir = tmp_path / "shared"
  flags = runs.LOOP + runs.QUIET + ("--config.train.checkpoint_every=1",)
  first = runs.start(env, workdir, *flags)
  # The first run's command line is checked and it is about to take the
  # workdir (a few ms), then to import, restore, compile and train.
  runs.wait_until(lambda: "JAX process 0/1" in first.log.read_text(), first)
  status, output = runs.run(env, workdir, *flags)
  first_still_running = first.poll() is None
  assert status == 2, (first_still_running, output[-3000:])
  assert first_still_running
  assert output.strip().splitlines()[-1] == (
      f"error: --workdir={workdir} is in use by another run (pid "
      f"{first.pid} on host {socket.gethostname()}); wait for it to finish "
      "or use another workdir")
  output = runs.finish(first)
  assert first.returncode == 0, output[-3000:]
  logged = [r["step"] for r in runs.records(workdir) if "loss" in r]
  assert logged == list(range(1, runs.STEPS + 1))  # each step once
  assert runs.losses(workdir) == runs.losses(reference)


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_is_skipped_and_training_completes(
    reference, env, tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(reference / "checkpoints", workdir / "checkpoints")
  shutil.copy(reference / "metrics.jsonl", workdir)
  params = workdir / "checkpoints" / str(runs.STEPS) / "params"
  largest = max((p for p in params.rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  status, output = runs.run(env, workdir, *runs.LOOP, *runs.QUIET)
  assert status == 0, output[-3000:]
  warnings = [line for line in output.splitlines() if "unreadable" in line]
  assert len(warnings) == 1, warnings
  set_aside = workdir / "checkpoints" / "damaged" / str(runs.STEPS)
  assert f"checkpoint {runs.STEPS} in {workdir / 'checkpoints'} is " in (
      warnings[0])
  assert warnings[0].endswith(f"skipped and moved to {set_aside}; using "
                              f"step {runs.STEPS - 2}")
  assert f"Resumed from step {runs.STEPS - 2} " in output
  assert (set_aside / "params").is_dir()
  assert runs.checkpoint_steps(workdir) == [2, 4, 6, 8]
  logged = [r["step"] for r in runs.records(workdir) if "loss" in r]
  assert logged == list(range(1, runs.STEPS + 1))
  assert runs.losses(workdir) == runs.losses(reference)
  final = [runs.load_items(w, runs.STEPS, ITEMS) for w in (workdir,
                                                           reference)]
  for a, b in zip(*map(jax.tree.leaves, final)):
    np.testing.assert_array_equal(a, b)
