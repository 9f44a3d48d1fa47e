"""Procedural synthetic faces: the embedded default data set.

Each face is a pure function of `(seed, index)`: its parameters (pose, head
shape, skin tone, hair, eyes, brows, nose, mouth, lighting, background) are
drawn from `numpy.random.default_rng([seed, index])` in resolution-free units,
then rendered at any size with analytic soft edges (each shape's signed
distance divided by the pixel size gives its coverage), so the same face comes
out at 32, 64 or 256 pixels without aliasing.

The faces are framed like aligned CelebA-HQ: the head fills most of the
image, so a centre hole (the middle 50% x 50%) hides the eyes, brows, nose and
most of the mouth while the cheeks, head outline, hair, face axis and lighting
stay visible: a model has to infer the features from the symmetric remains,
as on real faces.
"""

import dataclasses
import functools
import math

import numpy as np

# Colour palettes (RGB in [0, 1]); each face interpolates or jitters these.
_SKIN_LIGHT = np.array([0.98, 0.85, 0.74])
_SKIN_DARK = np.array([0.33, 0.21, 0.14])
_HAIR = np.array([
    [0.07, 0.06, 0.05],  # black
    [0.24, 0.15, 0.09],  # dark brown
    [0.45, 0.30, 0.17],  # brown
    [0.80, 0.65, 0.40],  # blond
    [0.60, 0.25, 0.10],  # red
    [0.62, 0.62, 0.62],  # grey
])
_HAIR_WEIGHTS = np.array([0.3, 0.25, 0.18, 0.13, 0.07, 0.07])
_IRIS = np.array([
    [0.30, 0.18, 0.08],  # brown
    [0.15, 0.09, 0.05],  # dark brown
    [0.25, 0.45, 0.70],  # blue
    [0.30, 0.50, 0.30],  # green
    [0.50, 0.40, 0.20],  # hazel
    [0.45, 0.50, 0.55],  # grey
])
_LIP_TINT = np.array([0.75, 0.30, 0.33])
_EYE_WHITE = np.array([0.93, 0.91, 0.88], np.float32)
_PUPIL = np.array([0.03, 0.03, 0.03], np.float32)
_INNER_MOUTH = np.array([0.25, 0.05, 0.06], np.float32)
_TEETH = np.array([0.92, 0.9, 0.85], np.float32)
_WHITE = np.ones(3, np.float32)


@dataclasses.dataclass(frozen=True)
class FaceParams:
  """Everything that defines one face, in resolution-free units.

  Image coordinates x (right) and y (down) span [-1, 1]. The face frame
  (u, v) is centred on the head, rotated by `roll` and scaled by `scale`;
  the head ellipse has radii (`head_ru`, `head_rv`) in face units.
  """
  centre: tuple[float, float]
  scale: float
  roll: float
  yaw: float
  head_ru: float
  head_rv: float
  jaw: float
  skin: np.ndarray  # colours: float32 RGB in [0, 1]
  light: tuple[float, float, float]  # unit vector in (u, v, towards viewer)
  ambient: float
  background: tuple[np.ndarray, np.ndarray]
  background_angle: float
  clothes: np.ndarray
  hair: np.ndarray
  hairline: float
  hair_curve: float
  hair_part: float
  fringe: tuple[float, float, float]
  hair_length: float
  hair_volume: float
  eye_u: float
  eye_v: float
  eye_size: tuple[float, float]
  iris: np.ndarray
  gaze: tuple[float, float]
  brow_lift: float
  brow_thickness: float
  brow_arch: float
  nose_length: float
  nose_width: float
  mouth_v: float
  mouth_width: float
  smile: float
  mouth_open: float
  lips: np.ndarray


class _Draws:
  """Uniform draws served from one pre-drawn vector (one RNG call per face)."""

  def __init__(self, rng: np.random.Generator, count: int = 96):
    self._values = rng.random(count)
    self._next = 0

  def __call__(self, low: float = 0.0, high: float = 1.0, n: int = 0):
    take = max(n, 1)
    values = self._values[self._next:self._next + take]
    self._next += take
    values = low + (high - low) * values
    return values if n else float(values[0])

  def choice(self, weights: np.ndarray) -> int:
    """An index drawn with probability proportional to `weights`."""
    cumulative = np.cumsum(weights) / np.sum(weights)
    index = int(np.searchsorted(cumulative, self(), side="right"))
    return min(index, len(weights) - 1)  # guards against rounding at 1


