"""Optional perceptual metrics: LPIPS and FID, from weight files the user has.

Nothing is downloaded. `tools/convert_metric_weights.py` turns the usual
PyTorch files into .npz files that `load_lpips` / `load_inception` read;
`config.eval.lpips_weights` / `config.eval.fid_weights` name them, and without
them the metrics are left out (`missing_weights_message` says how to add them).

- LPIPS (Zhang et al. 2018), the `lpips` package's default: AlexNet-lin v0.1.
  Five ReLU feature maps of torchvision's AlexNet, each unit-normalised over
  channels, squared differences weighted by learned 1x1 convolutions,
  averaged over space and summed (eq. 1 of the paper).
- FID (Heusel et al. 2017) as pytorch-fid computes it: the 2048-d pool
  features of TensorFlow's FID InceptionV3 (inputs resized to 299x299
  bilinearly), and the Frechet distance of two Gaussians fitted to them.

Both score the 8-bit images (as the PNGs on disk would be), like PSNR/SSIM.
Convolutions run at full float32 precision on every backend.
"""

import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ffc_ddpm import metrics

LPIPS = "lpips"
FID = "fid"
_CONFIG_FIELD = {LPIPS: "lpips_weights", FID: "fid_weights"}
_TORCH_FILES = {  # what to convert, and the converter's arguments for it
    LPIPS: ("torchvision's AlexNet and the lpips package's "
            "weights/v0.1/alex.pth",
            "--alexnet alexnet-owt-7be5be79.pth --lin alex.pth"),
    FID: ("pytorch-fid's Inception weights",
          "--inception pt_inception-2015-12-05-6726825d.pth"),
}
_NETWORK_KEY = "__network__"  # names the network an .npz file holds weights of


def missing_weights_message(metric: str) -> str:
  """The one line logged when LPIPS or FID is left out for want of weights."""
  what, args = _TORCH_FILES[metric]
  return (f"{metric.upper()} left out: no weights given. To add it, convert "
          f"{what} with `python tools/convert_metric_weights.py {metric} "
          f"{args} --out {metric}.npz` and pass "
          f"--config.eval.{_CONFIG_FIELD[metric]}={metric}.npz")


def _conv(features: int, kernel: Sequence[int], stride: int = 1,
          padding: Sequence[int] = (0, 0), use_bias: bool = True,
          name: str | None = None) -> nn.Conv:
  """A PyTorch-style Conv2d: explicit symmetric padding, float32 precision."""
  return nn.Conv(features, tuple(kernel), strides=stride,
                 padding=[(p, p) for p in padding], use_bias=use_bias,
                 precision=jax.lax.Precision.HIGHEST, name=name)


def _max_pool(x: jax.Array, stride: int = 2, padding: int = 0) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), [(padding, padding)] * 2)


