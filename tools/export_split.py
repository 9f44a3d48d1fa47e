r"""Writes the faces of a config's split as PNG files, for the inpaint command.

  python tools/export_split.py --config=configs/celeba64.py --split=test \
      --num_images=100 --output=test_faces \
      --config.data.path=../shared/data/celeba_crops_128 --config.data.image_size=128

writes test_faces/test_00000.png ... test_00099.png: the first images of the
split that training never reads (the same faces, in the same order, as the
evaluation scores), squared by config.data.resize to config.data.image_size
(override it to keep a larger size than the model's: the inpaint command
takes photos of any size). With tools/score_inpainting.py this reproduces a
held-out evaluation through the command users run.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from ffc_ddpm import configuration
from ffc_ddpm import images
from ffc_ddpm.data import sources


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


def export_split(config, split: str, num_images: int, output: str
                 ) -> list[str]:
  """The first `num_images` of `split` (all when fewer) as PNGs in
  `output`; returns their paths."""
  data = config.data
  if data.source == "folder" and _inside(output, data.path):
    raise ValueError(f"--output={output} is inside config.data.path="
                     f"{data.path}: the files would join the data and "
                     "change its split")
  source = sources.create_source(data, split)
  paths = []
  for index in range(min(num_images, len(source))):
    path = os.path.join(output, f"{split}_{index:05d}.png")
    images.save_png(path, source[index]["image"])
    paths.append(path)
  return paths


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  tests can import its functions beside other tools' flags."""
  global _CONFIG, _SPLIT, _NUM_IMAGES, _OUTPUT
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config whose data and split to read.", lock_config=True)
  _SPLIT = flags.DEFINE_enum("split", "test", list(sources.SPLITS),
                             "Which split.")
  _NUM_IMAGES = flags.DEFINE_integer("num_images", 100,
                                     "How many (from the split's first).")
  _OUTPUT = flags.DEFINE_string("output", None, "Folder for the PNG files.")


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _OUTPUT.value:
    sys.exit("error: --config and --output are required")
  try:
    config = configuration.validate(_CONFIG.value)
    configuration.check_data_path(config)
    paths = export_split(config, _SPLIT.value, _NUM_IMAGES.value,
                         _OUTPUT.value)
  except (ValueError, OSError) as e:  # bad settings, missing files
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(f"Wrote {len(paths)} {_SPLIT.value} images to {_OUTPUT.value}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=configuration.parse_tool_flags)
