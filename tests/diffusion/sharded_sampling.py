"""Inpaints a batch on 8 simulated CPU devices and saves it (run by a test).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 \
  python sharded_sampling.py OUT.npy
"""

import sys

import jax
import numpy as np

import gaussian_oracle
from ffc_ddpm import parallel


def main(out_path: str) -> None:
  if jax.device_count() != 8:
    raise SystemExit(f"expected 8 devices, got {jax.device_count()}")
  sharding = parallel.data_sharding(parallel.create_mesh())
  put = lambda a: jax.device_put(a, sharding)
  out = gaussian_oracle.sample_batch(gaussian_oracle.concat_sampler(), 8,
                                     put=put)
  if not out.sharding.is_equivalent_to(sharding, out.ndim):
    raise SystemExit(f"output not sharded over the batch: {out.sharding}")
  np.save(out_path, np.asarray(out))


if __name__ == "__main__":
  main(sys.argv[1])