# ------------------------------------------------------------------ LPIPS
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips' ScalingLayer, on [-1, 1] input
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features`, returning the five ReLU maps LPIPS uses."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    layers = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
    taps = []
    for i, (channels, (k, s, p)) in enumerate(zip(LPIPS_CHANNELS, layers)):
      if i in (1, 2):  # max pools before conv2 and conv3
        x = _max_pool(x)
      x = nn.relu(_conv(channels, (k, k), s, (p, p), name=f"conv{i + 1}")(x))
      taps.append(x)
    return taps


def _unit_normalise(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  """Each position's feature vector divided by its L2 norm (lpips' eps)."""
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class LpipsAlex(nn.Module):
  """LPIPS distance (N,) between two batches of NHWC images in [-1, 1]."""

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    x = (jnp.concatenate([a, b]) - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(
        LPIPS_SCALE)
    distance = jnp.zeros(a.shape[0], jnp.float32)
    for i, feats in enumerate(AlexNetFeatures(name="alexnet")(x)):
      fa, fb = jnp.split(_unit_normalise(feats), 2)
      weighted = _conv(1, (1, 1), use_bias=False, name=f"lin{i}")((fa - fb)**2)
      distance += weighted.mean(axis=(1, 2, 3))
    return distance


# --------------------------------------------------------------- Inception
class ConvBN(nn.Module):
  """Inception's BasicConv2d: conv without bias, batch norm (eps 1e-3), ReLU."""
  features: int
  kernel: Sequence[int] = (1, 1)
  stride: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _conv(self.features, self.kernel, self.stride, self.padding,
              use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_same(x: jax.Array) -> jax.Array:
  """3x3 average, stride 1, padded cells left out of the count (TF's)."""
  return nn.avg_pool(x, (3, 3), (1, 1), [(1, 1)] * 2, count_include_pad=False)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(64, name="branch1x1")(x)
    b5 = ConvBN(48, name="branch5x5_1")(x)
    b5 = ConvBN(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = ConvBN(64, name="branch3x3dbl_1")(x)
    b3 = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = ConvBN(self.pool_features, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = ConvBN(64, name="branch3x3dbl_1")(x)
    bd = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = ConvBN(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row = functools.partial(ConvBN, kernel=(1, 7), padding=(0, 3))
    col = functools.partial(ConvBN, kernel=(7, 1), padding=(3, 0))
    b1 = ConvBN(192, name="branch1x1")(x)
    b7 = ConvBN(c7, name="branch7x7_1")(x)
    b7 = row(c7, name="branch7x7_2")(b7)
    b7 = col(192, name="branch7x7_3")(b7)
    bd = ConvBN(c7, name="branch7x7dbl_1")(x)
    bd = col(c7, name="branch7x7dbl_2")(bd)
    bd = row(c7, name="branch7x7dbl_3")(bd)
    bd = col(c7, name="branch7x7dbl_4")(bd)
    bd = row(192, name="branch7x7dbl_5")(bd)
    bp = ConvBN(192, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(192, name="branch3x3_1")(x)
    b3 = ConvBN(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = ConvBN(192, name="branch7x7x3_1")(x)
    b7 = ConvBN(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = ConvBN(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = ConvBN(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """The last blocks; the FID network pools by average in the first (Mixed_7b)
  and, unlike the Inception paper, by maximum in the second (Mixed_7c)."""
  max_pool: bool

  @nn.compact
  def __call__(self, x):
    def split_3x3(y, prefix):  # a (1,3) and a (3,1) conv side by side
      return jnp.concatenate([
          ConvBN(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(y),
          ConvBN(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(y)], axis=-1)

    b1 = ConvBN(320, name="branch1x1")(x)
    b3 = split_3x3(ConvBN(384, name="branch3x3_1")(x), "branch3x3_2")
    bd = ConvBN(448, name="branch3x3dbl_1")(x)
    bd = ConvBN(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = split_3x3(bd, "branch3x3dbl_3")
    pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool_same(x)
    bp = ConvBN(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """pytorch-fid's FID Inception up to the final average pool -> (N, 2048).

  Takes NHWC inputs in [-1, 1] at 299x299 (any size >= 75 runs).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvBN(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = ConvBN(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = ConvBN(80, name="Conv2d_3b_1x1")(x)
    x = ConvBN(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    for name, pool_features in (("5b", 32), ("5c", 64), ("5d", 64)):
      x = InceptionA(pool_features, name=f"Mixed_{name}")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
      x = InceptionC(c7, name=f"Mixed_{name}")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


FID_INPUT_SIZE = 299
FID_FEATURES = 2048


# ------------------------------------------------------------ weight files
_NETWORKS = {LPIPS: (LpipsAlex, 2), FID: (InceptionV3, 1)}  # module, #inputs


@functools.lru_cache(maxsize=None)
def expected_shapes(metric: str) -> dict[str, tuple[int, ...]]:
  """Flat "collection/module/.../name" -> shape of the network's variables."""
  module, num_inputs = _NETWORKS[metric]
  size = FID_INPUT_SIZE if metric == FID else 64
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  tree = jax.eval_shape(module().init, jax.random.key(0),
                        *([image] * num_inputs))
  return {k: v.shape for k, v in _flatten(tree).items()}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def check_variables(metric: str, flat: Mapping[str, Any], source: str):
  """One-line error unless `flat` holds exactly the network's arrays."""
  expected = expected_shapes(metric)
  for key, shape in expected.items():
    if key not in flat:
      raise ValueError(f"{source}: not {metric} weights, {key!r} is missing")
    if tuple(np.shape(flat[key])) != shape:
      raise ValueError(f"{source}: {key!r} has shape {np.shape(flat[key])}, "
                       f"expected {shape}")
  extra = sorted(set(flat) - set(expected))
  if extra:
    raise ValueError(f"{source}: unexpected arrays for {metric}: {extra[:3]}")


def save_weights(path: str, metric: str, flat: Mapping[str, np.ndarray]):
  """Writes checked float32 variables ("collection/.../name" keys) to .npz."""
  check_variables(metric, flat, path)
  arrays = {k: np.asarray(v, np.float32) for k, v in flat.items()}
  with open(path, "wb") as f:  # np.savez(path) would append ".npz" to it
    np.savez(f, **{_NETWORK_KEY: np.asarray(metric)}, **arrays)


def load_weights(path: str, metric: str) -> dict[str, Any]:
  """Reads an .npz from `save_weights` into a Flax variables tree."""
  try:
    with np.load(path) as f:
      flat = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read {metric} weights ({e})") from None
  network = str(flat.pop(_NETWORK_KEY, "unknown"))
  if network != metric:
    raise ValueError(f"{path}: holds {network!r} weights, expected {metric!r}; "
                     "make it with tools/convert_metric_weights.py")
  check_variables(metric, flat, path)
  return _unflatten(flat)


# ------------------------------------------------------- PyTorch layouts
def _torch_conv(weight: np.ndarray) -> np.ndarray:
  return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _take(state: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
  if key not in state:
    raise ValueError(f"{what} has no {key!r}; is it the right file?")
  return np.asarray(state[key])


def lpips_from_torch(alexnet: Mapping[str, np.ndarray],
                     lin: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Flat LPIPS variables from torchvision AlexNet and lpips' alex.pth."""
  flat = {}
  for i, torch_index in enumerate((0, 3, 6, 8, 10)):  # the convs of `features`
    prefix, key = f"params/alexnet/conv{i + 1}/", f"features.{torch_index}"
    what = "the AlexNet state dict"
    flat[prefix + "kernel"] = _torch_conv(_take(alexnet, key + ".weight", what))
    flat[prefix + "bias"] = _take(alexnet, key + ".bias", what)
  for i in range(len(LPIPS_CHANNELS)):
    weight = _take(lin, f"lin{i}.model.1.weight", "the LPIPS state dict")
    flat[f"params/lin{i}/kernel"] = _torch_conv(weight)
  return flat


_BN_NAMES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"),
             "running_var": ("batch_stats", "var")}


def inception_from_torch(
    state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Flat Inception variables from pytorch-fid's state dict arrays.

  Module names are the same; the classifier (fc) and BN counters are dropped.
  """
  flat = {}
  for key, value in state.items():
    *module, layer, name = key.split(".")
    path = "/".join(module)
    if layer == "conv" and name == "weight":
      flat[f"params/{path}/conv/kernel"] = _torch_conv(value)
    elif layer == "bn" and name in _BN_NAMES:
      collection, flax_name = _BN_NAMES[name]
      flat[f"{collection}/{path}/bn/{flax_name}"] = value
  return flat


# ---------------------------------------------------------------- scoring
def _levels(images: jax.Array) -> jax.Array:
  """[-1, 1] floats -> their 8-bit levels 0..255 as float32, as in a PNG."""
  return metrics.to_uint8(images).astype(jnp.float32)


@jax.jit
def _lpips_apply(variables, a: jax.Array, b: jax.Array) -> jax.Array:
  # lpips.im2tensor: level / 127.5 - 1.
  return LpipsAlex().apply(variables, _levels(a) / 127.5 - 1,
                           _levels(b) / 127.5 - 1)


def inception_input(images: jax.Array) -> jax.Array:
  """What pytorch-fid feeds its network: 8-bit levels / 255, resized to
  299x299 (F.interpolate, bilinear, align_corners=False), scaled to [-1, 1]."""
  x = _levels(images) / 255.0
  n, _, _, c = x.shape
  x = jax.image.resize(x, (n, FID_INPUT_SIZE, FID_INPUT_SIZE, c), "bilinear",
                       antialias=False)
  return x * 2 - 1


@jax.jit
def _inception_apply(variables, images: jax.Array) -> jax.Array:
  return InceptionV3().apply(variables, inception_input(images))


def load_lpips(path: str, sharding=None) -> Callable[[jax.Array, jax.Array],
                                                     jax.Array]:
  """`lpips(a, b) -> (N,)` for images in [-1, 1], weights from `path`.

  `sharding` (e.g. replicated over the evaluation mesh) places the weights;
  without it they go to the default device, uncommitted, and jit moves them.
  """
  variables = jax.device_put(load_weights(path, LPIPS), sharding)
  return functools.partial(_lpips_apply, variables)


def load_inception(path: str, sharding=None) -> Callable[[jax.Array],
                                                         jax.Array]:
  """`features(images) -> (N, 2048)` FID pool features of images in [-1, 1]."""
  variables = jax.device_put(load_weights(path, FID), sharding)
  return functools.partial(_inception_apply, variables)


def fid_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and sample covariance (float64) of (M, D) features, as pytorch-fid."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"fid_statistics: expected (M >= 2, D) features, got "
                     f"{features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau).

  As pytorch-fid: a singular product is retried with eps on the diagonals;
  an imaginary part from rounding is dropped, a large one is an error.
  """
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
        f"frechet_distance: statistics of different sizes, {mu1.shape}/"
        f"{sigma1.shape} and {mu2.shape}/{sigma2.shape}")
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning("FID: singular covariance product; adding %g to the "
                    "diagonals", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: covariance square root has an imaginary part of "
                       f"{np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
               2 * np.trace(covmean))
