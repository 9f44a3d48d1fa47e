"""Converts PyTorch LPIPS / FID weight files into the .npz files ffc_ddpm reads.

  python tools/convert_metric_weights.py lpips \\
      --alexnet alexnet-owt-7be5be79.pth --lin alex.pth --out lpips.npz
  python tools/convert_metric_weights.py fid \\
      --inception pt_inception-2015-12-05-6726825d.pth --out fid.npz

then `--config.eval.lpips_weights=lpips.npz --config.eval.fid_weights=fid.npz`.
The inputs are files you already have: torchvision's AlexNet weights, the
`lpips` package's weights/v0.1/alex.pth, pytorch-fid's Inception weights.
Nothing is downloaded. Reading .pth files needs torch (`pip install torch`);
ffc_ddpm itself never does.
"""

import argparse
import sys

import numpy as np

from ffc_ddpm import perceptual


def load_torch_state(path: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch state-dict file, as NumPy arrays."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit("reading .pth files needs torch: pip install torch"
                    ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, dict):
    raise SystemExit(f"{path}: expected a state dict, got "
                     f"{type(state).__name__}")
  return {k: v.detach().float().numpy() for k, v in state.items()
          if isinstance(v, torch.Tensor)}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="metric", required=True)
  lpips = sub.add_parser(perceptual.LPIPS, help="LPIPS AlexNet-lin v0.1")
  lpips.add_argument("--alexnet", required=True,
                     help="torchvision AlexNet weights (alexnet-owt-*.pth)")
  lpips.add_argument("--lin", required=True,
                     help="lpips' linear layers (weights/v0.1/alex.pth)")
  fid = sub.add_parser(perceptual.FID, help="pytorch-fid InceptionV3")
  fid.add_argument("--inception", required=True,
                   help="pt_inception-2015-12-05-*.pth")
  for p in (lpips, fid):
    p.add_argument("--out", required=True, help="the .npz file to write")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.metric == perceptual.LPIPS:
      flat = perceptual.lpips_from_torch(load_torch_state(args.alexnet),
                                         load_torch_state(args.lin))
    else:
      flat = perceptual.inception_from_torch(load_torch_state(args.inception))
    perceptual.save_weights(args.out, args.metric, flat)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  count = sum(np.size(v) for v in flat.values())
  print(f"wrote {args.out}: {args.metric} weights, {len(flat)} arrays, "
        f"{count:,} values")


if __name__ == "__main__":
  main()
