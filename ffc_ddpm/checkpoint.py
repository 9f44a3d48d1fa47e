"""Checkpoints under WORKDIR/checkpoints with orbax's CheckpointManager.

Each step is one orbax checkpoint with separate items, so inference can read
the weights alone:
  params, ema_params  the network's weights (a converted model has params only)
  opt_state           the optimizer state
  progress            {"step": int32, "rng": the run's typed base key}
  meta                JSON: the step and seed (a converted model: the file)
  data                the grain iterator's state, one file per process
Saves are asynchronous; orbax writes to a temporary name and commits by
renaming (or, on object stores, by a commit marker), so a run killed at any
moment resumes from the last complete checkpoint. Restoring checks the stored
tree against the expected one first: a checkpoint written by another model
or optimizer config is refused with one line naming the first difference.

A checkpoint damaged after it was committed (a truncated or deleted file on
shared storage) is skipped: restoring walks back to the newest checkpoint
that reads, warns in one line per skipped step, and (a writable
Checkpointer: training) moves the damaged ones to
WORKDIR/checkpoints/damaged/ (outside orbax's step listing) rather than
deleting them. Only when no checkpoint reads does it stop, moving nothing.
"""

import contextlib
import os
from typing import Any, Callable, TypeVar

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from ffc_ddpm import lock

WEIGHT_ITEMS = ("params", "ema_params")
STATE_ITEMS = WEIGHT_ITEMS + ("opt_state", "progress")
DAMAGED = "damaged"  # WORKDIR/checkpoints/damaged/<step>: set-aside steps
_REASON_CHARS = 200  # how much of a read error a warning quotes
T = TypeVar("T")


class DamagedCheckpointError(ValueError):
  """A committed checkpoint whose files cannot be read."""


def checkpoint_dir(workdir: str) -> epath.Path:
  """WORKDIR/checkpoints; local paths made absolute, gs:// and the like kept."""
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  return epath.Path(root) / "checkpoints"


def _item_handlers() -> dict[str, Any]:
  """Every item's handler, so a step's items and metadata can be read back."""
  handlers = {name: ocp.StandardCheckpointHandler() for name in STATE_ITEMS}
  handlers["meta"] = ocp.JsonCheckpointHandler()
  handlers["data"] = grain.checkpoint.CheckpointHandler()
  return handlers


# ------------------------------------------------- compatibility check
def _key_name(key) -> str:
  """A path entry of `tree_flatten_with_path` as plain text."""
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaf_paths(tree: Any) -> dict[str, Any]:
  """{'a/b/0': leaf}: the same names for dicts, dataclasses and namedtuples."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _listing(names: list[str], limit: int = 3) -> str:
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(repr(n) for n in names[:limit]) + more


def _stored_shape(x) -> tuple[int, ...]:
  """The shape as stored: a typed PRNG key is stored as its key data."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return tuple(jax.eval_shape(jax.random.key_data, x).shape)
  return tuple(x.shape)


def check_compatible(stored: Any, expected: Any, where: str) -> None:
  """One-line ValueError unless both trees have the same names and shapes.

  `stored` is orbax's metadata tree of an item, `expected` the abstract
  (ShapeDtypeStruct) or concrete tree it is about to be restored into.
  """
  have, want = leaf_paths(stored), leaf_paths(expected)
  missing, extra = sorted(want.keys() - have.keys()), sorted(
      have.keys() - want.keys())
  hint = "(was it written with another model or optimizer config?)"
  if missing or extra:
    raise ValueError(
        f"{where} does not match this config {hint}: "
        f"{len(missing)} expected arrays missing ({_listing(missing)}), "
        f"{len(extra)} unexpected ({_listing(extra)})")
  for path in sorted(want):
    stored_shape, wanted_shape = tuple(have[path].shape), _stored_shape(
        want[path])
    if stored_shape != wanted_shape:
      raise ValueError(
          f"{where}: {path!r} is stored with shape {stored_shape} but this "
          f"config expects {wanted_shape} {hint}")


# ------------------------------------------------------------- damage
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


def _machine_failure(error: BaseException) -> bool:
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