def _colour(rgb: np.ndarray) -> np.ndarray:
  return np.clip(rgb, 0, 1).astype(np.float32)


def _muted(rgb: np.ndarray, saturation: float) -> np.ndarray:
  """Pulls a colour towards its grey level."""
  return rgb.mean() + (rgb - rgb.mean()) * saturation


def sample_params(seed: int, index: int) -> FaceParams:
  """Draws the parameters of face `index` of the family defined by `seed`."""
  if seed < 0 or index < 0:
    raise ValueError(f"seed and index must be >= 0, got seed={seed}, "
                     f"index={index}")
  u = _Draws(np.random.default_rng([seed, index]))
  skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * u() ** 1.3
  skin = _colour(skin * u(0.95, 1.05, 3))
  hair = _HAIR[u.choice(_HAIR_WEIGHTS)] * u(0.8, 1.2)
  hair = _colour(hair * u(0.93, 1.07, 3))
  azimuth, elevation = u(0, 2 * np.pi), u(0.5, 1.2)
  light = np.array([np.cos(elevation) * np.cos(azimuth),
                    np.cos(elevation) * np.sin(azimuth) - 0.2,
                    np.sin(elevation)])
  bald = u() < 0.04
  short = u() < 0.35
  return FaceParams(
      centre=(u(-0.04, 0.04), u(-0.08, 0.0)),
      scale=u(0.76, 0.88),
      roll=u(-0.17, 0.17),
      yaw=u(-0.35, 0.35),
      head_ru=u(0.64, 0.74),
      head_rv=u(0.88, 0.98),
      jaw=u(0.1, 0.3),
      skin=skin,
      light=tuple(float(c) for c in light / np.linalg.norm(light)),
      ambient=u(0.45, 0.6),
      background=(_colour(_muted(u(0.05, 0.95, 3), u(0.3, 0.9))),
                  _colour(_muted(u(0.05, 0.95, 3), u(0.3, 0.9)))),
      background_angle=u(0, 2 * np.pi),
      clothes=_colour(u(0.05, 0.9, 3)),
      hair=hair,
      hairline=-1.2 if bald else u(-0.62, -0.4),
      hair_curve=u(0.5, 0.9),
      hair_part=u(-0.25, 0.25),
      fringe=(u(0, 0.06), u(6, 14), u(0, 2 * np.pi)),
      hair_length=0.0 if bald or short else u(-0.3, 1.9),
      hair_volume=u(1.05, 1.18),
      eye_u=u(0.27, 0.33),
      eye_v=u(-0.06, 0.03),
      eye_size=(u(0.11, 0.135), u(0.045, 0.062)),
      iris=_colour(_IRIS[u.choice(np.ones(len(_IRIS)))] * u(0.85, 1.15, 3)),
      gaze=(u(-0.025, 0.025), u(-0.008, 0.008)),
      brow_lift=u(0.14, 0.2),
      brow_thickness=u(0.018, 0.035),
      brow_arch=u(0.8, 2.5),
      nose_length=u(0.3, 0.38),
      nose_width=u(0.09, 0.13),
      mouth_v=u(0.48, 0.56),
      mouth_width=u(0.17, 0.26),
      smile=u(-0.5, 2.0),
      mouth_open=u(0.012, 0.035) if u() < 0.3 else 0.0,
      lips=_colour(skin + (_LIP_TINT * skin.mean() * 1.3 - skin) *
                   u(0.35, 0.6)),
  )


