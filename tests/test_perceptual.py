"""LPIPS / FID networks against PyTorch numbers, the Frechet distance against
closed forms, and the weight files.

The reference numbers below were computed once with the `lpips` package
(0.1.4) and `pytorch-fid` (0.3.0) on torch 2.14 / torchvision 0.29, on the
first three faces of ../shared/data/celebahq_256, with every weight and batch
norm statistic set by `pattern` (below) under its PyTorch name (lpips'
fixed input scaling left as it is).
"""

import importlib.util
import pathlib
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from ffc_ddpm import perceptual

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

TORCH_LPIPS = [0.2059979, 0.18555988]  # LPIPS(face0, face1), (face1, face2)
TORCH_FEATURES = {  # pool features of face0 and face1, at these indices
    (2, 4): [[4.04601955, 13.88959789], [4.05912304, 13.9357357]],
    (1000, 1002, 1003, 1005): [[0.02243594, 0.55873591, 0.16498581, 0.47266769],
                               [0.02257057, 0.56032121, 0.16563061, 0.47417909]],
}
TORCH_FEATURE_MEAN = [1.28823325, 1.29284139]
TORCH_FEATURE_STD = [3.09765568, 3.1088531]


def pattern(name, shape):
  """Deterministic weights for a PyTorch parameter, by its name and shape."""
  i = np.arange(int(np.prod(shape)), dtype=np.float64)
  u = np.cos(i * 0.61803 + zlib.crc32(name.encode()) % 1000).reshape(shape)
  leaf = name.split(".")[-1]
  if name.startswith("lin"):
    return 0.1 * (1 + u)
  if leaf == "running_var":
    return 1 + 0.5 * u
  if leaf == "weight" and len(shape) == 1:  # batch-norm scale
    return 1 + 0.25 * u
  if leaf in ("bias", "running_mean"):
    return 0.1 * u
  return 2 * u / np.sqrt(np.prod(shape[1:]))


def torch_state(shapes):
  return {name: pattern(name, shape) for name, shape in shapes.items()}


ALEXNET_SHAPES = {  # torchvision AlexNet `features` convolutions
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
}
LIN_SHAPES = {f"lin{i}.model.1.weight": (1, c, 1, 1)
              for i, c in enumerate((64, 192, 384, 256, 256))}


def inception_torch_shapes():
  """pytorch-fid's state-dict names and shapes, with the parts it ignores."""
  torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias",
                "mean": "running_mean", "var": "running_var"}
  shapes = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
  for key, shape in perceptual.expected_shapes(perceptual.FID).items():
    _, *path, leaf = key.split("/")
    if leaf == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1])
    shapes[".".join(path + [torch_leaf[leaf]])] = shape
    if leaf == "mean":
      shapes[".".join(path + ["num_batches_tracked"])] = ()
  return shapes


@pytest.fixture(scope="module")
def faces(shared_dir):
  paths = sorted((shared_dir / "data" / "celebahq_256").glob("*.png"))[:3]
  u8 = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
  return (u8 / 127.5 - 1).astype(np.float32)


