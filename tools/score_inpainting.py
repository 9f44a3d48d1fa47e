r"""Scores the inpaint command's results against the original photos.

After inpainting a folder of photos whose originals you have:

  python -m ffc_ddpm.main --mode=inpaint --config=configs/celeba64.py \
      --weights=weights/celeba64.npz --image=FACES --mask=MASKS --output=OUT \
      --num_samples=8
  python tools/score_inpainting.py --image=FACES --mask=MASKS --output=OUT \
      --num_samples=8

reads each photo, its hole (--mask as the inpaint command took it: a mask
image, a folder of masks named like the photos, or a mask protocol name,
whose generated <name>_mask.png the command wrote beside the results) and
the results the command wrote for it (the same --output, --num_samples and
--reduce), and scores at the photo's own size, as the evaluation does
(`ffc_ddpm.metrics`: PSNR with MAX = 255, Gaussian SSIM, on 8-bit RGB):

  one sample     the first result (name_0.png; name.png for K = 1)
  mean of K      the per-pixel mean of the K results' 8-bit values, rounded
                 (--reduce=none with K > 1); with --reduce=mean, the mean
                 the command wrote (name.png), and no one-sample row
  baselines      --baselines (default biharmonic) filling the same holes

Prints the mean scores as a Markdown table; --json=FILE also writes them
with every photo's own.
"""

import os
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

from ffc_ddpm import baselines as baselines_lib
from ffc_ddpm import files, inpaint, inpaint_command, metrics
from ffc_ddpm import photos as photos_lib
from ffc_ddpm.data import images as image_files

ONE, MEAN = "one sample", "mean of K"


def score_pair(result: np.ndarray, original: np.ndarray) -> dict:
  """PSNR (capped at metrics.PSNR_CAP, for identical images) and SSIM of
  two uint8 (H, W, 3) images."""
  a, b = result[None], original[None]
  return {"psnr": float(metrics.capped_psnr(metrics.psnr_uint8(a, b))[0]),
          "ssim": float(metrics.ssim_uint8(a, b)[0])}


def read_hole(mask: str, relative: pathlib.Path, generated: str,
              size: tuple[int, int]) -> np.ndarray:
  """The hole (H, W, 1) the inpaint command used for one photo: its mask
  file (resized nearest neighbour, as the command does), or the mask it
  generated from a protocol name and wrote beside the results."""
  source = photos_lib.mask_source(mask, relative)
  path = str(source) if source is not None else generated
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--mask={mask}: no generated mask {path} (was "
                            "--output the inpaint command's?)")
  return photos_lib.file_hole(path, *size)


def read_result(path: str, size: tuple[int, int]) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--output: no result {path} (do --output, "
                            "--num_samples and --reduce match the inpaint "
                            "command's?)")
  rgb = image_files.load_image(path)
  if rgb.shape[:2] != size:
    raise ValueError(f"--output: {path} is {rgb.shape[1]}x{rgb.shape[0]}, "
                     f"its photo {size[1]}x{size[0]}")
  return rgb


def score_photos(image: str, mask: str, output: str, num_samples: int = 1,
                 reduce: str = "none", baselines=("biharmonic",)) -> dict:
  """{"methods": {method: {psnr, ssim}}, "photos": [...]}: the mean scores
  of each method over the photos, and each photo's own."""
  root, relatives = inpaint_command.list_images(image, output)
  targets = inpaint_command.output_paths(output, relatives, num_samples, reduce)
  num_results = 1 if reduce == "mean" else num_samples
  photos = []
  for relative, (paths, generated) in zip(relatives, targets):
    original = photos_lib.read_photo(str(root / relative)).rgb
    size = original.shape[:2]
    hole = read_hole(mask, relative, generated, size)
    results = [read_result(p, size) for p in paths[:num_results]]
    scores = {}
    if reduce == "mean":  # the command's own mean of K
      scores[MEAN if num_samples > 1 else ONE] = score_pair(results[0],
                                                            original)
    else:
      scores[ONE] = score_pair(results[0], original)
      if num_results > 1:
        mean = np.round(np.mean(np.stack(results), axis=0)).astype(np.uint8)
        scores[MEAN] = score_pair(mean, original)
    for name in baselines:
      filled = baselines_lib.inpaint(name, original[None], hole[None])[0]
      scores[name] = score_pair(filled, original)
    photos.append({"image": str(relative),
                   "hole_fraction": float(hole.mean()), **scores})
  methods = [m for m in photos[0] if m not in ("image", "hole_fraction")]
  means = {m: {"psnr": metrics.mean_psnr([p[m]["psnr"] for p in photos]),
               "ssim": float(np.mean([p[m]["ssim"] for p in photos]))}
           for m in methods}
  return {"num_photos": len(photos), "k": num_samples, "methods": means,
          "photos": photos}


def markdown(scores: dict) -> str:
  lines = ["| method | PSNR | SSIM |", "|---|---|---|"]
  for method, s in scores["methods"].items():
    name = method.replace("K", str(scores["k"])) if method == MEAN else method
    lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.3f} |")
  lines += ["", f"{scores['num_photos']} photos, at their own size; PSNR (dB, "
            "MAX = 255) and SSIM on 8-bit RGB."]
  return "\n".join(lines) + "\n"


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  tests can import its functions beside other tools' flags."""
  global _IMAGE, _MASK, _OUTPUT, _NUM_SAMPLES, _REDUCE, _BASELINES, _JSON
  _IMAGE = flags.DEFINE_string("image", None, "The original photos: the "
                               "inpaint command's --image (file or folder).")
  _MASK = flags.DEFINE_string("mask", None, "The inpaint command's --mask.")
  _OUTPUT = flags.DEFINE_string("output", None,
                                "The inpaint command's --output.")
  _NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1,
                                      "The inpaint command's --num_samples.")
  _REDUCE = flags.DEFINE_enum("reduce", "none", list(inpaint.REDUCTIONS),
                              "The inpaint command's --reduce.")
  _BASELINES = flags.DEFINE_list(
      "baselines", ["biharmonic"], "Classical methods on the same holes: "
      f"{', '.join(baselines_lib.BASELINES)}.")
  _JSON = flags.DEFINE_string("json", None, "Also write the scores here.")


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if not (_IMAGE.value and _MASK.value and _OUTPUT.value):
    sys.exit("error: --image, --mask and --output are required")
  if _NUM_SAMPLES.value < 1:
    sys.exit(f"error: --num_samples={_NUM_SAMPLES.value}: expected 1 or more")
  unknown = set(_BASELINES.value) - set(baselines_lib.BASELINES)
  if unknown:
    sys.exit(f"error: --baselines: {', '.join(sorted(unknown))} not one of "
             f"{', '.join(baselines_lib.BASELINES)}")
  try:
    scores = score_photos(_IMAGE.value, _MASK.value, _OUTPUT.value,
                          _NUM_SAMPLES.value, _REDUCE.value,
                          tuple(_BASELINES.value))
  except (ValueError, OSError) as e:  # missing or mismatched files
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(markdown(scores), end="")
  if _JSON.value:
    files.write_json(_JSON.value, scores, indent=2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
