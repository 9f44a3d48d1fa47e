"""Several folders as one source: splits by identity, sampling by weight."""

import csv

import grain
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm import configuration
from ffc_ddpm.data import images
from ffc_ddpm.data import pipeline
from ffc_ddpm.data import sources
from ffc_ddpm.data import synthetic

SIZE = 8
PEOPLE, PHOTOS = 6, 3  # folder "people": 6 identities x 3 photos


def _write_faces(folder, names: list[str]) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for i, name in enumerate(names):
    Image.fromarray(synthetic.render_face(5, i, SIZE)).save(folder / name)


def _write_csv(path, rows) -> str:
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([("file", "identity")] + list(rows))
  return str(path)


@pytest.fixture(name="folders")
def _folders(tmp_path):
  """crops/: 12 faces, no identities; people/: 18 faces and who.csv."""
  _write_faces(tmp_path / "crops", [f"c_{i:02d}.png" for i in range(12)])
  photos = {f"p_{i:02d}.png": f"id{i % PEOPLE}"
            for i in range(PEOPLE * PHOTOS)}
  _write_faces(tmp_path / "people", list(photos))
  table = _write_csv(tmp_path / "who.csv", photos.items())
  return tmp_path / "crops", tmp_path / "people", table, photos


BASE = dict(source="folder", image_size=SIZE, num_val=2, num_test=3,
            split_seed=0)


@pytest.fixture(name="data_config")
def _data_config_fixture(default_config):
  """data_config(**overrides): a folder source's config.data."""

  def make(**overrides):
    config = default_config().data
    config.update(BASE | overrides)
    return config

  return make


def _names(config, split: str) -> list[str]:
  source = sources.create_source(config, split)
  return [source.name(i) for i in range(len(source))]


def _mixed_fields(folders, **overrides) -> dict:
  """crops/ and people/ (by identity: 2 test, 1 validation people)."""
  crops, people, table, _ = folders
  return dict(path=f"{crops},{people}", identities=f",{table}",
              test_identities=2, val_identities=1) | overrides


def _mixed(folders, data_config, **overrides):
  return data_config(**_mixed_fields(folders, **overrides))


# ----------------------------------------------------------------- splits


def test_one_folder_without_new_fields_splits_as_before(folders,
                                                        data_config):
  config = data_config(path=str(folders[0]), split_seed=5)
  files = images.find_images(str(folders[0]))
  for split in sources.SPLITS:
    ids = sources.split_ids(len(files), config, split, ordered=False)
    assert _names(config, split) == [files[i] for i in ids]
  train = sources.create_source(config, "train")
  assert repr(train) == (f"FolderSource(7 of 12 images under "
                         f"{str(folders[0])!r}, size={SIZE})")
  sampler = pipeline._train_sampler(train, seed=0)
  assert isinstance(sampler, grain.samplers.IndexSampler)


def test_identities_are_held_out_whole(folders, data_config):
  _, people, table, photos = folders
  config = data_config(path=str(people), identities=table,
                       test_identities=2, val_identities=1)
  who = {}
  for split in sources.SPLITS:
    names = [n.rsplit("/", 1)[1] for n in _names(config, split)]
    who[split] = {photos[n] for n in names}
    assert names == sorted(n for n in photos if photos[n] in who[split])
    assert who[split] == set(sources.split_identities(
        list(photos.values()), config, split))
  assert [len(who[s]) for s in sources.SPLITS] == [3, 1, 2]
  assert set.union(*who.values()) == set(photos.values())
  tests = set()
  for seed in range(5):
    config.split_seed = seed
    tests.add(frozenset(sources.split_identities(list(photos.values()),
                                                 config, "test")))
  assert len(tests) > 1  # split_seed picks the people


def test_a_mix_is_each_folders_own_split_in_turn(folders, data_config):
  crops, people, table, _ = folders
  mixed = _mixed(folders, data_config)
  alone = [data_config(path=str(crops)),
           data_config(path=str(people), identities=table,
                       test_identities=2, val_identities=1)]
  for split in sources.SPLITS:
    parts = [_names(config, split) for config in alone]
    assert _names(mixed, split) == parts[0] + parts[1]
    source = sources.create_source(mixed, split)
    assert source.parts == tuple(len(p) for p in parts)
    assert [source[i]["index"] for i in range(len(source))] == list(
        range(len(source)))
  test = sources.create_source(mixed, "test")
  assert len(test) == 3 + 2 * PHOTOS
  np.testing.assert_array_equal(
      test[4]["image"], sources.create_source(alone[1], "test")[1]["image"])


# --------------------------------------------------------------- weights


