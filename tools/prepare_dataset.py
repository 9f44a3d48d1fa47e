r"""Prepares training data once, so that many hosts can read it fast.

Pack a folder of images (searched recursively, sorted by path) into one
ArrayRecord file of squared images, read back with
`--config.data.source=arrayrecord --config.data.path=FILE`:

  python tools/prepare_dataset.py --mode=pack \
      --input=../shared/data/celeba_crops_128 \
      --output=/tmp/celeba_64.array_record --size=64

(all 22,711 crops at 64x64 take 55 MiB as JPEG quality 90). The records keep
the folder's name order, so the split seeded by `data.split_seed` picks the
same images as reading the folder itself (unless files were skipped).
`--format=png` packs losslessly (about 3x larger), `--format=raw` stores
pixels.

Build TFDS celeb_a_hq/{size} from the manual-download folder holding
data{size}x{size}.tar (do this once before a multi-host run):

  python tools/prepare_dataset.py --mode=tfds --input=/data/celeba_hq \
      --tfds_data_dir=/data/tensorflow_datasets --size=256
"""

import logging
import os

from absl import app
from absl import flags
import ml_collections

from ffc_ddpm.data import images
from ffc_ddpm.data import records
from ffc_ddpm.data import sources

_MODE = flags.DEFINE_enum("mode", "pack", ["pack", "tfds"],
                          "pack a folder into ArrayRecord, or build TFDS.")
_INPUT = flags.DEFINE_string(
    "input", None, "pack: image folder; tfds: folder holding data{N}x{N}.tar.")
_OUTPUT = flags.DEFINE_string("output", None, "pack: the ArrayRecord file.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "",
                                     "tfds: where TFDS keeps prepared data.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the stored square images.")
_RESIZE = flags.DEFINE_enum("resize", "center_crop", images.RESIZE_POLICIES,
                            "How non-square or other-size images are squared.")
_FORMAT = flags.DEFINE_enum("format", "jpeg", records.FORMATS,
                            "How each image is stored.")
_QUALITY = flags.DEFINE_integer("quality", 90, "JPEG quality.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Pack only the first N images.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad_files", False,
                              "Skip unreadable images instead of stopping.")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                                "Processes decoding and encoding images.")


def prepare_tfds(manual_dir: str, tfds_data_dir: str, size: int) -> int:
  """Builds TFDS celeb_a_hq/{size} and caches its file-name order."""
  config = ml_collections.ConfigDict(dict(
      source="tfds", path=manual_dir, tfds_data_dir=tfds_data_dir,
      image_size=size, num_val=0, num_test=0, split_seed=0))
  source = sources.create_source(config, "train")
  logging.info("TFDS celeb_a_hq/%d ready: %d images", size, len(source))
  return len(source)


def main(argv):
  del argv
  if not _INPUT.value:
    raise app.UsageError("--input is required")
  if _MODE.value == "tfds":
    prepare_tfds(_INPUT.value, _TFDS_DATA_DIR.value, _SIZE.value)
    return
  if not _OUTPUT.value:
    raise app.UsageError("--output is required with --mode=pack")
  records.pack_folder(_INPUT.value, _OUTPUT.value, _SIZE.value,
                      _RESIZE.value, _FORMAT.value, _QUALITY.value,
                      _LIMIT.value, _SKIP_BAD.value, _WORKERS.value)


if __name__ == "__main__":
  app.run(main)
