"""Where face images come from: one split of a data source, read by index.

`create_source(config.data, split)` returns a random-access source (len and
getitem, picklable, so grain workers can read it) whose records are
`{"image": uint8 (S, S, 3), "index": int}`, S = data.image_size and index the
record's position within the split (stable across runs). Sources:

  synthetic    procedural faces (`synthetic.render_face`) of the family
               `data.split_seed`: train is faces [0, num_train), validation
               the next num_val, test the num_test after those.
  folder       every jpg/png/webp under `data.path`, searched recursively,
               sorted by relative path, squared by `data.resize`; or
               under several folders, mixed (below).
  tfds         TFDS `celeb_a_hq/{S}`, built once from `data{S}x{S}.tar` in the
               manual-download folder `data.path` into `data.tfds_data_dir`.
  arrayrecord  a file packed by `tools/prepare_dataset.py`.

Splits are deterministic. tfds: images sorted by file name, test = the last
num_test, validation = the num_val before them, train = the rest; with the
paper's 27,982 / 18 / 2,000 the test set is sorted positions 28,000-29,999.
folder and arrayrecord: a permutation seeded by `data.split_seed` holds out
num_test then num_val images (each split kept in name order); split_seed = -1
selects the tfds rule instead (last names are the test set), which gives the
paper's split on a folder of the 30,000 CelebA-HQ images. Test images are
never part of the train split.

Several folders (`folders`): data.path = "A,B" (commas separate folders).
Each folder is split on its own, exactly as if it were alone, so its test
images are the same in any mix; a split of the mix is A's part of it then
B's, `index` counting through both. data.path_weights = "0.7,0.3" (""
= equal) is the probability that a training example is drawn from each
folder, whatever its size (`pipeline.MixedSampler`); a weight of 0 keeps a
folder out of training but in validation and test.

Identities: data.identities names for each folder (comma-separated, ""
for none) a CSV with columns `file,identity` giving the person of every
image of the folder (file relative to it). Such a folder holds out whole
people instead of num_test / num_val photos: data.test_identities then
data.val_identities of its identities (sorted as strings, permuted by
split_seed; -1: the last ones), with every photo of each, so no person is
in two splits; `split_identities` says which.

Unreadable images, and images declaring far more pixels than image_size
needs (`images.pixel_budget`), raise `images.BadImageError` naming the file;
the pipeline decides whether to skip them (`data.skip_bad_files`).
"""

import csv
import dataclasses
import logging
import os

import numpy as np

from ffc_ddpm.data import images
from ffc_ddpm.data import records
from ffc_ddpm.data import synthetic

SOURCES = ("synthetic", "folder", "tfds", "arrayrecord")
SPLITS = ("train", "validation", "test")
# Image files are read by `images`; these two are here for callers that
# think of a folder of images as a source (the inpaint command).
IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS
load_image = images.load_image
_TFDS_SIZES = tuple(2**k for k in range(11))  # celeb_a_hq builds 1..1024


# ----------------------------------------------------------------- splits


def split_ids(num_records: int, data_config, split: str,
              ordered: bool) -> np.ndarray:
  """Which of `num_records` (in name order) belong to `split`, ascending.

  ordered: test is the tail, validation just before it; otherwise a
  permutation seeded by data.split_seed holds them out (split_seed < 0
  falls back to the ordered rule).
  """
  return _held_out(num_records, data_config, split, ordered,
                   ("num_val", "num_test"), "images")


def _held_out(count: int, data_config, split: str, ordered: bool,
              fields: tuple[str, str], unit: str) -> np.ndarray:
  """split_ids of `count` things (images or identities), holding out the
  numbers in data_config's `fields` (validation, test)."""
  num_val, num_test = (getattr(data_config, f) for f in fields)
  val_field, test_field = (f"config.data.{f}" for f in fields)
  if num_val < 0 or num_test < 0:
    raise ValueError(f"{val_field}={num_val} and {test_field}={num_test} "
                     "must be >= 0")
  if count - num_val - num_test < 1:
    raise ValueError(
        f"too few {unit}: {count} found, but {val_field}={num_val} + "
        f"{test_field}={num_test} leave none to train on")
  if ordered or data_config.split_seed < 0:
    order = np.arange(count)[::-1]  # test first, from the end
  else:
    order = np.random.default_rng(data_config.split_seed).permutation(count)
  held = {"test": order[:num_test],
          "validation": order[num_test:num_test + num_val],
          "train": order[num_test + num_val:]}
  return np.sort(held[split])


