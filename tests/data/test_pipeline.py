"""The grain pipeline: augmentation, batches, resumption, bad files, eval."""

import logging
import types

import grain
import jax
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm import parallel
from ffc_ddpm.data import images
from ffc_ddpm.data import masks
from ffc_ddpm.data import pipeline
from ffc_ddpm.data import sources
from ffc_ddpm.data import synthetic

SIZE = 32


@pytest.fixture(name="config")
def _config(default_config):
  """A tiny synthetic-face training config."""
  config = default_config()
  config.data.image_size = SIZE
  config.data.num_train, config.data.num_val, config.data.num_test = 40, 3, 5
  config.train.batch_size = 4
  return config


def _take(iterator, count: int) -> list[dict]:
  return [{k: np.array(v) for k, v in next(iterator).items()}
          for _ in range(count)]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_bad_augment_ranges_are_named(config):
  config.data.augment.brightness = 1.5
  with pytest.raises(ValueError, match="config.data.augment.brightness=1.5"):
    pipeline.create_train_iterator(config)


# --------------------------------------------------------------- training


def test_train_batches(config):
  config.data.train_masks = "center"
  batches = _take(pipeline.create_train_iterator(config), 3)
  for batch in batches:
    assert sorted(batch) == ["image", "index", "mask"]
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert batch["image"].dtype == np.float32
    assert -1 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["mask"].shape == (4, SIZE, SIZE, 1)
    np.testing.assert_array_equal(
        batch["mask"], np.broadcast_to(masks.eval_mask("center", SIZE, 0, 0),
                                       (4, SIZE, SIZE, 1)))
    assert batch["index"].dtype == np.int32
  seen = np.concatenate([b["index"] for b in batches])
  assert len(set(seen.tolist())) == 12 and seen.max() < 40  # no repeats


def test_a_list_of_train_masks_draws_each_protocol(config):
  config.data.train_masks = "center, box"
  batches = _take(pipeline.create_train_iterator(config), 5)
  center = masks.eval_mask("center", SIZE, 0, 0)
  is_center = [np.array_equal(m, center)
               for b in batches for m in b["mask"]]
  # 20 draws: both protocols appear (all-one-kind has probability 2e-6).
  assert 0 < sum(is_center) < len(is_center)


def test_epochs_cover_the_split_and_reshuffle(config):
  config.data.num_train = 8
  epochs = np.concatenate(
      [b["index"] for b in _take(pipeline.create_train_iterator(config), 4)])
  assert sorted(epochs[:8]) == list(range(8))
  assert sorted(epochs[8:]) == list(range(8))
  assert not np.array_equal(epochs[:8], epochs[8:])


def test_processes_read_disjoint_shares(config, monkeypatch):
  config.data.num_train, config.train.batch_size = 16, 8
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  shares = []
  for process in range(2):
    monkeypatch.setattr(jax, "process_index", lambda p=process: p)
    batches = _take(pipeline.create_train_iterator(config), 2)
    assert batches[0]["image"].shape[0] == 4  # half the global batch
    shares.append(np.concatenate([b["index"] for b in batches]))
  assert sorted(np.concatenate(shares)) == list(range(16))


def test_same_seed_same_stream_other_seed_other_stream(config):
  first = _take(pipeline.create_train_iterator(config), 2)
  _assert_same_batches(first, _take(pipeline.create_train_iterator(config), 2))
  config.seed = 1
  other = _take(pipeline.create_train_iterator(config), 2)
  assert not np.array_equal(first[0]["index"], other[0]["index"])


def test_resumed_iterator_yields_the_same_batches(config, tmp_path):
  iterator = pipeline.create_train_iterator(config)
  _take(iterator, 2)
  state = iterator.get_state()
  expected = _take(iterator, 3)
  resumed = pipeline.create_train_iterator(config)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 3), expected)
  # As orbax stores it with each checkpoint: grain's checkpoint handler.
  handler = grain.checkpoint.CheckpointHandler()
  saved = pipeline.create_train_iterator(config)
  _take(saved, 2)
  handler.save(tmp_path, saved)
  restored = handler.restore(tmp_path, pipeline.create_train_iterator(config))
  _assert_same_batches(_take(restored, 3), expected)


def test_worker_processes_give_the_same_examples(config):
  """Two workers: each example (index, augmentation, mask) is unchanged,
  only the grouping into batches differs; their state resumes too."""
  in_process = _take(pipeline.create_train_iterator(config), 4)
  config.data.num_workers = 2
  with_workers = pipeline.create_train_iterator(config)
  got = _take(with_workers, 2)
  state = with_workers.get_state()
  later = _take(with_workers, 2)

  def by_index(batches):
    return {int(i): (b["image"][r], b["mask"][r]) for b in batches
            for r, i in enumerate(b["index"])}

  ours, theirs = by_index(in_process), by_index(got + later)
  assert ours.keys() == theirs.keys()
  for index in ours:
    np.testing.assert_array_equal(ours[index][0], theirs[index][0])
    np.testing.assert_array_equal(ours[index][1], theirs[index][1])
  resumed = pipeline.create_train_iterator(config)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 2), later)


