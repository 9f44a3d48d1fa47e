"""The Checkpointer on small trees: round trip, retention, refusals.

Whole runs that are killed and resumed are in test_train.py.
"""

import fcntl
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffc_ddpm import checkpoint, checkpoint_recovery, lock


def _state(scale: float = 1.0) -> dict:
  return {"params": {"conv": {"kernel": jnp.full((3, 3, 2, 4), scale),
                              "bias": jnp.arange(4.0) * scale}},
          "progress": {"step": jnp.int32(7),
                       "rng": jax.random.key(int(scale))}}


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(
          jax.devices()[0])), tree)


@pytest.fixture
def saved(tmp_path):
  """A workdir with checkpoints 1 and 2 of `_state(step)`."""
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _state(step), {"step": step})
  return tmp_path


def test_round_trip_restores_values_layout_and_meta(saved):
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [1, 2]
    assert ckpt.items(2) == {"params", "progress", "meta"}
    restored = ckpt.restore(2, _abstract(_state()))
    assert ckpt.restore_meta(2) == {"step": 2}
  expected = _state(2.0)
  np.testing.assert_array_equal(restored["params"]["conv"]["kernel"],
                                np.full((3, 3, 2, 4), 2.0))
  np.testing.assert_array_equal(restored["params"]["conv"]["bias"],
                                [0.0, 2.0, 4.0, 6.0])
  np.testing.assert_array_equal(
      jax.random.key_data(restored["progress"]["rng"]),
      jax.random.key_data(expected["progress"]["rng"]))
  assert restored["params"]["conv"]["bias"].sharding == (
      jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_keeps_the_last_k_and_every_mth(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path), keep=2, keep_every=4) as ckpt:
    for step in range(1, 11):
      ckpt.save(step, {"params": {"w": jnp.full((2,), float(step))}},
                {"step": step})
    ckpt.wait()
    assert ckpt.all_steps() == [4, 8, 9, 10]


def test_an_unfinished_save_is_ignored_and_replaced(saved):
  """As a run killed while saving step 3 leaves it."""
  leftover = saved / "checkpoints" / "3.orbax-checkpoint-tmp"
  (leftover / "params").mkdir(parents=True)
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    assert ckpt.latest_step() == 2
    ckpt.save(3, _state(3.0), {"step": 3})
  assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == [
      "1", "2", "3"]


def test_other_shapes_are_refused_in_one_line(saved):
  state = _abstract(_state())
  state["params"]["conv"]["kernel"] = jax.ShapeDtypeStruct((3, 3, 2, 8),
                                                           jnp.float32)
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(ValueError) as error:
      ckpt.restore(2, state)
  message = str(error.value)
  assert "\n" not in message and message.startswith("checkpoint 2 in ")
  assert ("'conv/kernel' is stored with shape (3, 3, 2, 4) but this config "
          "expects (3, 3, 2, 8)") in message


def test_other_trees_are_refused_naming_the_differences(saved):
  state = _abstract(_state())
  state["params"]["extra"] = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
  del state["params"]["conv"]["bias"]
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(ValueError, match=r"item 'params' does not match.*"
                       r"1 expected arrays missing \('extra/w'\), "
                       r"1 unexpected \('conv/bias'\)"):
      ckpt.restore(2, state)


def test_missing_items_are_refused(saved):
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(ValueError, match="has no opt_state"):
      ckpt.restore(2, {"opt_state": {"w": jax.ShapeDtypeStruct(
          (2,), jnp.float32)}})


def test_weights_prefer_ema_and_fall_back_to_params(tmp_path):
  params = {"w": jnp.ones(3)}
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(5, {"params": params, "ema_params": {"w": jnp.full(3, 2.0)}},
              {"step": 5})
    ckpt.save(6, {"params": params}, {"step": 6})
    ckpt.wait()
    abstract = _abstract(params)
    weights, step, name = ckpt.restore_weights(abstract, 5)
    assert (step, name) == (5, "ema_params")
    np.testing.assert_array_equal(weights["w"], [2.0, 2.0, 2.0])
    assert ckpt.restore_weights(abstract, 5, use_ema=False)[2] == "params"
    assert ckpt.restore_weights(abstract)[1:] == (6, "params")
    with pytest.raises(FileNotFoundError, match="no checkpoint 9 .*5, 6"):
      ckpt.restore_weights(abstract, 9)