def split_identities(identities: list[str], data_config,
                     split: str) -> list[str]:
  """The identities of `split`, sorted: of the distinct `identities` (as
  strings, sorted), data.test_identities then data.val_identities are
  held out as split_ids holds out photos."""
  names = sorted(set(identities))
  ids = _held_out(len(names), data_config, split, False,
                  ("val_identities", "test_identities"), "identities")
  return [names[i] for i in ids]


# ---------------------------------------------------------------- folders


@dataclasses.dataclass(frozen=True)
class Folder:
  """One folder of data.path, with its fields of the other data.* lists."""
  path: str
  weight: float  # probability that a training example comes from it
  identities: str  # its file,identity CSV; "" = held out by photo


# The fields only the folder source reads, and their values when unused.
_FOLDER_FIELDS = (("path_weights", ""), ("identities", ""),
                  ("test_identities", 0), ("val_identities", 0))


def _weights(data_config, count: int) -> list[float]:
  """data.path_weights as probabilities ("" = equal)."""
  text = data_config.get("path_weights", "")
  if not text:
    return [1.0 / count] * count
  try:
    weights = np.array([float(w) for w in text.split(",")])
  except ValueError:
    weights = np.array([np.nan])
  if (len(weights) != count or not np.isfinite(weights).all()
      or weights.min() < 0 or weights.sum() <= 0):
    raise ValueError(
        f"config.data.path_weights={text!r}: expected {count} comma-separated"
        f" numbers >= 0, not all 0 (one per folder of config.data.path="
        f"{data_config.path!r})")
  return (weights / weights.sum()).tolist()


def _identity_files(data_config, count: int) -> list[str]:
  """data.identities, one entry per folder ("" = none)."""
  text = data_config.get("identities", "")
  entries = [e.strip() for e in text.split(",")] if text else [""] * count
  if len(entries) != count:
    raise ValueError(
        f"config.data.identities={text!r}: expected {count} comma-separated "
        f"CSV files (\"\" for a folder without), one per folder of "
        f"config.data.path={data_config.path!r}")
  return entries


def folders(data_config) -> list[Folder]:
  """The folders of data.path (one, "", if it is empty) with their weight
  and identities CSV. Checks that the fields agree; reads no file."""
  paths = [p.strip() for p in data_config.path.split(",")]
  if len(paths) > 1 and not all(paths):
    raise ValueError(f"config.data.path={data_config.path!r}: an empty "
                     "folder name (separate folders by single commas)")
  named = [Folder(*entry) for entry in zip(
      paths, _weights(data_config, len(paths)),
      _identity_files(data_config, len(paths)))]
  held = {f: data_config.get(f, 0) for f in ("test_identities",
                                             "val_identities")}
  with_csv = any(f.identities for f in named)
  if with_csv and not any(held.values()):
    raise ValueError(
        f"config.data.identities={data_config.identities!r}: set "
        "config.data.test_identities and/or val_identities, how many "
        "identities to hold out (with both 0 it would change nothing)")
  for field, count in held.items():
    if count and not with_csv:
      raise ValueError(
          f"config.data.{field}={count}: needs config.data.identities, a "
          "file,identity CSV for a folder of config.data.path")
  return named


def check_folder_fields(data_config) -> None:
  """A one-line ValueError naming the field unless data.path_weights,
  identities, test_identities and val_identities fit data.source and
  data.path (reads no file)."""
  if data_config.source == "folder":
    folders(data_config)
    return
  for field, unused in _FOLDER_FIELDS:
    value = data_config.get(field, unused)
    if value != unused:
      raise ValueError(
          f"config.data.{field}={value!r}: only data.source='folder' reads "
          f"it (config.data.source={data_config.source!r})")


