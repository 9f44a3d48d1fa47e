"""Training: schedule, optimizer, EMA, the step, and whole runs that are
killed, pre-empted, poisoned with NaN and resumed.

The whole-run tests start `python -m ffc_ddpm.main` in subprocesses sharing
one compilation cache (tests/training_runs.py); the step tests compile once
per module.
"""

import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import training_runs as runs
from ffc_ddpm import checkpoint, configuration, models, parallel, train
from ffc_ddpm.data import pipeline
from ffc_ddpm.diffusion import process


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
  step_fn = train.jit_train_step(
      train.make_train_step(config, model, process.from_config(
          config.diffusion), tx),
      jax.tree.map(lambda x: x.sharding, state), mesh)
  batch = parallel.global_batch(
      next(pipeline.create_train_iterator(config, mesh)), mesh)
  before = jax.device_get(state)
  first, history = None, []
  for _ in range(25):
    state, step_metrics = step_fn(state.replace(step=jnp.zeros_like(
        state.step)), batch)
    history.append(step_metrics)
    if first is None:
      first = jax.device_get(state)
  return {"abstract": abstract, "before": before, "first": first,
          "last": jax.device_get(state), "metrics": jax.device_get(history)}


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
  assert all(changed)  # after the first update, gradients reach every layer
  assert all(m["learning_rate"] == pytest.approx(2e-3)
             for m in overfit["metrics"])


def test_abstract_state_matches_the_real_one(overfit):
  abstract, real = overfit["abstract"], overfit["first"]
  assert jax.tree.structure(abstract) == jax.tree.structure(real)
  for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real)):
    assert (a.shape, a.dtype) == (r.shape, r.dtype)
    assert a.sharding.is_fully_replicated  # model_axis_size=1
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(real.params))


# ------------------------------------------------------------- whole runs
ITEMS = ("params", "ema_params", "opt_state", "progress")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return runs.environment(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return runs.reference_run(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_monitoring_draws_grids_and_scores_on_their_own_steps(reference):
  grids = sorted(p.name for p in (reference / "images").iterdir())
  assert grids == [f"step_{s:08d}.png" for s in (3, 6, 8)]
  scores = [r for r in runs.records(reference) if "val_psnr" in r]
  assert [r["step"] for r in scores] == [4, 8]
  assert all(0 < r["val_psnr"] < 100 and -1 <= r["val_ssim"] <= 1
             for r in scores)
  assert sorted(runs.losses(reference)) == list(range(1, runs.STEPS + 1))


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_to_the_same_result(
    reference, env, tmp_path):
  """SIGKILL mid-interval, SIGTERM, SIGKILL mid-save, then a full run."""
  flags = runs.LOOP + runs.QUIET
  moments = []
  run = runs.start(env, tmp_path, *flags)  # killed after saving step 2
  runs.wait_until(lambda: runs.checkpoint_steps(tmp_path) == [2] and
                  runs.last_logged_step(tmp_path) >= 3, run)
  runs.kill(run)
  assert run.returncode == -signal.SIGKILL
  moments.append(runs.checkpoint_steps(tmp_path))

  run = runs.start(env, tmp_path, *flags)  # pre-empted after step 5
  runs.wait_until(lambda: runs.last_logged_step(tmp_path) >= 5, run)
  output = runs.kill(run, signal.SIGTERM)
  assert run.returncode == 0, output[-3000:]
  assert "Traceback" not in output
  stopped = runs.last_logged_step(tmp_path)
  assert runs.checkpoint_steps(tmp_path)[-1] == stopped < runs.STEPS
  moments.append(stopped)

  run = runs.start(env, tmp_path, *flags)  # killed while saving
  runs.wait_until(lambda: runs.saving(tmp_path), run)
  runs.kill(run)
  assert run.returncode == -signal.SIGKILL
  moments.append(runs.checkpoint_steps(tmp_path))

  status, output = runs.run(env, tmp_path, *flags)
  assert status == 0, output[-3000:]
  assert runs.losses(tmp_path) == runs.losses(reference), moments
  assert sorted(r["step"] for r in runs.records(tmp_path) if "loss" in r) == (
      list(range(1, runs.STEPS + 1)))
  ours = runs.load_items(tmp_path, runs.STEPS, ITEMS)
  theirs = runs.load_items(reference, runs.STEPS, ITEMS)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_nan_stops_with_the_step_named_and_keeps_good_checkpoints(
    reference, env, tmp_path):
  """NaN in update 5; logs every 4 steps, so the check before saving step 6
  must catch it."""
  del reference  # compiles the program this run reuses
  status, output = runs.run(
      env, tmp_path, f"--config.train.num_steps={runs.STEPS}",
      "--config.train.log_every=4", "--config.train.checkpoint_every=2",
      *runs.QUIET, "--nan_at=5", script="train_worker.py")
  last = output.strip().splitlines()[-1]
  assert status == 2 and last.startswith("error: non-finite loss"), output[-3000:]
  assert "at step 5 " in last
  assert runs.checkpoint_steps(tmp_path) == [2, 4]
  assert not runs.saving(tmp_path)
  assert sorted(runs.losses(tmp_path)) == [4]


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
