"""Writing files so that a crash never leaves half of one: every stage saves
through `atomic_write` (configs, weights files, images, evaluation records,
the tools' tables).

The data goes to PATH.partial first and is renamed over PATH once it is
complete (`os.replace`, atomic on POSIX): a reader sees the old file or the
new one, never a torn one, and a failed write leaves the old one in place.
"""

import contextlib
import json
import os
from typing import Any, Iterator, IO


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
  """A file open for writing ("w" text, "wb" bytes) that replaces `path`
  when the block ends without an error; on an error `path` is untouched
  and the partial file removed."""
  temporary = f"{path}.partial"
  try:
    with open(temporary, mode) as f:
      yield f
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def write_text(path: str, text: str) -> None:
  """`text` as the whole content of `path` (`atomic_write`)."""
  with atomic_write(path) as f:
    f.write(text)


def write_json(path: str, value: Any, **dumps) -> None:
  """`value` as JSON in `path` (`atomic_write`); `dumps` go to json.dumps."""
  write_text(path, json.dumps(value, **dumps))


def read_json(path: str) -> Any:
  """The JSON value in `path`, or None when it is missing or unreadable
  (a record that must be recomputed)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
