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

A checkpoint damaged after it was committed is skipped for the newest one
that reads, by the policy of `checkpoint_recovery`.
"""

import contextlib
import os
from typing import Any, Callable, TypeVar

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from ffc_ddpm import checkpoint_recovery, lock

WEIGHT_ITEMS = ("params", "ema_params")
STATE_ITEMS = WEIGHT_ITEMS + ("opt_state", "progress")
DAMAGED = "damaged"  # WORKDIR/checkpoints/damaged/<step>: set-aside steps
T = TypeVar("T")


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
    metadata = checkpoint_recovery.reading(self._where(step), lambda: self.manager.metadata(step))
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
    restored = checkpoint_recovery.reading(
        self._where(step),
        lambda: self.manager.restore(step, args=ocp.args.Composite(**args)))
    return {k: restored[k] for k in abstract_state}

  def _where(self, step: int) -> str:
    return f"checkpoint {step} in {self.directory}"

  def _check(self, step: int, abstract_state: dict[str, Any],
             with_data: bool) -> None:
    where = self._where(step)
    metadata = checkpoint_recovery.reading(where, lambda: self.manager.metadata(step))
    stored = set(metadata.item_handlers or ())
    if not stored:
      raise checkpoint_recovery.DamagedCheckpointError(
          f"{where} is unreadable (it lists no items: its "
          "_CHECKPOINT_METADATA is gone)")
    wanted = set(abstract_state) | ({"data"} if with_data else set())
    if wanted - stored:
      raise ValueError(
          f"{where} has no {', '.join(sorted(wanted - stored))} (it holds "
          f"{', '.join(sorted(stored))}); a converted model holds weights "
          "only and cannot be resumed: train in a new workdir")
    for name, tree in abstract_state.items():
      item = metadata.item_metadata.get(name) if metadata.item_metadata else None
      if item is None or getattr(item, "tree", None) is None:
        raise checkpoint_recovery.DamagedCheckpointError(
            f"{where} is unreadable (no metadata for item {name!r})")
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
    """(step, restore_step(step)) of the newest step that reads
    (`checkpoint_recovery.newest_readable`: newer damaged steps skipped and
    set aside); None without checkpoints."""
    return checkpoint_recovery.newest_readable(self, restore_step)

  def set_aside(self, steps: list[int]) -> list[epath.Path] | None:
    """Moves `steps` out of orbax's listing into checkpoints/damaged/ and
    returns where each went; None, moving nothing, when this Checkpointer
    only reads or another run holds the workdir. Process 0 moves, then
    every process lists the remaining steps."""
    moving = lock.hold_if_free(self.workdir) if self.writable else (
        contextlib.nullcontext(False))
    targets = None
    with moving as may_move:
      if may_move:
        targets = [self._damaged_path(step) for step in steps]
        for step, target in zip(steps, targets):
          target.parent.mkdir(parents=True, exist_ok=True)
          (self.directory / str(step)).rename(target)
    if self.writable:
      if jax.process_count() > 1:  # every process lists the moved steps
        multihost_utils.sync_global_devices("ffc_ddpm_damaged_set_aside")
      self.manager.reload()
    return targets

  def _damaged_path(self, step: int) -> epath.Path:
    """checkpoints/damaged/<step>, or <step>.<k> if that exists already."""
    folder = self.directory / DAMAGED
    target, k = folder / str(step), 1
    while target.exists():
      target, k = folder / f"{step}.{k}", k + 1
    return target

  def restore_meta(self, step: int) -> dict[str, Any]:
    return checkpoint_recovery.reading(self._where(step), lambda: self.manager.restore(
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