def _folder_draws(weights: tuple[float, ...], n: int,
                  parts=(700, 300)) -> np.ndarray:
  """Which folder each of the first n stream positions reads."""
  sampler = pipeline.MixedSampler(parts, weights, seed=3)
  keys = np.array([sampler[i].record_key for i in range(n)])
  assert keys.min() >= 0 and keys.max() < sum(parts)
  return np.searchsorted(np.cumsum(parts), keys, side="right")


@pytest.mark.parametrize("weights", ["0.7,0.3", "1,3", ""])
def test_weights_are_draw_probabilities(weights, folders, data_config):
  """Whatever the folders' sizes: P(folder 1) = its weight / the sum."""
  train = sources.create_source(_mixed(folders, data_config,
                                       path_weights=weights), "train")
  share = {"0.7,0.3": 0.3, "1,3": 0.75, "": 0.5}[weights]
  np.testing.assert_allclose(train.weights, (1 - share, share))
  n = 4000
  drawn = _folder_draws(train.weights, n).mean()
  assert abs(drawn - share) < 4.5 * np.sqrt(share * (1 - share) / n)


def test_zero_weight_folder_is_never_drawn():
  assert not _folder_draws((1.0, 0.0), 500).any()
  assert _folder_draws((0.0, 1.0), 500).all()
  assert set(_folder_draws((0.5, 0.0, 0.5), 500, (300, 200, 100))) == {0, 2}


def test_no_image_repeats_within_a_pass_of_its_folder():
  parts = (150, 60)
  sampler = pipeline.MixedSampler(parts, (0.5, 0.5), seed=0)
  keys = [sampler[i].record_key for i in range(600)]
  for start, n in zip((0, parts[0]), parts):
    for first in range(0, 600, n):
      window = [key for key in keys[first:first + n]
                if start <= key < start + n]
      assert len(window) == len(set(window)), (start, first)
  again = pipeline.MixedSampler(parts, (0.5, 0.5), seed=0)
  assert [again[i].record_key for i in range(600)] == keys


def test_examples_keep_index_samplers_generators():
  """Augmentation and masks: the generator IndexSampler gives position i."""
  mixed = pipeline.MixedSampler((300, 200), (0.5, 0.5), seed=4)
  plain = grain.samplers.IndexSampler(500, shuffle=True,
                                      seed=pipeline._sampler_seed(4))
  for i in (0, 1, 77):
    assert mixed[i].rng.random() == plain[i].rng.random()


def test_mixed_training_stream_is_weighted_and_resumes(folders,
                                                       default_config):
  config = default_config()
  config.data.update(BASE | _mixed_fields(folders, path_weights="1,0"))
  config.train.batch_size = 4
  iterator = pipeline.create_train_iterator(config)
  first = [next(iterator) for _ in range(2)]
  crops_in_train = 12 - 2 - 3
  assert all(b["index"].max() < crops_in_train for b in first)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  resumed = pipeline.create_train_iterator(config)
  resumed.set_state(state)
  for want, got in zip(expected, [next(resumed) for _ in range(3)]):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key], err_msg=key)


# ----------------------------------------------------------------- errors


def _bad_csv(tmp_path, photos, change: str) -> str:
  rows = list(photos.items())
  if change == "missing":
    rows = rows[1:]
  elif change == "unknown":
    rows.append(("nobody.png", "id9"))
  elif change == "twice":
    rows.append(rows[0])
  return _write_csv(tmp_path / f"{change}.csv", rows)


@pytest.mark.parametrize("change,message", [
    ("missing", r"config\.data\.identities: .*missing\.csv: gives no "
                r"identity for 1 images under .*people \(the first: "
                r"p_00\.png\)"),
    ("unknown", r"config\.data\.identities: .*: 1 files are not images "
                r"under .*people \(the first: nobody\.png\)"),
    ("twice", r"config\.data\.identities: .*: line 20: p_00\.png is listed "
              r"twice"),
])
def test_csv_must_name_every_image_once(change, message, folders,
                                        data_config, tmp_path):
  _, people, _, photos = folders
  config = data_config(path=str(people),
                       identities=_bad_csv(tmp_path, photos, change),
                       test_identities=1)
  with pytest.raises(ValueError, match=message) as error:
    sources.create_source(config, "train")
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides,error,message", [
    (dict(path_weights="1,2,3"), ValueError,
     r"config\.data\.path_weights='1,2,3': expected 2 comma-separated"),
    (dict(path_weights="0.5,-0.5"), ValueError,
     r"config\.data\.path_weights='0\.5,-0\.5': expected 2"),
    (dict(path_weights="a,b"), ValueError, r"config\.data\.path_weights="),
    (dict(path_weights="0,0"), ValueError, r"config\.data\.path_weights="),
    (dict(identities="who.csv"), ValueError,
     r"config\.data\.identities='who\.csv': expected 2 comma-separated"),
    (dict(identities=",nowhere.csv"), FileNotFoundError,
     r"config\.data\.identities: nowhere\.csv: no such file"),
    (dict(test_identities=0, val_identities=0), ValueError,
     r"config\.data\.identities=.*set config\.data\.test_identities"),
    (dict(test_identities=4, val_identities=2), ValueError,
     r"too few identities: 6 found, but config\.data\.val_identities=2 \+ "
     r"config\.data\.test_identities=4"),
])
def test_bad_mixes_name_the_field(overrides, error, message, folders,
                                  data_config):
  config = _mixed(folders, data_config)
  config.update(overrides)
  with pytest.raises(error, match=message) as raised:
    sources.create_source(config, "train")
  assert "\n" not in str(raised.value)


