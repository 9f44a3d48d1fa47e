"""`python -m ffc_ddpm.main` with NaN put into one training batch (a test aid).

Usage: python tests/train_worker.py --nan_at=K --config=... --workdir=...
The batch of update K (1-based, counted from a fresh start) gets a NaN
pixel; everything else is the real command line, errors included.
"""

import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# pylint: disable=g-import-not-at-top,wrong-import-position
from ffc_ddpm import main
from ffc_ddpm.data import pipeline

_NAN_AT = flags.DEFINE_integer("nan_at", 1, "Update whose batch gets a NaN.")


class PoisonedIterator:
  """The training iterator, with a NaN in the image of batch `nan_at`."""

  def __init__(self, iterator, nan_at: int):
    self._iterator, self._nan_at, self._count = iterator, nan_at, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    self._count += 1
    if self._count == self._nan_at:
      batch["image"] = batch["image"].copy()
      batch["image"][0, 0, 0, 0] = np.nan
    return batch

  def get_state(self) -> bytes:
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    self._iterator.set_state(state)

  def start_prefetch(self) -> None:
    self._iterator.start_prefetch()


def poisoned_train_iterator(config, mesh=None):
  return PoisonedIterator(create_train_iterator(config, mesh), _NAN_AT.value)


create_train_iterator = pipeline.create_train_iterator
pipeline.create_train_iterator = poisoned_train_iterator

if __name__ == "__main__":
  app.run(main.main, flags_parser=main.parse_flags)