@pytest.fixture(scope="module")
def converter():
  path = REPO_ROOT / "tools" / "convert_metric_weights.py"
  spec = importlib.util.spec_from_file_location("convert_metric_weights", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def lpips_file(converter, tmp_path_factory):
  """An LPIPS .npz made by the command-line tool from PyTorch-layout arrays."""
  files = {"alex.pth": torch_state(LIN_SHAPES),
           "alexnet.pth": torch_state(ALEXNET_SHAPES)}
  out = tmp_path_factory.mktemp("weights") / "lpips_weights"  # no suffix
  original = converter.load_torch_state
  converter.load_torch_state = files.__getitem__
  try:
    converter.main(["lpips", "--alexnet", "alexnet.pth", "--lin", "alex.pth",
                    "--out", str(out)])
  finally:
    converter.load_torch_state = original
  return str(out)


# ------------------------------------------------------------------ LPIPS
def test_lpips_matches_pytorch(faces, lpips_file):
  lpips = perceptual.load_lpips(lpips_file)
  np.testing.assert_allclose(lpips(faces[:2], faces[1:]), TORCH_LPIPS,
                             rtol=1e-5)


def test_lpips_is_zero_on_identical_images_and_symmetric(faces, lpips_file):
  lpips = perceptual.load_lpips(lpips_file)
  a, b = faces[:2], faces[1:]
  np.testing.assert_allclose(lpips(a, a), [0.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(lpips(b, a), lpips(a, b), rtol=1e-6)
  assert lpips(a, b).shape == (2,)


def test_lpips_scores_8bit_images(faces, lpips_file):
  """Changes smaller than half an 8-bit level leave the score as it was."""
  lpips = perceptual.load_lpips(lpips_file)
  nudged = faces[:2] + np.float32(0.3 / 127.5)
  np.testing.assert_array_equal(lpips(nudged, faces[1:]),
                                lpips(faces[:2], faces[1:]))


# -------------------------------------------------------------------- FID
def test_inception_matches_pytorch(faces, tmp_path):
  flat = perceptual.inception_from_torch(torch_state(inception_torch_shapes()))
  path = str(tmp_path / "fid.npz")
  perceptual.save_weights(path, perceptual.FID, flat)
  features = np.asarray(perceptual.load_inception(path)(faces[:2]))
  assert features.shape == (2, perceptual.FID_FEATURES)
  for index, want in TORCH_FEATURES.items():
    np.testing.assert_allclose(features[:, index], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(features.mean(axis=1), TORCH_FEATURE_MEAN,
                             rtol=1e-5)
  np.testing.assert_allclose(features.std(axis=1), TORCH_FEATURE_STD, rtol=1e-5)


def torch_bilinear(x, size):
  """F.interpolate(mode="bilinear", align_corners=False) of (H, W, C), NumPy."""
  for axis in (0, 1):
    n = x.shape[axis]
    src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).reshape([-1 if a == axis else 1 for a in range(3)])
    x = np.take(x, lo, axis) * (1 - w) + np.take(x, hi, axis) * w
  return x


@pytest.mark.parametrize("size", [256, 320])  # up- and down-sampling
def test_inception_input_is_pytorch_fid_resize(faces, size):
  levels = np.rint((faces[0].astype(np.float64) + 1) * 127.5)
  levels = np.pad(levels, [(0, size - 256)] * 2 + [(0, 0)], mode="reflect")
  got = np.asarray(perceptual.inception_input(levels[None] / 127.5 - 1))
  want = torch_bilinear(levels / 255, 299) * 2 - 1
  assert got.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(got[0], want, atol=3e-5)  # float32 positions


def test_frechet_distance_diagonal_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  var1, var2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
  want = np.sum((mu1 - mu2)**2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
  got = perceptual.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_frechet_distance_scaled_covariance_and_identity():
  """S2 = c^2 S1 gives (1 - c)^2 Tr(S1); identical statistics give 0."""
  rng = np.random.default_rng(1)
  root = rng.normal(size=(5, 5))
  sigma = root @ root.T + 0.1 * np.eye(5)
  mu = rng.normal(size=5)
  got = perceptual.frechet_distance(mu, sigma, mu, 9 * sigma)
  np.testing.assert_allclose(got, 4 * np.trace(sigma), rtol=1e-8)
  features = rng.normal(size=(4, 10))  # rank-deficient covariance
  stats = perceptual.fid_statistics(features)
  assert abs(perceptual.frechet_distance(*stats, *stats)) < 1e-5


def test_fid_statistics_are_mean_and_sample_covariance():
  x = np.random.default_rng(2).normal(size=(50, 3))
  mu, sigma = perceptual.fid_statistics(x)
  centred = x - x.sum(axis=0) / 50
  np.testing.assert_allclose(mu, x.sum(axis=0) / 50, rtol=1e-12)
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
  with pytest.raises(ValueError, match="M >= 2"):
    perceptual.fid_statistics(x[:1])
  with pytest.raises(ValueError, match="different sizes"):
    perceptual.frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])


# ----------------------------------------------------------- weight files
def test_weight_file_round_trip_and_errors(lpips_file, tmp_path):
  flat = perceptual.lpips_from_torch(torch_state(ALEXNET_SHAPES),
                                     torch_state(LIN_SHAPES))
  loaded = perceptual.load_weights(lpips_file, perceptual.LPIPS)
  got = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  assert len(got) == len(flat) == 15
  np.testing.assert_array_equal(
      loaded["params"]["alexnet"]["conv2"]["kernel"],
      np.transpose(pattern("features.3.weight", (192, 64, 5, 5)),
                   (2, 3, 1, 0)).astype(np.float32))
  with pytest.raises(ValueError, match="holds 'lpips' weights, expected 'fid'"):
    perceptual.load_weights(lpips_file, perceptual.FID)
  del flat["params/lin3/kernel"]
  with pytest.raises(ValueError, match="'params/lin3/kernel' is missing"):
    perceptual.save_weights(str(tmp_path / "x.npz"), perceptual.LPIPS, flat)
  flat["params/lin3/kernel"] = np.zeros((1, 1, 255, 1))
  with pytest.raises(ValueError, match=r"has shape \(1, 1, 255, 1\)"):
    perceptual.save_weights(str(tmp_path / "x.npz"), perceptual.LPIPS, flat)
  (tmp_path / "junk.npz").write_text("not a weight file")
  with pytest.raises(ValueError, match="cannot read lpips weights"):
    perceptual.load_weights(str(tmp_path / "junk.npz"), perceptual.LPIPS)
  with pytest.raises(ValueError, match="has no 'lin0.model.1.weight'"):
    perceptual.lpips_from_torch(torch_state(ALEXNET_SHAPES), {})


def test_missing_weights_message_says_how_to_enable():
  for metric, field in (("lpips", "lpips_weights"), ("fid", "fid_weights")):
    line = perceptual.missing_weights_message(metric)
    assert "\n" not in line
    assert f"--config.eval.{field}=" in line
    assert f"tools/convert_metric_weights.py {metric}" in line
