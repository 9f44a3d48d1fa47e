"""One run per workdir: a lock that the OS releases when its holder dies.

`hold_workdir(workdir)` takes an exclusive `fcntl.flock` on WORKDIR/.lock
for as long as a run writes there. flock belongs to the open file, so a
holder killed by any signal (kill -9 included) leaves nothing stuck: the
next run simply takes it. The holder writes its pid and host into the file
so that a refused run can name it. (py-filelock truncates the file when it
opens it, which would erase the holder's name before it could be read.)

The lock is re-entrant within a process (training followed by evaluation
holds it once). Multi-host runs take it on process 0, the writer of the
workdir, and every process learns whether it was taken. Object-store
workdirs (gs://, ...) cannot be locked and are not.
"""

import contextlib
import fcntl
import os
import socket
from typing import Iterator

LOCK_NAME = ".lock"


class WorkdirBusyError(OSError):
  """Another live run holds the workdir."""


_held: dict[str, list[int]] = {}  # lock path -> [file descriptor, depth]


def _lock_path(workdir: str) -> str:
  return os.path.join(os.path.realpath(workdir), LOCK_NAME)


def _lockable(workdir: str) -> bool:
  return "://" not in workdir


def _holder(fd: int) -> str:
  """What the holder wrote: 'pid N on host H' (or that it is unknown)."""
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 200).decode(errors="replace").split()
  return (f"pid {text[0]} on host {text[1]}" if len(text) >= 2
          else "a process that has not written its name yet")


def _try_acquire(workdir: str) -> str | None:
  """Takes the lock of an existing workdir; None, or who holds it."""
  path = _lock_path(workdir)
  if path in _held:
    _held[path][1] += 1
    return None
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      return holder
    try:  # a releasing holder may have unlinked the file we opened: retry
      current = os.stat(path).st_ino
    except FileNotFoundError:
      current = None
    if current == os.fstat(fd).st_ino:
      break
    os.close(fd)
  os.ftruncate(fd, 0)
  os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
  _held[path] = [fd, 1]
  return None


def _release(workdir: str) -> None:
  path = _lock_path(workdir)
  _held[path][1] -= 1
  if _held[path][1]:
    return
  fd = _held.pop(path)[0]
  os.unlink(path)  # while still holding it, so no run waits on a lost file
  os.close(fd)


def _first_missing(folder: str) -> str | None:
  """The outermost folder of `folder`'s path that does not exist yet."""
  missing, path = None, os.path.abspath(folder)
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _remove_empty(folder: str, outermost: str) -> None:
  """Removes `folder` and its parents up to `outermost` while empty."""
  path = os.path.abspath(folder)
  while os.path.isdir(path) and not os.listdir(path):
    os.rmdir(path)
    if path == outermost:
      break
    path = os.path.dirname(path)


@contextlib.contextmanager
def hold_workdir(workdir: str, create: bool = True, flag: str = "--workdir",
                 what: str = "workdir") -> Iterator[None]:
  """Holds the workdir for a run; WorkdirBusyError (one line) if another
  live run does. create=False: a workdir that does not exist is left
  uncreated (and unlocked: there is nothing in it to protect). A folder
  made here and still empty at the end (a run refused before it wrote
  anything) is removed again. `flag` and `what` name the folder in the
  refusal (the inpaint command locks its --output folder the same way)."""
  import jax  # pylint: disable=g-import-not-at-top
  if not _lockable(workdir) or not (create or os.path.isdir(workdir)):
    yield
    return
  lead = jax.process_index() == 0
  created = _first_missing(workdir) if lead else None
  if lead:
    os.makedirs(workdir, exist_ok=True)
  holder = _try_acquire(workdir) if lead else None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    refused = bool(multihost_utils.broadcast_one_to_all(holder is not None))
    holder = holder or ("another run (process 0 could not take it)"
                        if refused else None)
  if holder is not None:
    raise WorkdirBusyError(
        f"{flag}={workdir} is in use by another run ({holder}); wait "
        f"for it to finish or use another {what}")
  try:
    yield
  finally:
    if lead:
      _release(workdir)
      if created:  # a refused run leaves no empty folder behind
        _remove_empty(workdir, created)


@contextlib.contextmanager
def hold_if_free(workdir: str) -> Iterator[bool]:
  """Holds the workdir if no other run does (process 0 only); yields
  whether this process may change what is in it (not when the lock file
  cannot be made: a read-only workdir)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    yield False
    return
  if not _lockable(workdir):
    yield True
    return
  try:
    taken = _try_acquire(workdir) is None
  except OSError:  # read-only: nothing in it may change
    taken = False
  if not taken:
    yield False
    return
  try:
    yield True
  finally:
    _release(workdir)