def _reading(where: str, read: Callable[[], T]) -> T:
  """`read()`, with its failure reported as DamagedCheckpointError unless
  the machine, not the files, failed (`_machine_failure`)."""
  try:
    return read()
  except Exception as e:  # orbax and TensorStore fail in many ways
    if _machine_failure(e):
      raise
    raise DamagedCheckpointError(f"{where} is unreadable ({_reason(e)})"
                                 ) from e


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process (all must agree on a step)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


# ---------------------------------------------------------- the manager
class Checkpointer:
  """Saves and restores the training state of one workdir.

  keep: the latest k checkpoints are kept; keep_every: every step divisible
  by M is kept for good as well (0 = none). writable=False reads only: it
  creates no folder and leaves unfinished saves alone (for evaluation and
  inpainting). Usable as a context manager, which waits for pending saves
  and closes on exit.
  """

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
               async_save: bool = True, writable: bool = True):
    self.workdir, self.writable = workdir, writable
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        keep_period=keep_every or None,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=writable,
        create=writable)
    self.manager = ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options,
        item_handlers=_item_handlers())

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def directory(self) -> epath.Path:
    return self.manager.directory

  def latest_step(self) -> int | None:
    """The newest complete checkpoint (unfinished saves are never listed)."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def items(self, step: int) -> set[str]:
    """Names of the items stored at `step` (from orbax's step metadata, so it
    works on any file system epath reaches)."""
    metadata = _reading(self._where(step), lambda: self.manager.metadata(step))
    return set(metadata.item_handlers or ())

  def save(self, step: int, state: dict[str, Any], meta: dict[str, Any],
           data_iterator=None) -> None:
    """Starts saving `state` (a dict of pytrees) and `meta`.

    Returns once the arrays are copied off the devices (they may then be
    donated) and the iterator's state is taken; files are written in the
    background.
    """
    args = {k: ocp.args.StandardSave(v) for k, v in state.items()}
    args["meta"] = ocp.args.JsonSave(meta)
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: dict[str, Any],
              data_iterator=None) -> dict[str, Any]:
    """Restores the items of `abstract_state` (and the iterator, in place).

    `abstract_state` maps item names to trees of arrays or ShapeDtypeStructs
    (with shardings: arrays are read straight into that layout). Raises a
    one-line error when an item is missing or its tree or shapes differ,
    and DamagedCheckpointError when its files cannot be read.
    """
    self._check(step, abstract_state, data_iterator is not None)
    args = {k: ocp.args.StandardRestore(v) for k, v in abstract_state.items()}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = _reading(
        self._where(step),
        lambda: self.manager.restore(step, args=ocp.args.Composite(**args)))
    return {k: restored[k] for k in abstract_state}

  def _where(self, step: int) -> str:
    return f"checkpoint {step} in {self.directory}"

  def _check(self, step: int, abstract_state: dict[str, Any],
             with_data: bool) -> None:
    where = self._where(step)
    metadata = _reading(where, lambda: self.manager.metadata(step))
    stored = set(metadata.item_handlers or ())
    if not stored:
      raise DamagedCheckpointError(f"{where} is unreadable (it lists no "
                                   "items: its _CHECKPOINT_METADATA is gone)")
    wanted = set(abstract_state) | ({"data"} if with_data else set())
    if wanted - stored:
      raise ValueError(
          f"{where} has no {', '.join(sorted(wanted - stored))} (it holds "
          f"{', '.join(sorted(stored))}); a converted model holds weights "
          "only and cannot be resumed: train in a new workdir")
    for name, tree in abstract_state.items():
      item = metadata.item_metadata.get(name) if metadata.item_metadata else None
      if item is None or getattr(item, "tree", None) is None:
        raise DamagedCheckpointError(f"{where} is unreadable (no metadata "
                                     f"for item {name!r})")
      check_compatible(item.tree, tree, f"{where}, item {name!r}")

  def restore_latest(self, abstract_state: dict[str, Any], data_iterator=None,
                     check_meta: Callable[[dict], None] | None = None
                     ) -> tuple[int, dict[str, Any]] | None:
    """(step, items) of the newest checkpoint that reads, or None when there
    is none; `check_meta(meta)` may refuse a run's checkpoints (raising)
    before any array is read."""

    def restore_step(step):
      if check_meta is not None:
        check_meta(self.restore_meta(step))
      return self.restore(step, abstract_state, data_iterator)

    return self.newest_readable(restore_step)

  def newest_readable(self, restore_step: Callable[[int], T]
                      ) -> tuple[int, T] | None:
    """(step, restore_step(step)) for the newest step whose restore raises no
    DamagedCheckpointError, on every process; None without checkpoints.

    Newer, damaged steps are set aside (`_set_aside`). Other errors (a
    checkpoint of another config; on any process, a machine's failure such
    as running out of memory) stop the walk; when no step reads, a
    one-line DamagedCheckpointError names the newest's problem and nothing
    is moved.
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      result, error, machine = None, None, None
      try:
        result = restore_step(step)
      except DamagedCheckpointError as e:
        error = e
      except Exception as e:  # pylint: disable=broad-except
        if not _machine_failure(e):
          raise
        machine = e
      if not _on_every_process(machine is None):  # all stop, none waits
        raise machine or RuntimeError(
            f"{self._where(step)}: another process failed to read it (out "
            "of memory, no permission or a timeout); nothing was moved")
      if _on_every_process(error is None):
        self._set_aside(damaged, step)
        return step, result
      damaged.append((step, error or DamagedCheckpointError(
          f"{self._where(step)} is unreadable on another process")))
    if damaged:
      raise DamagedCheckpointError(
          f"no readable checkpoint in {self.directory} ({len(damaged)} "
          f"damaged; the newest: {damaged[0][1]}); nothing was moved")
    return None

  def _set_aside(self, damaged: list[tuple[int, DamagedCheckpointError]],
                 used: int) -> None:
    """Moves damaged steps to checkpoints/damaged/ (process 0 of a writable
    Checkpointer, and only if no other run holds the workdir); one warning
    line each. Readers (writable=False) leave them in place and touch
    nothing: the workdir may be read-only."""
    if not damaged:
      return
    moving = lock.hold_if_free(self.workdir) if self.writable else (
        contextlib.nullcontext(False))
    with moving as may_move:
      for step, error in damaged:
        if may_move:
          target = self._damaged_path(step)
          target.parent.mkdir(parents=True, exist_ok=True)
          (self.directory / str(step)).rename(target)
          where = f"moved to {target}"
        elif self.writable:
          where = "left in place as another run holds the workdir"
        else:
          where = "left in place (reading only)"
        if jax.process_index() == 0:
          logging.warning("%s: skipped and %s; using step %d", error, where,
                          used)
    if self.writable:
      if jax.process_count() > 1:  # every process lists the moved steps
        multihost_utils.sync_global_devices("ffc_ddpm_damaged_set_aside")
      self.manager.reload()

  def _damaged_path(self, step: int) -> epath.Path:
    """checkpoints/damaged/<step>, or <step>.<k> if that exists already."""
    folder = self.directory / DAMAGED
    target, k = folder / str(step), 1
    while target.exists():
      target, k = folder / f"{step}.{k}", k + 1
    return target

  def restore_meta(self, step: int) -> dict[str, Any]:
    return _reading(self._where(step), lambda: self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def restore_weights(self, abstract_params: Any, step: int | None = None,
                      use_ema: bool = True) -> tuple[Any, int, str]:
    """The network weights for inference: (params, step, item name).

    Takes the EMA weights when asked and present, else the raw weights;
    without `step`, those of the newest checkpoint that reads.
    """
    if step is not None and step not in self.all_steps():
      raise FileNotFoundError(
          f"no checkpoint {step} in {self.directory} (it has steps "
          f"{', '.join(map(str, self.all_steps())) or 'none'})")

    def restore_step(step):
      stored = self.items(step)
      name = "ema_params" if use_ema and "ema_params" in stored else "params"
      if stored and name not in stored:
        raise FileNotFoundError(f"{self._where(step)} holds no weights")
      return self.restore(step, {name: abstract_params})[name], name

    found = (self.newest_readable(restore_step) if step is None
             else (step, restore_step(step)))
    if found is None:
      raise FileNotFoundError(
          f"no checkpoint in {self.directory}: train first, or convert "
          "one with tools/convert_guided_diffusion.py")
    step, (params, name) = found
    return params, step, name

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the step the cluster agreed to stop at.

    JAX's pre-emption sync point: needs `jax.distributed` and a call at every
    step; always False in a single process.
    """
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
