"""The input pipeline: shuffle, augment, mask and batch with grain.

Training (`create_train_iterator`): a grain DataLoader over the train split,
shuffled globally and afresh every epoch from `config.seed` (of several
folders: each example's folder drawn by data.path_weights, `MixedSampler`);
process p of P reads positions p, p + P, ... of that order, so hosts see
disjoint images.
Each example gets the paper's augmentation (random crop, horizontal flip,
colour jitter; ranges in `config.data.augment`) and a mask of protocol
`config.data.train_masks`, all drawn from a per-example generator that grain
derives from the seed and the example's position in the stream. So every
example looks the same whatever the number of workers (which only changes
how examples are grouped into batches), and an iterator restored with
`set_state` (same data.num_workers) continues exactly where the saved one
stopped.

Evaluation (`eval_batches`): the split in order, no augmentation, masks from
`masks.eval_mask(name, size, config.seed, index)`, padded to full batches with
a `valid` flag.

Batches are host-local numpy dicts: image float32 (B, H, W, 3) in [-1, 1],
mask float32 (B, H, W, 1) with 1 = missing, index int32 (B,) = position in
the split.
"""

import logging
import sys
from typing import Iterator

from absl import flags
import grain
import jax
import numpy as np

from ffc_ddpm import parallel
from ffc_ddpm.data import augment
from ffc_ddpm.data import images
from ffc_ddpm.data import masks
from ffc_ddpm.data import sources

# ---------------------------------------------------------- bad files


def _with_hint(error: images.BadImageError) -> images.BadImageError:
  return images.BadImageError(
      f"{error} [set config.data.skip_bad_files=True to skip unreadable "
      f"images]")


class SkippingSource:
  """A source whose unreadable records are replaced or refused.

  skip=True: an unreadable record is logged (naming the file) and replaced
  by the next readable one; the record's "skipped" field counts how many
  were passed over. skip=False: the error is raised with a hint.
  """

  def __init__(self, source, skip: bool):
    self._source, self._skip = source, skip

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    for offset in range(len(self._source)):
      try:
        record = self._source[(index + offset) % len(self._source)]
      except images.BadImageError as e:
        if not self._skip:
          raise _with_hint(e) from None
        logging.warning("Skipping unreadable image: %s", e)
        continue
      return dict(record, skipped=offset)
    raise images.BadImageError(f"no readable image in {self._source!r}")

  def __repr__(self) -> str:
    return f"SkippingSource({self._source!r}, skip={self._skip})"


# --------------------------------------------------------------- training


class TrainExample(grain.transforms.RandomMap):
  """Source record -> augmented model-range image, its mask and index."""

  def __init__(self, ranges: augment.Ranges, mask_names: tuple[str, ...],
               image_size: int):
    self._ranges, self._masks, self._size = ranges, mask_names, image_size

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    draw = augment.sample(self._ranges, rng)
    name = self._masks[rng.integers(len(self._masks))]
    return {
        "image": augment.to_model_range(augment.apply(record["image"], draw)),
        "mask": masks.sample_mask(name, self._size, rng),
        "index": np.int32(record["index"]),
        "skipped": np.int32(record["skipped"]),
    }


def _sampler_seed(seed: int, *purpose: int) -> int:
  """The 32-bit shuffle seed derived from config.seed (grain wants < 2**32);
  `purpose` derives further ones (MixedSampler's)."""
  sequence = np.random.SeedSequence([seed, 0x5EED, *purpose])  # data order
  return int(sequence.generate_state(1)[0])


class MixedSampler:
  """grain sampler over the train split of several folders: position i of
  the stream comes from folder k with probability weights[k].

  Position i draws its folder from its own generator, then takes position
  i of that folder's endless order, reshuffled every len(folder) positions
  as grain's IndexSampler does, so no image repeats within len(folder)
  positions. The example's generator (augmentation, mask) is IndexSampler's
  Philox(seed + i). All of it is a function of i alone: the stream resumes
  from a saved position and is the same for any number of workers.
  """

  def __init__(self, parts: tuple[int, ...], weights: tuple[float, ...],
               seed: int):
    self._parts, self._weights, self._seed = parts, weights, seed
    self._offsets = np.cumsum((0,) + tuple(parts[:-1]))
    bounds = np.cumsum(weights)
    self._bounds = bounds / bounds[-1]  # the last exactly 1
    self._orders = [grain.MapDataset.range(n).shuffle(
        seed=_sampler_seed(seed, k + 1)) for k, n in enumerate(parts)]
    self._example_seed = _sampler_seed(seed)
    # The second word of the folder draws' Philox key: nonzero, so never
    # an example's key.
    self._folder_seed = _sampler_seed(seed, 0) | 1

  def __len__(self) -> int:
    return sys.maxsize  # endless, as IndexSampler without num_epochs

  def folder(self, index: int) -> int:
    """Which folder stream position `index` reads."""
    draw = np.random.Generator(
        np.random.Philox(key=[index, self._folder_seed])).random()
    return int(np.searchsorted(self._bounds, draw, side="right"))

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0:
      raise IndexError(f"stream position {index} < 0")
    k = self.folder(index)
    key = int(self._offsets[k]) + int(self._orders[k][index])
    rng = np.random.Generator(np.random.Philox(key=self._example_seed +
                                               index))
    return grain.RecordMetadata(index=index, record_key=key, rng=rng)

  def __repr__(self) -> str:  # grain checks it when restoring a state
    return (f"MixedSampler(parts={self._parts}, weights={self._weights}, "
            f"seed={self._seed})")