def test_batches_become_global_arrays_on_the_mesh(config):
  mesh = parallel.create_mesh()
  batch = next(pipeline.create_train_iterator(config, mesh=mesh))
  global_batch = parallel.global_batch(batch, mesh)
  assert global_batch["image"].shape == (4, SIZE, SIZE, 3)
  assert global_batch["image"].sharding == parallel.data_sharding(mesh)
  np.testing.assert_array_equal(np.asarray(global_batch["mask"]),
                                batch["mask"])
  three_devices = types.SimpleNamespace(devices=np.empty((3, 1), object))
  with pytest.raises(ValueError, match="batch_size=4 must be a multiple"):
    pipeline.create_train_iterator(config, mesh=three_devices)


# -------------------------------------------------------------- bad files


@pytest.fixture
def folder_with_bad_file(tmp_path):
  for i in range(6):
    face = synthetic.render_face(2, i, SIZE)
    Image.fromarray(face).save(tmp_path / f"{i}.png")
  (tmp_path / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  return tmp_path


def _folder_config(config, folder):
  config.data.source, config.data.path = "folder", str(folder)
  config.data.num_val, config.data.num_test = 0, 0
  return config


def test_bad_file_stops_training_with_its_name(config, folder_with_bad_file):
  config = _folder_config(config, folder_with_bad_file)
  iterator = pipeline.create_train_iterator(config)
  with pytest.raises(images.BadImageError,
                     match="3.png.*skip_bad_files=True"):
    _take(iterator, 3)


def test_bad_files_skipped_and_counted(config, folder_with_bad_file, caplog):
  config = _folder_config(config, folder_with_bad_file)
  config.data.skip_bad_files = True
  with caplog.at_level(logging.WARNING):
    batches = _take(pipeline.create_train_iterator(config), 3)
  seen = np.concatenate([b["index"] for b in batches])
  assert 3 not in seen  # the unreadable file never appears
  assert "3.png" in caplog.text
  assert "unreadable images skipped so far" in caplog.text


# ------------------------------------------------------------- evaluation


def test_eval_batches_are_deterministic_and_padded(config):
  batches = list(pipeline.eval_batches(config, "test", "random", 5, 4))
  assert len(batches) == 2
  assert batches[1]["valid"].tolist() == [True, False, False, False]
  assert batches[0]["index"].tolist() == [0, 1, 2, 3]
  source = sources.create_source(config.data, "test")
  for batch in batches:
    for row, index in enumerate(batch["index"]):
      if not batch["valid"][row]:
        assert not batch["image"][row].any()
        continue
      expected = source[index]["image"] / 127.5 - 1  # no augmentation
      np.testing.assert_allclose(batch["image"][row], expected, atol=1e-6)
      np.testing.assert_array_equal(
          batch["mask"][row], masks.eval_mask("random", SIZE, 0, index))
  again = list(pipeline.eval_batches(config, "test", "random", 5, 4))
  _assert_same_batches(batches, again)
  started = next(pipeline.eval_batches(config, "test", "random", 2, 4,
                                       start=3))
  assert started["index"].tolist() == [3, 4, -1, -1]


def test_eval_batches_split_over_processes(config, monkeypatch):
  whole = next(pipeline.eval_batches(config, "validation", "center", 3, 4))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  halves = []
  for process in range(2):
    monkeypatch.setattr(jax, "process_index", lambda p=process: p)
    halves.append(next(pipeline.eval_batches(config, "validation", "center",
                                             3, 4)))
  for key in whole:
    np.testing.assert_array_equal(
        np.concatenate([h[key] for h in halves]), whole[key])


def test_eval_leaves_out_bad_files(config, folder_with_bad_file):
  """Test split = the last 5 names (1..5.png); 3.png is unreadable."""
  config = _folder_config(config, folder_with_bad_file)
  config.data.num_test, config.data.split_seed = 5, -1
  with pytest.raises(images.BadImageError, match="3.png"):
    list(pipeline.eval_batches(config, "test", "center", 5, 6))
  config.data.skip_bad_files = True
  batch = next(pipeline.eval_batches(config, "test", "center", 5, 6))
  assert batch["valid"].tolist() == [True, True, False, True, True, False]
  assert not batch["image"][2].any()
