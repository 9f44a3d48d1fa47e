"""Training augmentation (the paper's): random crop, flip, colour jitter;
and, off by default, zooming out and small rotations, so that how a face
is framed stops mattering.

Ranges come from `config.data.augment`; each example's draw comes from its
own generator, so augmentation is reproducible and resumable. Evaluation
uses none of it.
"""

import dataclasses

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 grey
# How zooming out and rotating fill the frame beyond the image: mirrored
# (without repeating the edge pixel), the edge pixels stretched, or black.
PAD_MODES = {"reflect": cv2.BORDER_REFLECT_101, "edge": cv2.BORDER_REPLICATE,
             "black": cv2.BORDER_CONSTANT}


@dataclasses.dataclass(frozen=True)
class Ranges:
  """The ranges of config.data.augment as plain (picklable) values."""
  crop_min_scale: float = 1.0
  hflip: bool = False
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0
  zoom_out_min_scale: float = 1.0
  pad_mode: str = "reflect"
  rotate_degrees: float = 0.0

  @classmethod
  def from_config(cls, aug) -> "Ranges":
    ranges = cls(float(aug.crop_min_scale), bool(aug.hflip),
                 float(aug.brightness), float(aug.contrast),
                 float(aug.saturation), float(aug.hue),
                 float(aug.zoom_out_min_scale), str(aug.pad_mode),
                 float(aug.rotate_degrees))
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
    if not 0 < self.zoom_out_min_scale <= 1:
      raise ValueError(f"config.data.augment.zoom_out_min_scale="
                       f"{self.zoom_out_min_scale} must lie in (0, 1]: the "
                       "smallest side of the zoomed-out image in the frame")
    if self.pad_mode not in PAD_MODES:
      raise ValueError(f"config.data.augment.pad_mode={self.pad_mode!r} is "
                       f"not one of {tuple(PAD_MODES)}")
    if not 0 <= self.rotate_degrees <= 180:
      raise ValueError(f"config.data.augment.rotate_degrees="
                       f"{self.rotate_degrees} must lie in [0, 180]")


@dataclasses.dataclass(frozen=True)
class Draw:
  """One example's augmentation: the framing window (fractions), flip,
  jitter factors, rotation."""
  crop_scale: float  # window side / image side: < 1 crops, > 1 zooms out
  crop_top: float  # in [0, 1]: where the crop sits within the free margin
  crop_left: float
  flip: bool
  brightness: float
  contrast: float
  saturation: float
  hue: float
  rotation: float = 0.0  # degrees, counter-clockwise
  pad_mode: str = "reflect"  # what fills the frame beyond the image


def sample(ranges: Ranges, rng: np.random.Generator) -> Draw:
  """Draws one example's augmentation within `ranges`.

  The window side is uniform in [crop_min_scale, 1 / zoom_out_min_scale],
  so a share (1/z - 1) / (1/z - c) of examples zooms out. A rotation is
  drawn last and only when rotate_degrees > 0: with zoom-out and rotation
  off, the draws are those of the crop, flip and jitter alone.
  """

  def factor(x: float) -> float:
    return rng.uniform(1 - x, 1 + x)

  degrees = ranges.rotate_degrees
  return Draw(
      crop_scale=rng.uniform(ranges.crop_min_scale,
                             1.0 / ranges.zoom_out_min_scale),
      crop_top=rng.uniform(), crop_left=rng.uniform(),
      flip=ranges.hflip and rng.uniform() < 0.5,
      brightness=factor(ranges.brightness),
      contrast=factor(ranges.contrast),
      saturation=factor(ranges.saturation),
      hue=rng.uniform(-ranges.hue, ranges.hue),
      rotation=rng.uniform(-degrees, degrees) if degrees else 0.0,
      pad_mode=ranges.pad_mode)


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


def _frame(image: np.ndarray, draw: Draw) -> np.ndarray:
  """The square window of side crop_scale * S, placed at crop_top/left of
  the free margin, scaled to S: a crop (zooming in) for crop_scale <= 1;
  above it the whole image, shrunk to S / crop_scale (area-averaged), lies
  in the window and pad_mode fills the rest."""
  if draw.crop_scale <= 1:
    return _crop(image, draw)
  size = image.shape[0]
  side = max(1, round(size / draw.crop_scale))
  if side == size:
    return image
  small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
  top = round(draw.crop_top * (size - side))
  left = round(draw.crop_left * (size - side))
  return cv2.copyMakeBorder(small, top, size - side - top, left,
                            size - side - left, PAD_MODES[draw.pad_mode],
                            value=(0, 0, 0))


def _rotate(image: np.ndarray, draw: Draw) -> np.ndarray:
  """Turns the image by draw.rotation degrees counter-clockwise about its
  centre (bicubic); pad_mode fills the corners."""
  size = image.shape[0]
  centre = ((size - 1) / 2, (size - 1) / 2)
  matrix = cv2.getRotationMatrix2D(centre, draw.rotation, 1.0)
  return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC,
                        borderMode=PAD_MODES[draw.pad_mode],
                        borderValue=(0, 0, 0))


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
  image = _frame(image, draw)
  if draw.rotation:
    image = _rotate(image, draw)
  if draw.flip:
    image = image[:, ::-1]
  return colour_jitter(image.astype(np.float32) / 255.0, draw)


def to_model_range(image: np.ndarray) -> np.ndarray:
  """uint8 or [0, 1] float image -> float32 in [-1, 1]."""
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  return (image * 2.0 - 1.0).astype(np.float32)