# ---------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=8)
def _image_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates x, y in [-1, 1] (read-only, cached per size)."""
  c = ((np.arange(image_size, dtype=np.float32) + 0.5) / image_size) * 2 - 1
  y, x = np.meshgrid(c, c, indexing="ij")
  x.flags.writeable = y.flags.writeable = False
  return x, y


@dataclasses.dataclass(frozen=True)
class _Frame:
  """Face coordinates (u, v) and head shading of a block of pixels.

  `pixel` is the size of one pixel in face units; `window` is the block's
  (rows, cols) slice of the image, so shapes paint into `canvas[window]`.
  """
  u: np.ndarray
  v: np.ndarray
  shade: np.ndarray
  pixel: float
  window: tuple[slice, slice]
  to_image: np.ndarray  # affine map (u, v, 1) -> image (x, y), 2 x 3
  image_size: int

  def crop(self, cu: float, cv: float, radius: float) -> "_Frame":
    """The sub-frame of pixels within `radius` face units of (cu, cv)."""
    x, y = self.to_image @ np.array([cu, cv, 1.0])
    reach = radius / self.pixel + 2

    def span(coordinate):
      centre = (coordinate + 1) * self.image_size / 2 - 0.5
      return slice(int(min(max(centre - reach, 0), self.image_size)),
                   int(min(max(centre + reach + 1, 0), self.image_size)))

    rows, cols = span(y), span(x)
    return dataclasses.replace(self, u=self.u[rows, cols],
                               v=self.v[rows, cols],
                               shade=self.shade[rows, cols],
                               window=(rows, cols))


def _face_to_image(p: FaceParams) -> np.ndarray:
  """The affine map face (u, v, 1) -> image (x, y): rotate, scale, shift."""
  c, s = math.cos(p.roll), math.sin(p.roll)
  return np.array([[p.scale * c, -p.scale * s, p.centre[0]],
                   [p.scale * s, p.scale * c, p.centre[1]]])


def _face_frame(p: FaceParams, image_size: int) -> _Frame:
  """The whole image in the face's rotated, scaled coordinates."""
  x, y = _image_grid(image_size)
  dx, dy = x - p.centre[0], y - p.centre[1]
  c, s = math.cos(p.roll), math.sin(p.roll)
  u = (c * dx + s * dy) / p.scale
  v = (-s * dx + c * dy) / p.scale
  shade = _head_shade(p, u, v)
  everything = (slice(None), slice(None))
  return _Frame(u, v, shade, 2.0 / image_size / p.scale, everything,
                _face_to_image(p), image_size)


def _clip01(x: np.ndarray) -> np.ndarray:
  """Clips to [0, 1] (np.clip's overhead dominates on tiny arrays)."""
  return np.minimum(np.maximum(x, 0.0), 1.0)


def _coverage(distance: np.ndarray, frame: _Frame, blur: float = 0.0):
  """Fraction of each pixel inside a shape from its signed distance (< 0 in)."""
  width = max(frame.pixel, blur)
  return _clip01(0.5 - distance / width)


def _ellipse(frame: _Frame, cu: float, cv: float, ru: float, rv: float,
             bend: float = 0.0, tilt: float = 0.0) -> np.ndarray:
  """Approximate signed distance to an ellipse, optionally bent into an arc.

  The implicit function f = (du/ru)^2 + (dv/rv)^2 - 1 with
  dv = v - cv - bend * du^2 - tilt * du is divided by |grad f|, which is the
  true distance to first order near the edge (all that coverage needs); the
  shape lies within |du| <= ru, which bounds the distance from below far away.
  """
  du = frame.u - cu
  if not (bend or tilt):
    dv = frame.v - cv
    su, sv = du / ru, dv / rv
    f = su * su + sv * sv - 1
    return f / (2 * np.sqrt((su / ru) ** 2 + (sv / rv) ** 2 + 1e-12))
  dv = frame.v - cv - (bend * du + tilt) * du
  f = (du / ru) ** 2 + (dv / rv) ** 2 - 1
  gv = 2 * dv / rv**2
  gu = 2 * du / ru**2 - gv * (2 * bend * du + tilt)
  distance = f / np.sqrt(gu * gu + gv * gv + 1e-12)
  return np.maximum(distance, np.abs(du) - ru)


def _box(frame: _Frame, cu: float, cv: float, hu: float, hv: float,
         radius: float) -> np.ndarray:
  """Exact signed distance to a rounded rectangle of half-sizes (hu, hv)."""
  qu = np.abs(frame.u - cu) - hu + radius
  qv = np.abs(frame.v - cv) - hv + radius
  outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
  return outside + np.minimum(np.maximum(qu, qv), 0) - radius


def _paint(canvas: np.ndarray, frame: _Frame, colour: np.ndarray,
           alpha: np.ndarray, shade=None) -> None:
  """Composites `colour` (times a per-pixel `shade`, if given) over the
  frame's pixels with per-pixel `alpha`, touching only where alpha > 0."""
  rows = np.flatnonzero(alpha.max(axis=1) > 0)
  cols = np.flatnonzero(alpha.max(axis=0) > 0)
  if rows.size == 0:
    return
  box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
  if shade is not None:
    colour = colour * np.asarray(shade, np.float32)[box][..., None]
  block = canvas[frame.window][box]
  block += (colour - block) * alpha[box][..., None]