def test_an_empty_workdir_says_what_to_do(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(FileNotFoundError, match="train first"):
      ckpt.restore_weights({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})


def test_object_store_paths_are_kept(tmp_path, monkeypatch):
  assert str(checkpoint.checkpoint_dir("gs://bucket/run")) == (
      "gs://bucket/run/checkpoints")
  monkeypatch.chdir(tmp_path)
  assert checkpoint.checkpoint_dir("run") == tmp_path / "run" / "checkpoints"


# ------------------------------------------------------ damaged checkpoints
def _truncate_largest_file(folder):
  """Cuts the largest file under `folder` to half, as a torn copy would."""
  largest = max((p for p in folder.rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


DAMAGES = {
    "params data truncated": lambda step: _truncate_largest_file(
        step / "params"),
    "params manifest deleted": lambda step: (
        step / "params" / "manifest.ocdbt").unlink(),
    "progress item deleted": lambda step: shutil.rmtree(step / "progress"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_skipped_and_set_aside(saved, damage,
                                                              caplog):
  DAMAGES[damage](saved / "checkpoints" / "2")
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    step, restored = ckpt.restore_latest(_abstract(_state()))
    assert ckpt.all_steps() == [1]
  assert step == 1
  np.testing.assert_array_equal(restored["params"]["conv"]["bias"],
                                [0.0, 1.0, 2.0, 3.0])  # _state(1.0)'s
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "checkpoint 2" in
              r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0], warnings
  assert warnings[0].startswith(f"checkpoint 2 in {saved / 'checkpoints'} "
                                "is unreadable (")
  assert warnings[0].endswith(f"moved to {saved / 'checkpoints' / 'damaged' / '2'}"
                              "; using step 1")
  assert (saved / "checkpoints" / "damaged" / "2" / "params").is_dir()
  assert not (saved / "checkpoints" / "2").exists()


def _no_writes(monkeypatch):
  """Makes any attempt to take the workdir's lock (the first thing a
  change to a workdir does) fail the test."""
  def refuse(workdir):
    raise AssertionError(f"a reader tried to lock {workdir}")
  monkeypatch.setattr(lock, "_try_acquire", refuse)


def test_weights_for_inference_fall_back_too_and_move_nothing(
    saved, monkeypatch):
  """A reader (writable=False) skips the damaged step, leaves it where it
  is and never touches the workdir, which may be read-only."""
  _truncate_largest_file(saved / "checkpoints" / "2" / "params")
  before = sorted(p.relative_to(saved) for p in saved.rglob("*"))
  _no_writes(monkeypatch)
  with checkpoint.Checkpointer(str(saved), writable=False) as ckpt:
    params, step, name = ckpt.restore_weights(_abstract(_state())["params"])
  assert (step, name) == (1, "params")
  np.testing.assert_array_equal(params["conv"]["kernel"],
                                np.full((3, 3, 2, 4), 1.0))
  assert sorted(p.relative_to(saved) for p in saved.rglob("*")) == before


def test_reading_an_intact_workdir_takes_no_lock(saved, monkeypatch):
  _no_writes(monkeypatch)
  with checkpoint.Checkpointer(str(saved), writable=False) as ckpt:
    assert ckpt.restore_weights(_abstract(_state())["params"])[1] == 2
  with checkpoint.Checkpointer(str(saved)) as ckpt:  # a resuming trainer
    assert ckpt.restore_latest(_abstract(_state()))[0] == 2


def test_a_workdir_without_a_lock_file_is_left_as_it_is(saved, monkeypatch):
  """When the lock file cannot be made (a read-only workdir), a trainer
  that finds a damaged step skips it without moving it."""
  _truncate_largest_file(saved / "checkpoints" / "2" / "params")
  def read_only(workdir):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(lock, "_try_acquire", read_only)
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    assert ckpt.restore_latest(_abstract(_state()))[0] == 1
  assert (saved / "checkpoints" / "2").is_dir()
  assert not (saved / "checkpoints" / "damaged").exists()


def test_training_resumes_after_the_fallback_and_saves_that_step_again(saved):
  _truncate_largest_file(saved / "checkpoints" / "2" / "params")
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    assert ckpt.restore_latest(_abstract(_state()))[0] == 1
    ckpt.save(2, _state(5.0), {"step": 2})
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    step, restored = ckpt.restore_latest(_abstract(_state()))
  assert step == 2 and float(restored["params"]["conv"]["bias"][1]) == 5.0


def test_without_a_readable_checkpoint_it_stops_and_moves_nothing(saved):
  for step in ("1", "2"):
    _truncate_largest_file(saved / "checkpoints" / step / "params")
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(checkpoint_recovery.DamagedCheckpointError) as error:
      ckpt.restore_latest(_abstract(_state()))
  message = str(error.value)
  assert message.startswith(f"no readable checkpoint in {saved / 'checkpoints'}"
                            " (2 damaged; the newest: checkpoint 2 in ")
  assert "\n" not in message and message.endswith("nothing was moved")
  assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == ["1", "2"]


def test_another_config_is_refused_not_taken_for_damage(saved):
  state = _abstract(_state())
  state["params"]["conv"]["bias"] = jax.ShapeDtypeStruct((5,), jnp.float32)
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(ValueError, match="'conv/bias' is stored with shape"):
      ckpt.restore_latest(state)
    assert ckpt.all_steps() == [1, 2]


def test_a_workdir_held_by_another_run_keeps_its_damaged_checkpoint(saved,
                                                                    caplog):
  _truncate_largest_file(saved / "checkpoints" / "2" / "params")
  held = open(saved / lock.LOCK_NAME, "w")  # another open file: another run
  fcntl.flock(held, fcntl.LOCK_EX)
  try:
    with checkpoint.Checkpointer(str(saved)) as ckpt:
      assert ckpt.restore_latest(_abstract(_state()))[0] == 1
  finally:
    held.close()
  assert (saved / "checkpoints" / "2").is_dir()
  assert "left in place as another run holds the workdir" in caplog.text
  assert not (saved / "checkpoints" / "damaged").exists()


def test_reading_creates_nothing(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path / "run"), writable=False) as ckpt:
    with pytest.raises(FileNotFoundError, match="train first"):
      ckpt.restore_weights({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("failure", [
    MemoryError(),
    PermissionError(13, "Permission denied"),
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"),
    ValueError("read failed"),  # raised from a timed-out store
])
def test_a_machine_failure_while_reading_is_not_taken_for_damage(
    saved, monkeypatch, failure):
  """Out of memory, no permission, a store that timed out: the error
  propagates and the (intact) newest checkpoint stays where it is."""
  def fail(*args, **kwargs):
    if isinstance(failure, ValueError):
      raise failure from TimeoutError("object store timed out")
    raise failure
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    monkeypatch.setattr(ckpt.manager, "restore", fail)
    with pytest.raises(type(failure)) as error:
      ckpt.restore_latest(_abstract(_state()))
    assert not isinstance(error.value, checkpoint_recovery.DamagedCheckpointError)
    monkeypatch.undo()
    assert ckpt.all_steps() == [1, 2]
  assert not (saved / "checkpoints" / "damaged").exists()


def test_a_machine_failure_on_another_process_stops_this_one_too(
    saved, monkeypatch):
  """Processes agree on each step: when another one could not read it (its
  first vote is False), this one stops with a one-line error instead of
  waiting, and moves nothing."""
  votes = iter([False])
  monkeypatch.setattr(checkpoint_recovery, "_on_every_process",
                      lambda ok: next(votes, ok))
  with checkpoint.Checkpointer(str(saved)) as ckpt:
    with pytest.raises(RuntimeError, match="another process failed to read"):
      ckpt.restore_latest(_abstract(_state()))
  assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == [
      "1", "2"]