def read_identities(csv_path: str, folder: str,
                    files: list[str]) -> list[str]:
  """The identity of each of `files` (the images under `folder`), from a
  CSV `file,identity` naming each of them once, relative to `folder`."""
  where = f"config.data.identities: {csv_path}"
  if not os.path.isfile(csv_path):
    raise FileNotFoundError(f"{where}: no such file")
  with open(csv_path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ["file", "identity"]:
    raise ValueError(f"{where}: the first line must be 'file,identity'")
  of = {}
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 2 or not row[0].strip() or not row[1].strip():
      raise ValueError(f"{where}: line {line} is not 'file,identity'")
    name = os.path.normpath(row[0].strip())
    if name in of:
      raise ValueError(f"{where}: line {line}: {name} is listed twice")
    of[name] = row[1].strip()
  names = [os.path.relpath(f, folder) for f in files]
  unknown = sorted(set(of) - set(names))
  if unknown:
    raise ValueError(f"{where}: {len(unknown)} files are not images under "
                     f"{folder} (the first: {unknown[0]})")
  missing = [n for n in names if n not in of]
  if missing:
    raise ValueError(f"{where}: gives no identity for {len(missing)} images "
                     f"under {folder} (the first: {missing[0]})")
  return [of[n] for n in names]


# ---------------------------------------------------------------- sources


class SyntheticSource:
  """Procedural faces `first .. first + count - 1` of family `family_seed`."""

  def __init__(self, family_seed: int, first: int, count: int,
               image_size: int):
    self._family, self._first, self._count = family_seed, first, count
    self._size = image_size

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> dict:
    index = _check_index(index, self._count)
    face = synthetic.render_face(self._family, self._first + index, self._size)
    return {"image": face, "index": index}

  def name(self, index: int) -> str:
    return f"synthetic/{self._family}/{self._first + index:07d}"

  def __repr__(self) -> str:
    return (f"SyntheticSource(family={self._family}, faces {self._first}.."
            f"{self._first + self._count - 1}, size={self._size})")


class _SplitSource:
  """Records `ids` of an underlying collection, squared to image_size."""

  def __init__(self, ids: np.ndarray, image_size: int, resize: str):
    if resize not in images.RESIZE_POLICIES:
      raise ValueError(f"config.data.resize={resize!r} is not one of "
                       f"{images.RESIZE_POLICIES}")
    self._ids, self._size, self._resize = ids, image_size, resize

  def __len__(self) -> int:
    return len(self._ids)

  def __getitem__(self, index: int) -> dict:
    index = _check_index(index, len(self._ids))
    image = self._read(int(self._ids[index]))
    image = images.resize_image(image, self._size, self._resize)
    return {"image": image, "index": index}

  def _read(self, record_id: int) -> np.ndarray:
    raise NotImplementedError


class FolderSource(_SplitSource):
  """Image files, read and decoded on demand.

  Of several folders: `ids` are the folders' split records one folder after
  the other, `parts` how many each gives and `weights` the probability
  that a training example comes from each (`pipeline.MixedSampler`).
  """

  def __init__(self, files: list[str], ids: np.ndarray, image_size: int,
               resize: str, parts: tuple[int, ...] | None = None,
               weights: tuple[float, ...] = (1.0,)):
    super().__init__(ids, image_size, resize)
    self._files = files
    self.parts = (len(ids),) if parts is None else tuple(parts)
    self.weights = tuple(weights)

  def _read(self, record_id: int) -> np.ndarray:
    return images.load_image(self._files[record_id], self._size)

  def name(self, index: int) -> str:
    return self._files[self._ids[index]]

  def __repr__(self) -> str:
    if len(self.parts) == 1:
      return (f"FolderSource({len(self)} of {len(self._files)} images under "
              f"{os.path.commonpath(self._files)!r}, size={self._size})")
    return (f"FolderSource({len(self)} of {len(self._files)} images of "
            f"{len(self.parts)} folders under "
            f"{os.path.commonpath(self._files)!r}, parts={self.parts}, "
            f"weights={self.weights}, size={self._size})")


class _LazyReader:
  """Opens a random-access reader on first use in each process.

  Readers hold file handles that do not survive pickling into grain worker
  processes, so only the recipe travels.
  """

  def __init__(self):
    self._reader = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_reader"] = None
    return state

  @property
  def reader(self):
    if self._reader is None:
      self._reader = self._open()
    return self._reader

  def _open(self):
    raise NotImplementedError


class ArrayRecordSource(_SplitSource, _LazyReader):
  """Records of a file packed by tools/prepare_dataset.py."""

  def __init__(self, path: str, ids: np.ndarray, image_size: int,
               resize: str):
    _SplitSource.__init__(self, ids, image_size, resize)
    _LazyReader.__init__(self)
    self._path = path

  def _open(self):
    return open_array_record(self._path)

  def _read(self, record_id: int) -> np.ndarray:
    where = f"{self._path} record {record_id}"
    return records.decode_record(self.reader[record_id], where)[1]

  def name(self, index: int) -> str:
    record_id = int(self._ids[index])
    data = self.reader[record_id]
    return records.decode_record(data, f"{self._path} record {record_id}")[0]

  def __repr__(self) -> str:
    return (f"ArrayRecordSource({len(self)} records of {self._path!r}, "
            f"size={self._size})")


class TfdsSource(_SplitSource, _LazyReader):
  """TFDS celeb_a_hq/{S}, records visited in file-name order."""

  def __init__(self, data_dir: str, image_size: int, order: np.ndarray,
               ids: np.ndarray):
    _SplitSource.__init__(self, order[ids], image_size, "resize")
    _LazyReader.__init__(self)
    self._data_dir = data_dir

  def _open(self):
    return _tfds_reader(self._data_dir, self._size)

  def _read(self, record_id: int) -> np.ndarray:
    record = self.reader[record_id]
    where = (f"celeb_a_hq/{self._size} record {record_id} "
             f"({record['image/filename'].decode()})")
    return images.decode_image(record["image"], where, self._size)

  def name(self, index: int) -> str:
    return self.reader[int(self._ids[index])]["image/filename"].decode()

  def __repr__(self) -> str:
    return f"TfdsSource(celeb_a_hq/{self._size}, {len(self)} images)"


def open_array_record(path: str):
  """A grain random-access reader of an ArrayRecord file (records: bytes)."""
  import grain  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"ArrayRecord file {path!r} does not exist")
  try:
    return grain.sources.ArrayRecordDataSource(path)
  except Exception as e:  # array_record reports bad files in many ways
    raise ValueError(f"{path}: not a readable ArrayRecord file ({e})") from None


