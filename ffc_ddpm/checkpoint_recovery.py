"""What a run does when a committed checkpoint will not read: the recovery
policy beside the orbax wrapper (`checkpoint.Checkpointer`).

A checkpoint damaged after it was committed (a truncated or deleted file on
shared storage) is skipped: restoring walks back to the newest checkpoint
that reads (`newest_readable`), warns in one line per skipped step, and
(a writable Checkpointer: training) moves the damaged ones to
WORKDIR/checkpoints/damaged/ (outside orbax's step listing) rather than
deleting them. Only when no checkpoint reads does it stop, moving nothing.
A failure of the machine rather than of the files (out of memory, no
permission, a store that timed out) is no sign of damage: it propagates
and nothing is set aside.
"""

from typing import Callable, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

_REASON_CHARS = 200  # how much of a read error a warning quotes
T = TypeVar("T")


class DamagedCheckpointError(ValueError):
  """A committed checkpoint whose files cannot be read."""


def _root_cause(e: BaseException) -> BaseException:
  """The first error of a chain (orbax wraps TensorStore's in its own)."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ if e.__cause__ is not None else e.__context__
  return e


def _reason(e: BaseException) -> str:
  """A read error as one short line."""
  text = " ".join(str(_root_cause(e)).split()) or type(e).__name__
  return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "..."


# Failures of the machine rather than of the files: the checkpoint may be
# intact, so these propagate and nothing is set aside.
_MACHINE_ERRORS = (MemoryError, PermissionError, TimeoutError,
                   ConnectionError)
_MACHINE_MESSAGES = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                     "DEADLINE_EXCEEDED", "UNAVAILABLE")


def machine_failure(error: BaseException) -> bool:
  """Whether `error`, or one it was raised from, is a machine's failure
  (out of memory, no permission, a store that timed out)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, _MACHINE_ERRORS) or any(
        m in str(error) for m in _MACHINE_MESSAGES):
      return True
    error = error.__cause__ or error.__context__
  return False


def reading(where: str, read: Callable[[], T]) -> T:
  """`read()`, with its failure reported as DamagedCheckpointError unless
  the machine, not the files, failed (`machine_failure`)."""
  try:
    return read()
  except Exception as e:  # orbax and TensorStore fail in many ways
    if machine_failure(e):
      raise
    raise DamagedCheckpointError(f"{where} is unreadable ({_reason(e)})"
                                 ) from e


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process (all must agree on a step)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def newest_readable(ckpt, restore_step: Callable[[int], T]
                    ) -> tuple[int, T] | None:
  """(step, restore_step(step)) for the newest step of `ckpt` (a
  checkpoint.Checkpointer) whose restore raises no DamagedCheckpointError,
  on every process; None without checkpoints.

  Newer, damaged steps are set aside (`_set_aside`). Other errors (a
  checkpoint of another config; on any process, a machine's failure such
  as running out of memory) stop the walk; when no step reads, a one-line
  DamagedCheckpointError names the newest's problem and nothing is moved.
  """
  damaged = []
  for step in sorted(ckpt.all_steps(), reverse=True):
    result, error, machine = None, None, None
    try:
      result = restore_step(step)
    except DamagedCheckpointError as e:
      error = e
    except Exception as e:  # pylint: disable=broad-except
      if not machine_failure(e):
        raise
      machine = e
    where = f"checkpoint {step} in {ckpt.directory}"
    if not _on_every_process(machine is None):  # all stop, none waits
      raise machine or RuntimeError(
          f"{where}: another process failed to read it (out of memory, no "
          "permission or a timeout); nothing was moved")
    if _on_every_process(error is None):
      _set_aside(ckpt, damaged, step)
      return step, result
    damaged.append((step, error or DamagedCheckpointError(
        f"{where} is unreadable on another process")))
  if damaged:
    raise DamagedCheckpointError(
        f"no readable checkpoint in {ckpt.directory} ({len(damaged)} "
        f"damaged; the newest: {damaged[0][1]}); nothing was moved")
  return None


def _set_aside(ckpt, damaged: list[tuple[int, DamagedCheckpointError]],
               used: int) -> None:
  """Moves damaged steps aside (`Checkpointer.set_aside`: a writable one,
  when no other run holds the workdir), one warning line each. Readers
  leave them in place and touch nothing: the workdir may be read-only."""
  if not damaged:
    return
  targets = ckpt.set_aside([step for step, _ in damaged])
  for i, (_, error) in enumerate(damaged):
    if targets is not None:
      where = f"moved to {targets[i]}"
    elif ckpt.writable:
      where = "left in place as another run holds the workdir"
    else:
      where = "left in place (reading only)"
    if jax.process_index() == 0:
      logging.warning("%s: skipped and %s; using step %d", error, where, used)
