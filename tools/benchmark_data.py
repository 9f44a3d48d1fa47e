r"""Measures the training input pipeline in images per second.

Reads, augments (crop, flip, colour jitter) and masks (`data.train_masks`)
images with grain, as training does, for each source and worker count:

  python tools/benchmark_data.py --image_size=256 --workers=0,2 \
      --sources=folder:../shared/data/celebahq_256,synthetic \
      --json=benchmarks/data.json

The first `--warmup` batches (worker start-up) are not timed. Other fields
come from --config (default configs/default.py), e.g.
--config.data.augment.hue=0.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import grain
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from ffc_ddpm import configuration
from ffc_ddpm.data import augment
from ffc_ddpm.data import masks
from ffc_ddpm.data import pipeline
from ffc_ddpm.data import sources

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs",
                           "default.py"),
    "Base config; data.source/path/num_workers are set per setting.")
_SOURCES = flags.DEFINE_list(
    "sources", ["folder:../shared/data/celebahq_256", "synthetic"],
    "synthetic | folder:PATH | arrayrecord:PATH | tfds:MANUAL_DIR")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker counts.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Image side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Global batch size.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per setting.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches first.")
_MASKS = flags.DEFINE_string("masks", "mixed", "data.train_masks.")
_JSON = flags.DEFINE_string("json", "", "Write the figures here too.")


def _config(source: str, workers: int) -> ml_collections.ConfigDict:
  """The default config pointed at `source` (NAME or NAME:PATH)."""
  config = ml_collections.ConfigDict(_CONFIG.value.to_dict())
  name, _, path = source.partition(":")
  config.data.source, config.data.path = name, path
  config.data.image_size = _IMAGE_SIZE.value
  config.data.num_val, config.data.num_test = 0, 0
  config.data.num_workers = workers
  config.data.train_masks = _MASKS.value
  config.train.batch_size = _BATCH_SIZE.value
  return config


def images_per_second(config) -> float:
  """Throughput of the training iterator after its warm-up batches."""
  iterator = pipeline.create_train_iterator(config)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  elapsed = time.perf_counter() - start
  return _BATCHES.value * config.train.batch_size / elapsed


def _milliseconds_each(fn, items) -> float:
  start = time.perf_counter()
  for item in items:
    fn(item)
  return (time.perf_counter() - start) / len(items) * 1e3


def stage_costs(config, count: int = 32) -> dict[str, float]:
  """Milliseconds per image of each stage, in this process."""
  source = sources.create_source(config.data, "train")
  ranges = augment.Ranges.from_config(config.data.augment)
  rng = np.random.default_rng(0)
  indices = range(min(count, len(source)))
  records = [source[i]["image"] for i in indices]
  size = config.data.image_size
  return {
      "read_ms": _milliseconds_each(lambda i: source[i], indices),
      "augment_ms": _milliseconds_each(
          lambda x: augment.apply(x, augment.sample(ranges, rng)), records),
      "mask_ms": _milliseconds_each(
          lambda _: masks.sample_mask(config.data.train_masks, size, rng),
          records),
  }


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.machine()


def main(argv):
  del argv
  rows, stages = [], {}
  for source in _SOURCES.value:
    stages[source] = {k: round(v, 2) for k, v in
                      stage_costs(_config(source, 0)).items()}
    print(f"{source:40s} per image: {stages[source]}", flush=True)
    for workers in map(int, _WORKERS.value):
      rate = images_per_second(_config(source, workers))
      load = os.getloadavg()[0]  # other work on the machine skews the rate
      rows.append({"source": source, "workers": workers,
                   "images_per_second": round(rate, 1),
                   "load_average_1min": round(load, 2)})
      print(f"{source:40s} workers={workers} {rate:8.1f} images/s "
            f"(load {load:.1f})", flush=True)
  if _JSON.value:
    report = {
        "machine": f"{_cpu_name()}, {os.cpu_count()} CPU cores, "
                   f"jax {jax.__version__}, grain {grain.__version__}",
        "image_size": _IMAGE_SIZE.value, "batch_size": _BATCH_SIZE.value,
        "masks": _MASKS.value, "timed_batches": _BATCHES.value,
        "stage_costs": stages, "results": rows,
    }
    with open(_JSON.value, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main, flags_parser=configuration.parse_tool_flags)