def _check_index(index, length: int) -> int:
  index = int(index)
  if not 0 <= index < length:
    raise IndexError(f"record {index} out of range [0, {length})")
  return index


# ------------------------------------------------------------------ tfds


def _tfds_builder(data_dir: str, image_size: int):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(f"celeb_a_hq/{image_size}", data_dir=data_dir or None,
                      file_format="array_record")


def _tfds_reader(data_dir: str, image_size: int):
  """Random access to the prepared records, images left encoded."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(data_dir, image_size)
  return builder.as_data_source(
      split="train", decoders={"image": tfds.decode.SkipDecoding()})


def prepare_tfds(data_config) -> None:
  """Builds TFDS celeb_a_hq/{S} from data{S}x{S}.tar once (no-op if built)."""
  size = data_config.image_size
  if size not in _TFDS_SIZES:
    raise ValueError(f"config.data.image_size={size}: TFDS celeb_a_hq exists "
                     f"only at {_TFDS_SIZES}")
  builder = _tfds_builder(data_config.tfds_data_dir, size)
  if builder.is_prepared():
    return
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise RuntimeError(
        f"TFDS celeb_a_hq/{size} is not prepared in "
        f"config.data.tfds_data_dir={data_config.tfds_data_dir!r}; prepare it "
        f"once before a multi-host run: python tools/prepare_dataset.py "
        f"--mode=tfds --input=DIR --tfds_data_dir=DIR --size={size}")
  manual = data_config.path
  if not manual:
    raise ValueError(
        "config.data.path is empty: set it to the manual-download folder "
        f"holding data{size}x{size}.tar (TFDS celeb_a_hq)")
  tar = os.path.join(manual, f"data{size}x{size}.tar")
  if not os.path.isfile(tar):
    raise FileNotFoundError(
        f"{tar} not found: TFDS celeb_a_hq/{size} is built from it "
        f"(config.data.path={manual!r})")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.info("Preparing TFDS celeb_a_hq/%d from %s into %s", size, tar,
               builder.data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, try_download_gcs=False))


def _tfds_order(data_config) -> np.ndarray:
  """Record ids in file-name order (TFDS stores records shuffled).

  Reading every file name takes one pass over the data, so the order is
  cached beside the prepared records.
  """
  builder = _tfds_builder(data_config.tfds_data_dir, data_config.image_size)
  cache = os.path.join(builder.data_dir, "ffc_ddpm_name_order.npy")
  reader = _tfds_reader(data_config.tfds_data_dir, data_config.image_size)
  if os.path.isfile(cache):
    order = np.load(cache)
    if len(order) == len(reader):
      return order
  names = []
  for start in range(0, len(reader), 512):
    chunk = range(start, min(start + 512, len(reader)))
    names.extend(r["image/filename"] for r in reader.__getitems__(chunk))
  order = np.argsort(np.array(names), kind="stable")
  try:
    np.save(cache, order)
  except OSError as e:
    logging.warning("Could not cache the celeb_a_hq name order (%s)", e)
  return order


# --------------------------------------------------------------- factory


def _require_path(data_config, what: str, path: str | None = None) -> str:
  """`path` (by default data.path, else one of its folders) if it exists."""
  if not data_config.path:
    raise ValueError(f"config.data.path is empty: the {data_config.source} "
                     f"source needs {what}")
  path = data_config.path if path is None else path
  if not os.path.exists(path):
    field = (f"config.data.path={path!r}" if path == data_config.path
             else f"config.data.path: folder {path!r}")
    raise FileNotFoundError(f"{field} does not exist ({what} expected)")
  return path


def _synthetic(data_config, split: str) -> SyntheticSource:
  n_train, n_val = data_config.num_train, data_config.num_val
  if n_train < 1:
    raise ValueError(f"config.data.num_train={n_train} must be >= 1")
  first = {"train": 0, "validation": n_train,
           "test": n_train + n_val}[split]
  count = {"train": n_train, "validation": n_val,
           "test": data_config.num_test}[split]
  return SyntheticSource(data_config.split_seed, first, count,
                         data_config.image_size)


def _folder_split(folder: Folder, data_config, split: str
                  ) -> tuple[list[str], np.ndarray]:
  """One folder's image files and the ids of `split` among them."""
  files = images.find_images(
      _require_path(data_config, "a folder of images", folder.path))
  if not folder.identities:
    return files, split_ids(len(files), data_config, split, ordered=False)
  identities = read_identities(folder.identities, folder.path, files)
  chosen = set(split_identities(identities, data_config, split))
  return files, np.array([i for i, who in enumerate(identities)
                          if who in chosen], np.int64)