def _train_sampler(source, seed: int):
  """A shuffled IndexSampler; for a source mixing folders, MixedSampler."""
  parts = getattr(source, "parts", ())
  if len(parts) > 1:
    return MixedSampler(parts, source.weights, seed)
  return grain.samplers.IndexSampler(
      num_records=len(source), shuffle=True, seed=_sampler_seed(seed))


class TrainIterator:
  """Endless host-local training batches with grain's saveable state.

  get_state() / set_state(bytes) / start_prefetch() are those of grain's
  DataLoaderIterator, so orbax's grain checkpoint handler saves it.
  `parallel.global_batch(batch, mesh)` makes a batch global.
  """

  def __init__(self, loader: grain.DataLoader):
    self._iterator = iter(loader)
    self._skipped = 0

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict:
    batch = dict(next(self._iterator))
    skipped = int(batch.pop("skipped").sum())
    if skipped:
      self._skipped += skipped
      logging.warning("data: %d unreadable images skipped so far "
                      "(config.data.skip_bad_files=True)", self._skipped)
    return batch

  def get_state(self) -> bytes:
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    self._iterator.set_state(state)

  def start_prefetch(self) -> None:
    self._iterator.start_prefetch()


def _parse_flags_if_needed() -> None:
  """grain's worker processes read absl flags; outside an absl app (notebooks,
  scripts, tests) nobody parsed them, so take the defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def create_train_loader(config) -> grain.DataLoader:
  """The grain DataLoader of training examples for this process."""
  data = config.data
  if data.num_workers:
    _parse_flags_if_needed()
  mask_names = masks.train_mask_names(data.train_masks)
  ranges = augment.Ranges.from_config(data.augment)
  train = sources.create_source(data, "train")
  source = SkippingSource(train, data.skip_bad_files)
  local_batch = parallel.local_batch_size(config.train.batch_size)
  sampler = _train_sampler(train, config.seed)
  shard = grain.sharding.ShardOptions(
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      drop_remainder=True)
  logging.info("data: %r, %d train images, batches of %d on this process, "
               "%d workers", source, len(source), local_batch,
               data.num_workers)
  # Records are read ahead by threads: data.prefetch batches' worth.
  read = grain.ReadOptions(num_threads=8,
                           prefetch_buffer_size=data.prefetch * local_batch)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[TrainExample(ranges, mask_names, data.image_size),
                  grain.transforms.Batch(local_batch, drop_remainder=True)],
      worker_count=data.num_workers, worker_buffer_size=data.prefetch,
      shard_options=shard, read_options=read)


def _check_batch_fits(batch_size: int, mesh) -> None:
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(f"config.train.batch_size={batch_size} must be a "
                     f"multiple of the {devices} devices of the mesh")


def create_train_iterator(config, mesh=None) -> TrainIterator:
  """Host-local training batches for this process.

  With a mesh, first checks that the global batch splits evenly over it.
  """
  if mesh is not None:
    _check_batch_fits(config.train.batch_size, mesh)
  return TrainIterator(create_train_loader(config))


# ------------------------------------------------------------- evaluation


def _eval_example(source, index: int, mask_name: str, config):
  """(image, mask, valid) of one evaluation example; unreadable -> invalid."""
  size = config.data.image_size
  mask = masks.eval_mask(mask_name, size, config.seed, index)
  try:
    image = augment.to_model_range(source[index]["image"])
  except images.BadImageError as e:
    if not config.data.skip_bad_files:
      raise _with_hint(e) from None
    logging.warning("Leaving out unreadable image: %s", e)
    return np.zeros((size, size, 3), np.float32), mask, False
  return image, mask, True


def eval_batches(config, split: str, mask_name: str, num_images: int,
                 batch_size: int, start: int = 0) -> Iterator[dict]:
  """Host-local evaluation batches of `split`, images start .. start + n - 1.

  `batch_size` is global; this process gets its slice of every global batch.
  Every batch has the same shape: past the last image (or for unreadable
  ones) examples are zero with valid=False. Keys: image, mask, index, valid.
  """
  masks.validate_mask_name(mask_name)
  source = sources.create_source(config.data, split)
  local = parallel.local_batch_size(batch_size)
  end = min(start + num_images, len(source))
  if end < start + num_images:
    logging.warning("data: %s split has %d images; evaluating %d from %d",
                    split, len(source), max(end - start, 0), start)
  size = config.data.image_size
  offset = jax.process_index() * local
  invalid = 0
  for first in range(start, end, batch_size):
    batch = {"image": np.zeros((local, size, size, 3), np.float32),
             "mask": np.zeros((local, size, size, 1), np.float32),
             "index": np.full((local,), -1, np.int32),
             "valid": np.zeros((local,), bool)}
    for row in range(local):
      index = first + offset + row
      if index >= end:
        break
      image, mask, valid = _eval_example(source, index, mask_name, config)
      batch["image"][row], batch["mask"][row] = image, mask
      batch["index"][row], batch["valid"][row] = index, valid
      invalid += not valid
    yield batch
  if invalid:
    logging.warning("data: %d unreadable %s images left out (valid=False)",
                    invalid, split)

