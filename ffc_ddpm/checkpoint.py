"""Checkpoints under WORKDIR/checkpoints with orbax's CheckpointManager.

Each step is one orbax checkpoint with separate items, so inference can read
the weights alone:
  params, ema_params  the network's weights (a converted model has params only)
  opt_state           the optimizer state
  meta                JSON: the step and what wrote it
  data                the grain iterator's state (training only)
Saves are asynchronous; orbax writes to a temporary name and commits by
renaming, so a run killed mid-save resumes from the last complete checkpoint.
The training RNG is not stored: it is derived from (config.seed, step).
"""

import os
from typing import Any

from etils import epath
import grain.python as grain
import orbax.checkpoint as ocp

WEIGHT_ITEMS = ("params", "ema_params")


def checkpoint_dir(workdir: str) -> epath.Path:
  """WORKDIR/checkpoints; local paths made absolute, gs:// and the like kept."""
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  return epath.Path(root) / "checkpoints"


class Checkpointer:
  """Saves and restores the training state of one workdir."""

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
               async_save: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        keep_period=keep_every or None,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir),
                                         options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def items(self, step: int) -> set[str]:
    """Names of the items stored at `step`."""
    return {p.name for p in (self.manager.directory / str(step)).iterdir()}

  def save(self, step: int, state: dict[str, Any], meta: dict[str, Any],
           data_iterator=None) -> None:
    """Starts saving `state` (a dict of pytrees) and `meta`; returns at once."""
    args = {k: ocp.args.StandardSave(v) for k, v in state.items()}
    args["meta"] = ocp.args.JsonSave(meta)
    if data_iterator is not None:
      args["data"] = grain.PyGrainCheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: dict[str, Any],
              data_iterator=None) -> dict[str, Any]:
    """Restores the items of `abstract_state` (and the iterator, in place)."""
    args = {k: ocp.args.StandardRestore(v) for k, v in abstract_state.items()}
    if data_iterator is not None:
      args["data"] = grain.PyGrainCheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return {k: restored[k] for k in abstract_state}

  def restore_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_weights(self, abstract_params: Any, step: int | None = None,
                      use_ema: bool = True) -> tuple[Any, int, str]:
    """The network weights for inference: (params, step, item name).

    Takes the EMA weights when asked and present, else the raw weights.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
          f"no checkpoint in {self.manager.directory}: train first, or convert "
          "one with tools/convert_guided_diffusion.py")
    stored = self.items(step)
    name = "ema_params" if use_ema and "ema_params" in stored else "params"
    if name not in stored:
      raise FileNotFoundError(
          f"checkpoint {step} in {self.manager.directory} holds no weights")
    return self.restore(step, {name: abstract_params})[name], step, name

  def reached_preemption(self, step: int) -> bool:
    """True on every process once the cluster has been told to stop."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