def test_other_bad_fields_name_the_field(folders, data_config, tmp_path):
  crops = str(folders[0])
  cases = [
      (data_config(path=f"{crops},{tmp_path / 'gone'}"), FileNotFoundError,
       r"config\.data\.path: folder '.*gone' does not exist"),
      (data_config(path=f"{crops},,{crops}"), ValueError,
       r"config\.data\.path=.*: an empty folder name"),
      (data_config(path=crops, test_identities=2), ValueError,
       r"config\.data\.test_identities=2: needs config\.data\.identities"),
      (data_config(source="synthetic", path_weights="1"), ValueError,
       r"config\.data\.path_weights='1': only data\.source='folder'"),
  ]
  for config, error, message in cases:
    with pytest.raises(error, match=message):
      sources.create_source(config, "train")


def test_validate_and_check_data_path_check_the_new_fields(
    folders, default_config, tmp_path):
  crops, people, table, _ = folders
  config = default_config()
  config.data.source = "folder"
  config.data.path = f"{crops},{people}"
  config.data.identities = f",{table}"
  config.data.test_identities = 2
  configuration.validate(config)
  configuration.check_data_path(config)
  config.data.path_weights = "1"
  with pytest.raises(configuration.ConfigError,
                     match=r"config\.data\.path_weights='1': expected 2"):
    configuration.validate(config)
  config.data.path_weights = ""
  config.data.path = f"{crops},{tmp_path / 'gone'}"
  with pytest.raises(FileNotFoundError,
                     match=r"config\.data\.path='.*gone': no such directory"):
    configuration.check_data_path(config)
  config.data.path = f"{crops},{people}"
  config.data.identities = f",{tmp_path / 'none.csv'}"
  with pytest.raises(FileNotFoundError,
                     match=r"config\.data\.identities: no such file"):
    configuration.check_data_path(config)
  for field, value in [("data.augment.pad_mode", "wrap"),
                       ("data.augment.zoom_out_min_scale", 0.0),
                       ("data.augment.rotate_degrees", 181.0),
                       ("data.val_identities", -1)]:
    bad = default_config()
    section, name = field.rsplit(".", 1)
    parent = bad
    for part in section.split("."):
      parent = parent[part]
    parent[name] = value
    with pytest.raises(configuration.ConfigError,
                       match=rf"config\.{field}={value!r}: expected"):
      configuration.validate(bad)


# ------------------------------------------------------------- real data


def test_crops_and_aligned_faces_split_by_identity(shared_dir, data_config):
  """The issue's mix: 22,711 crops (photos held out) and 5,100 aligned
  faces of 170 people (17 + 8 people held out)."""
  data = shared_dir / "data"
  table = data / "celeba_aligned_128_identities.csv"
  with open(table, newline="") as f:
    who = {row["file"]: row["identity"] for row in csv.DictReader(f)}
  config = data_config(
      path=f"{data / 'celeba_crops_128'},{data / 'celeba_aligned_128'}",
      identities=f",{table}", path_weights="0.5,0.5", image_size=64,
      num_val=64, num_test=1000, test_identities=17, val_identities=8)
  crops_alone = data_config(path=str(data / "celeba_crops_128"),
                            image_size=64, num_val=64, num_test=1000)
  people = {}
  for split, held in (("train", 170 - 25), ("validation", 8), ("test", 17)):
    source = sources.create_source(config, split)
    crops_part = sources.create_source(crops_alone, split)
    names = [source.name(i) for i in range(len(source))]
    n_crops = len(crops_part)
    assert names[:n_crops] == [crops_part.name(i) for i in range(n_crops)]
    people[split] = {who[n.rsplit("/", 1)[1]] for n in names[n_crops:]}
    assert len(people[split]) == held
    assert len(names) - n_crops == 30 * held  # every photo of each
  assert not people["train"] & people["validation"]
  assert not people["train"] & people["test"]
  assert not people["validation"] & people["test"]
  test = sources.create_source(config, "test")
  assert test.parts == (1000, 17 * 30)
  assert test[1000]["image"].shape == (64, 64, 3)
