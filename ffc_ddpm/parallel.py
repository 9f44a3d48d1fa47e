"""The device mesh and how arrays are laid out on it.

One mesh serves every stage: a `data` axis over all devices of all hosts
(batches are split along it) and an optional `model` axis over which large
parameters are sharded (FSDP-style). With `model` of size 1 parameters are
replicated, as in data-parallel training.
"""

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"
# Arrays smaller than this (in elements) stay replicated on the `model` axis:
# gathering them would cost more than storing them. 2**18 float32 = 1 MiB.
MIN_SHARDED_SIZE = 2**18


def create_mesh(model_axis_size: int = 1, devices=None) -> Mesh:
  """A (data, model) mesh over `devices` (default: every device of every
  process); `model` groups neighbouring devices, the fastest links."""
  devices = jax.devices() if devices is None else list(devices)
  if model_axis_size < 1 or len(devices) % model_axis_size:
    raise ValueError(
        f"config.train.model_axis_size={model_axis_size} must be >= 1 and "
        f"divide the device count {len(devices)}")
  grid = np.asarray(devices).reshape(-1, model_axis_size)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P((DATA_AXIS, MODEL_AXIS)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, params: Any, min_size: int | None = None
                   ) -> Any:
  """Shardings for a parameter tree (or any tree of its shapes).

  Replicated when the `model` axis has size 1. Otherwise every array with at
  least `min_size` (default MIN_SHARDED_SIZE) elements is split over `model`
  along its largest dimension that the axis divides; small arrays stay
  replicated. The rule depends on shapes only, so optimizer moments and EMA
  weights are laid out like the weights they follow.
  """
  num_shards = mesh.shape[MODEL_AXIS]
  min_size = MIN_SHARDED_SIZE if min_size is None else min_size

  def spec(x):
    if num_shards == 1 or np.prod(x.shape) < min_size:
      return replicated(mesh)
    dims = sorted(range(len(x.shape)), key=lambda d: -x.shape[d])
    for d in dims:
      if x.shape[d] % num_shards == 0:
        axes = [None] * len(x.shape)
        axes[d] = MODEL_AXIS
        return NamedSharding(mesh, P(*axes))
    return replicated(mesh)

  return jax.tree.map(spec, params)


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of a global batch, checking that it divides evenly."""
  num_devices, num_processes = jax.device_count(), jax.process_count()
  if global_batch_size % num_devices:
    raise ValueError(f"batch size {global_batch_size} must be a multiple of "
                     f"the device count {num_devices}")
  return global_batch_size // num_processes


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Each process's slice of a batch as global arrays split over the mesh."""
  sharding = data_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in local.items()
  }


# ------------------------------------------------------------ processes
def is_lead() -> bool:
  """Whether this is process 0, the one that writes shared files."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits for every process (multi-host runs only)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def from_lead(value: int) -> int:
  """Process 0's value on every process, so all hosts take the same batches."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