def _darken(canvas: np.ndarray, frame: _Frame, alpha, amount: float) -> None:
  """Multiplies the frame's pixels by (1 - amount * alpha): soft shadows."""
  canvas[frame.window] *= 1 - amount * alpha[..., None]


# ----------------------------------------------------------------- shading


def _head_shade(p: FaceParams, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Lambertian shading of the head seen as an ellipsoid, plus ambient light.

  The normal at (u, v) is (nu, nv, sqrt(1 - nu^2 - nv^2)) with nu, nv the
  coordinates relative to the radii (clipped, so it keeps turning outside).
  """
  nu = np.minimum(np.maximum(u / (p.head_ru * 1.05), -1.0), 1.0)
  nv = np.minimum(np.maximum(v / (p.head_rv * 1.05), -1.0), 1.0)
  nz = np.sqrt(np.maximum(1 - nu * nu - nv * nv, 0.0))
  lu, lv, lz = p.light
  dot = (lu * nu + lv * nv + lz * nz) / np.sqrt(nu * nu + nv * nv + nz * nz)
  return p.ambient + (1 - p.ambient) * np.maximum(dot, 0.0)


# ------------------------------------------------------------------ layers


def _background(p: FaceParams, image_size: int) -> np.ndarray:
  """A linear two-colour gradient with a soft vignette."""
  x, y = _image_grid(image_size)
  a = p.background_angle
  t = _clip01(0.5 + 0.5 * (math.cos(a) * x + math.sin(a) * y))[..., None]
  c0, c1 = p.background
  vignette = 1 - 0.18 * (x * x + y * y)[..., None]
  return (c0 + (c1 - c0) * t) * vignette


def _body(canvas: np.ndarray, p: FaceParams, frame: _Frame) -> None:
  """Shoulders in clothes colour and a neck lit from the side, chin shadow."""
  shoulders = _ellipse(frame, 0, p.head_rv + 1.05, 1.55, 0.75)
  side_light = 0.75 + 0.25 * p.light[0] * np.tanh(frame.u / 0.5)
  _paint(canvas, frame, p.clothes, _coverage(shoulders, frame), side_light)
  neck = _box(frame, 0, p.head_rv + 0.25, 0.33, 0.55, 0.1)
  chin_shadow = 0.3 * _clip01(1 - (frame.v - p.head_rv) / 0.35)
  neck_shade = (p.ambient + (1 - p.ambient) * 0.6) * side_light - chin_shadow
  _paint(canvas, frame, p.skin, _coverage(neck, frame), neck_shade)


def _hair_shade(frame: _Frame) -> np.ndarray:
  """Hair shaded like the head, with faint strands radiating from the crown."""
  strands = np.sin(40 * np.arctan2(frame.u, frame.v + 1.3))
  amplitude = 0.07 * min(1.0, frame.image_size / 128)
  return (0.55 + 0.6 * frame.shade) * (1 + amplitude * strands)


def _long_hair(canvas, p: FaceParams, frame: _Frame, hair_shade) -> None:
  """Hair falling behind the head and shoulders (absent for short hair)."""
  if p.hair_length <= 0:
    return
  half = p.head_ru * p.hair_volume * 1.08
  top, bottom = -p.head_rv * 0.6, p.hair_length
  back = _box(frame, 0, (top + bottom) / 2, half, (bottom - top) / 2, 0.35)
  _paint(canvas, frame, p.hair * 0.8, _coverage(back, frame), hair_shade)


def _head(canvas, p: FaceParams, frame: _Frame) -> None:
  """Ears and the egg-shaped head, narrower at the jaw."""
  for side in (-1, 1):
    cu = side * (p.head_ru - 0.02)
    ear = frame.crop(cu, 0.05, 0.2)
    _paint(canvas, ear, p.skin * 0.9,
           _coverage(_ellipse(ear, cu, 0.05, 0.1, 0.17), ear), ear.shade)
  narrowing = 1 - p.jaw * _clip01(frame.v / p.head_rv) ** 2
  warped = dataclasses.replace(frame, u=frame.u / narrowing)
  head = _ellipse(warped, 0, 0, p.head_ru, p.head_rv)
  _paint(canvas, frame, p.skin, _coverage(head, frame), frame.shade)


def _hair_cap(canvas, p: FaceParams, frame: _Frame, hair_shade) -> None:
  """Hair on top of the head down to a curved, parted hairline with fringe."""
  cap = _ellipse(frame, 0, -0.06, p.head_ru * p.hair_volume,
                 p.head_rv * (p.hair_volume - 0.02))
  amp, freq, phase = p.fringe
  u = frame.u - p.hair_part
  line = (p.hairline + p.hair_curve * u * u + amp * np.sin(freq * u + phase))
  slope = 2 * p.hair_curve * u + amp * freq * np.cos(freq * u + phase)
  below_line = (frame.v - line) / np.sqrt(1 + slope * slope)
  alpha = _coverage(cap, frame) * _coverage(below_line, frame)
  _paint(canvas, frame, p.hair, alpha, hair_shade)


# Where the features sit in face units; yaw shifts them sideways, the nose
# (which stands out most) furthest.


def _eye_centre(p: FaceParams, side: int) -> tuple[float, float]:
  return side * p.eye_u + 0.12 * p.yaw, p.eye_v


def _iris_centre(p: FaceParams, side: int) -> tuple[float, float]:
  cu, cv = _eye_centre(p, side)
  return cu + p.gaze[0] + 0.02 * p.yaw, cv + p.gaze[1]


def _nose_tip(p: FaceParams) -> tuple[float, float]:
  return 0.18 * p.yaw, p.nose_length


def _mouth_centre(p: FaceParams) -> tuple[float, float]:
  return 0.14 * p.yaw, p.mouth_v


def _eye(canvas, p: FaceParams, frame: _Frame, side: int) -> None:
  """Socket shadow, lid line, white, iris, pupil and catch-light of one eye."""
  ru, rv = p.eye_size
  ru *= 1 - 0.35 * p.yaw * side  # the far eye looks narrower
  cu, cv = _eye_centre(p, side)
  f = frame.crop(cu, cv, ru * 1.5 + 0.1)
  socket = _ellipse(f, cu, cv - 0.02, ru * 1.5, rv * 2.2)
  _darken(canvas, f, _coverage(socket, f, blur=0.07), 0.12)
  crease = _ellipse(f, cu, cv - rv * 1.5, ru * 0.9, 0.008, bend=2.0)
  _darken(canvas, f, _coverage(crease, f, blur=0.02), 0.2)
  lid = _ellipse(f, cu, cv - 0.006, ru + 0.014, rv + 0.012)
  _paint(canvas, f, p.hair * 0.3, _coverage(lid, f))
  white = _coverage(_ellipse(f, cu, cv, ru, rv), f)
  _paint(canvas, f, _EYE_WHITE, white, 0.6 + 0.4 * f.shade)
  iu, iv = _iris_centre(p, side)
  r_iris = rv * 0.95
  iris = _ellipse(f, iu, iv, r_iris, r_iris)
  rim = _clip01(np.hypot(f.u - iu, f.v - iv) / r_iris)
  _paint(canvas, f, p.iris, _coverage(iris, f) * white, 1.1 - 0.5 * rim)
  pupil = _ellipse(f, iu, iv, r_iris * 0.45, r_iris * 0.45)
  _paint(canvas, f, _PUPIL, _coverage(pupil, f) * white)
  glint_u, glint_v = iu + 0.4 * r_iris * p.light[0], iv - 0.4 * r_iris
  glint = _ellipse(f, glint_u, glint_v, r_iris * 0.22, r_iris * 0.22)
  _paint(canvas, f, _WHITE, 0.85 * _coverage(glint, f) * white)


def _brow(canvas, p: FaceParams, frame: _Frame, side: int) -> None:
  """An arched brow above the eye, thicker towards the nose."""
  ru = p.eye_size[0] * 1.25 * (1 - 0.35 * p.yaw * side)
  cu = side * (p.eye_u + 0.01) + 0.12 * p.yaw
  cv = p.eye_v - p.brow_lift
  f = frame.crop(cu, cv, ru + 0.05)
  brow = _ellipse(f, cu, cv, ru, p.brow_thickness, bend=p.brow_arch,
                  tilt=side * 0.12)
  _paint(canvas, f, p.hair * 0.75, 0.92 * _coverage(brow, f))


def _nose(canvas, p: FaceParams, frame: _Frame) -> None:
  """Bridge highlight, shadow on the side away from the light, tip, nostrils."""
  nu, length = _nose_tip(p)
  width = p.nose_width
  f = frame.crop(nu, length * 0.6, length * 0.6 + 0.1)
  away = -1.0 if p.light[0] > 0 else 1.0
  side = _ellipse(f, nu + away * width * 0.55, length * 0.5, 0.035,
                  length * 0.5)
  _darken(canvas, f, _coverage(side, f, blur=0.05), 0.18)
  bridge = _ellipse(f, nu - away * 0.01, length * 0.45, 0.025, length * 0.45)
  _paint(canvas, f, np.minimum(p.skin * 1.15 + 0.05, 1),
         0.45 * _coverage(bridge, f, blur=0.04))
  under = _ellipse(f, nu, length + 0.04, width * 1.1, 0.035)
  _darken(canvas, f, _coverage(under, f, blur=0.04), 0.25)
  tip = _ellipse(f, nu, length - 0.01, width * 0.55, 0.045)
  _paint(canvas, f, np.minimum(p.skin * 1.08 + 0.03, 1),
         0.5 * _coverage(tip, f, blur=0.03))
  for s in (-1, 1):
    nostril = _ellipse(f, nu + s * width * 0.5, length + 0.025, 0.032, 0.016,
                       tilt=-s * 0.4)
    _darken(canvas, f, _coverage(nostril, f, blur=0.015), 0.55)


def _mouth(canvas, p: FaceParams, frame: _Frame) -> None:
  """Lips (darker upper lip), the mouth line and, if open, teeth."""
  (mu, mv), width = _mouth_centre(p), p.mouth_width
  f = frame.crop(mu, mv + 0.04, width + 0.12)
  bend = -p.smile * 0.9
  lower = _ellipse(f, mu, mv + 0.032 + p.mouth_open, width * 0.85, 0.045,
                   bend=bend)
  _paint(canvas, f, p.lips, _coverage(lower, f), f.shade)
  upper = _ellipse(f, mu, mv - 0.022, width, 0.035, bend=bend)
  _paint(canvas, f, p.lips * 0.82, _coverage(upper, f), f.shade)
  if p.mouth_open > 0:
    inside = _ellipse(f, mu, mv + p.mouth_open * 0.5, width * 0.82,
                      p.mouth_open, bend=bend)
    _paint(canvas, f, _INNER_MOUTH, _coverage(inside, f))
    teeth = _ellipse(f, mu, mv, width * 0.6, p.mouth_open * 0.45, bend=bend)
    _paint(canvas, f, _TEETH, _coverage(teeth, f))
  line = _ellipse(f, mu, mv, width * 1.02, 0.008, bend=bend)
  _paint(canvas, f, p.lips * 0.35, 0.9 * _coverage(line, f))
  under = _ellipse(f, mu, mv + 0.11 + p.mouth_open, width * 0.5, 0.02)
  _darken(canvas, f, _coverage(under, f, blur=0.04), 0.12)


# ------------------------------------------------------------------ public


def render_params(p: FaceParams, image_size: int) -> np.ndarray:
  """Renders a face from its parameters: uint8 (image_size, image_size, 3)."""
  if image_size < 8:
    raise ValueError(f"image_size must be >= 8, got {image_size}")
  frame = _face_frame(p, image_size)
  canvas = _background(p, image_size)
  hair_shade = _hair_shade(frame)
  _long_hair(canvas, p, frame, hair_shade)
  _body(canvas, p, frame)
  _head(canvas, p, frame)
  _hair_cap(canvas, p, frame, hair_shade)
  for side in (-1, 1):
    _eye(canvas, p, frame, side)
    _brow(canvas, p, frame, side)
  _nose(canvas, p, frame)
  _mouth(canvas, p, frame)
  return np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)


def landmarks(p: FaceParams) -> dict[str, tuple[float, float]]:
  """Image coordinates (x, y) in [-1, 1] of the pupils, nose tip and mouth."""
  points = {
      "left_pupil": _iris_centre(p, -1),
      "right_pupil": _iris_centre(p, 1),
      "nose_tip": _nose_tip(p),
      "mouth": _mouth_centre(p),
  }
  to_image = _face_to_image(p)
  return {name: tuple(float(c) for c in to_image @ np.array([u, v, 1.0]))
          for name, (u, v) in points.items()}


def render_face(seed: int, index: int, image_size: int) -> np.ndarray:
  """Face `index` of the family `seed`: uint8 (image_size, image_size, 3).

  Deterministic: the same arguments always give the same bytes, and the same
  (seed, index) at another size gives the same face at that resolution.
  """
  return render_params(sample_params(seed, index), image_size)
