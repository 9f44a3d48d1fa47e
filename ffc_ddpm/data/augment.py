"""Training augmentation (the paper's): random crop, flip, colour jitter.

Ranges come from `config.data.augment`; each example's draw comes from its
own generator, so augmentation is reproducible and resumable. Evaluation
uses none of it.
"""

import dataclasses

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 grey


@dataclasses.dataclass(frozen=True)
class Ranges:
  """The ranges of config.data.augment as plain (picklable) values."""
  crop_min_scale: float = 1.0
  hflip: bool = False
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0

  @classmethod
  def from_config(cls, aug) -> "Ranges":
    ranges = cls(float(aug.crop_min_scale), bool(aug.hflip),
                 float(aug.brightness), float(aug.contrast),
                 float(aug.saturation), float(aug.hue))
    ranges.validate()
    return ranges

  def validate(self) -> None:
    if not 0 < self.crop_min_scale <= 1:
      raise ValueError(f"config.data.augment.crop_min_scale="
                       f"{self.crop_min_scale} must lie in (0, 1]")
    for field in ("brightness", "contrast", "saturation"):
      value = getattr(self, field)
      if not 0 <= value < 1:
        raise ValueError(f"config.data.augment.{field}={value} must lie in "
                         f"[0, 1): factors are drawn in [1 - x, 1 + x]")
    if not 0 <= self.hue <= 0.5:
      raise ValueError(f"config.data.augment.hue={self.hue} must lie in "
                       f"[0, 0.5] (a fraction of a turn)")


@dataclasses.dataclass(frozen=True)
class Draw:
  """One example's augmentation: crop box (fractions), flip, jitter factors."""
  crop_scale: float
  crop_top: float  # in [0, 1]: where the crop sits within the free margin
  crop_left: float
  flip: bool
  brightness: float
  contrast: float
  saturation: float
  hue: float


def sample(ranges: Ranges, rng: np.random.Generator) -> Draw:
  """Draws one example's augmentation within `ranges`."""

  def factor(x: float) -> float:
    return rng.uniform(1 - x, 1 + x)

  return Draw(
      crop_scale=rng.uniform(ranges.crop_min_scale, 1.0),
      crop_top=rng.uniform(), crop_left=rng.uniform(),
      flip=ranges.hflip and rng.uniform() < 0.5,
      brightness=factor(ranges.brightness),
      contrast=factor(ranges.contrast),
      saturation=factor(ranges.saturation),
      hue=rng.uniform(-ranges.hue, ranges.hue))


def _crop(image: np.ndarray, draw: Draw) -> np.ndarray:
  """Cuts a square of side crop_scale * S and scales it back up to S."""
  size = image.shape[0]
  side = min(size, max(1, round(size * draw.crop_scale)))
  if side == size:
    return image
  top = round(draw.crop_top * (size - side))
  left = round(draw.crop_left * (size - side))
  square = image[top:top + side, left:left + side]
  return cv2.resize(square, (size, size), interpolation=cv2.INTER_CUBIC)


def _grey(image: np.ndarray) -> np.ndarray:
  return image @ _LUMA


def _clip01(image: np.ndarray) -> np.ndarray:
  """Clips to [0, 1] in place (cheaper than np.clip on large arrays)."""
  np.maximum(image, 0.0, out=image)
  return np.minimum(image, 1.0, out=image)


def _blend(image: np.ndarray, other, factor: float) -> np.ndarray:
  """other + factor * (image - other), clipped to [0, 1] (as ColorJitter)."""
  out = image - other
  out *= factor
  out += other
  return _clip01(out)


def _shift_hue(image: np.ndarray, turns: float) -> np.ndarray:
  """Rotates hue by `turns` of the HSV colour wheel.

  OpenCV's float HSV uses degrees and wraps hues >= 360 itself, so the
  shift is made positive by adding a full turn.
  """
  hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
  hsv[..., 0] += 360.0 * (turns + 1.0)
  return _clip01(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def colour_jitter(image: np.ndarray, draw: Draw) -> np.ndarray:
  """Brightness, contrast, saturation, hue (in that order) on [0, 1] RGB.

  As torchvision's ColorJitter: brightness scales, contrast blends with the
  mean grey level, saturation blends with the grey image, hue rotates H.
  """
  image = _blend(image, 0.0, draw.brightness)
  image = _blend(image, _grey(image).mean(), draw.contrast)
  image = _blend(image, _grey(image)[..., None], draw.saturation)
  if draw.hue:
    image = _shift_hue(image, draw.hue)
  return image


def apply(image: np.ndarray, draw: Draw) -> np.ndarray:
  """uint8 (S, S, 3) -> augmented float32 (S, S, 3) in [0, 1]."""
  image = _crop(image, draw)
  if draw.flip:
    image = image[:, ::-1]
  return colour_jitter(image.astype(np.float32) / 255.0, draw)


def to_model_range(image: np.ndarray) -> np.ndarray:
  """uint8 or [0, 1] float image -> float32 in [-1, 1]."""
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  return (image * 2.0 - 1.0).astype(np.float32)