def _folder(data_config, split: str) -> FolderSource:
  named = folders(data_config)
  files, ids, parts = [], [], []
  for folder in named:
    folder_files, folder_ids = _folder_split(folder, data_config, split)
    ids.append(folder_ids + len(files))
    files.extend(folder_files)
    parts.append(len(folder_ids))
  return FolderSource(files, np.concatenate(ids), data_config.image_size,
                      data_config.resize, parts,
                      tuple(f.weight for f in named))


def _arrayrecord(data_config, split: str) -> ArrayRecordSource:
  path = _require_path(data_config, "an ArrayRecord file written by "
                       "tools/prepare_dataset.py")
  ids = split_ids(len(open_array_record(path)), data_config, split,
                  ordered=False)
  return ArrayRecordSource(path, ids, data_config.image_size,
                           data_config.resize)


def _tfds(data_config, split: str) -> TfdsSource:
  prepare_tfds(data_config)
  order = _tfds_order(data_config)
  ids = split_ids(len(order), data_config, split, ordered=True)
  return TfdsSource(data_config.tfds_data_dir, data_config.image_size, order,
                    ids)


_FACTORIES = {"synthetic": _synthetic, "folder": _folder, "tfds": _tfds,
              "arrayrecord": _arrayrecord}


def create_source(data_config, split: str):
  """The `split` ("train", "validation" or "test") of config.data's source."""
  if data_config.source not in _FACTORIES:
    raise ValueError(f"config.data.source={data_config.source!r} is not one "
                     f"of {SOURCES}")
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")
  check_folder_fields(data_config)
  return _FACTORIES[data_config.source](data_config, split)
