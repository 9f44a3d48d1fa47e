"""How a fill joins the photo around it: pasted, or Poisson-blended.

- paste: the fill's pixels in the hole, the photo's everywhere else (the
  paper's protocol; what evaluation scores).
- poisson: the fill's own gradients inside the hole, the photo's pixels on
  its edge (Perez et al. 2003, "Poisson image editing", with the guidance
  field zero across the hole's edge). The result is the fill plus the
  harmonic interpolation of its mismatch with the photo at the edge, so a
  fill whose colour is slightly off along the edge joins the skin around it
  without a seam, and its features are kept.

Both work on uint8 (H, W) or (H, W, C) images and (H, W) boolean holes; the
alpha of grey + alpha and RGBA images (the last channel) is pasted.
"""

import numpy as np
from scipy import ndimage
from scipy import sparse
from scipy.sparse import linalg

COMPOSITES = ("paste", "poisson")
_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def paste(photo: np.ndarray, fill: np.ndarray, hole: np.ndarray
          ) -> np.ndarray:
  """The fill inside the hole, the photo outside."""
  where = hole[..., None] if photo.ndim == 3 else hole
  return np.where(where, fill, photo).astype(np.uint8)


def poisson(photo: np.ndarray, fill: np.ndarray, hole: np.ndarray
            ) -> np.ndarray:
  """Solves, for the hole's pixels p with 4-neighbours q in the image,

    n_p u_p - sum_{q in hole} u_q = sum_{q in hole} (f_p - f_q)
                                    + sum_{q known} photo_q,

  n_p the number of neighbours (image borders: no flow across), f the fill.
  A part of the hole that touches no known pixel keeps the fill as it is.
  """
  result = _channels(paste(photo, fill, hole))
  grounded = _touching_known(hole)
  if not grounded.any():
    return result.reshape(photo.shape)
  colours = 1 if result.shape[-1] in (1, 2) else 3
  rows, cols = np.nonzero(grounded)
  index = np.full(hole.shape, -1)
  index[rows, cols] = np.arange(len(rows))
  f = _channels(fill)[..., :colours].astype(np.float64)
  known = _channels(photo)[..., :colours].astype(np.float64)
  diagonal = np.zeros(len(rows))
  rhs = np.zeros((len(rows), f.shape[-1]))
  off_rows, off_cols = [], []
  height, width = hole.shape
  for dy, dx in _NEIGHBOURS:
    qr, qc = rows + dy, cols + dx
    inside = (qr >= 0) & (qr < height) & (qc >= 0) & (qc < width)
    p, qr, qc = np.flatnonzero(inside), qr[inside], qc[inside]
    diagonal[p] += 1
    in_hole = grounded[qr, qc]
    rhs[p[in_hole]] += (f[rows[p[in_hole]], cols[p[in_hole]]] -
                        f[qr[in_hole], qc[in_hole]])
    rhs[p[~in_hole]] += known[qr[~in_hole], qc[~in_hole]]
    off_rows.append(p[in_hole])
    off_cols.append(index[qr[in_hole], qc[in_hole]])
  off_rows, off_cols = np.concatenate(off_rows), np.concatenate(off_cols)
  n = len(rows)
  system = sparse.csc_matrix(
      (np.concatenate([diagonal, -np.ones(len(off_rows))]),
       (np.concatenate([np.arange(n), off_rows]),
        np.concatenate([np.arange(n), off_cols]))), shape=(n, n))
  solved = linalg.splu(system).solve(rhs)
  result[rows, cols, :colours] = np.clip(np.round(solved), 0, 255)
  return result.reshape(photo.shape)


def _channels(image: np.ndarray) -> np.ndarray:
  """(H, W) or (H, W, C) -> (H, W, C)."""
  return image[..., None] if image.ndim == 2 else image


def _touching_known(hole: np.ndarray) -> np.ndarray:
  """The hole's pixels whose connected part of the hole (4-connected) has a
  known 4-neighbour: where the Poisson system has a unique solution."""
  parts, count = ndimage.label(hole)
  if not count:
    return np.zeros_like(hole)
  edge = ndimage.binary_dilation(~hole) & hole
  grounded_parts = np.unique(parts[edge])
  return np.isin(parts, grounded_parts[grounded_parts > 0])


def check(method: str) -> None:
  """A one-line ValueError unless `method` is one of COMPOSITES."""
  if method not in COMPOSITES:
    raise ValueError(f"--composite={method}: expected one of "
                     f"{', '.join(COMPOSITES)}")


def composite(method: str, photo: np.ndarray, fill: np.ndarray,
              hole: np.ndarray) -> np.ndarray:
  """`method` (one of COMPOSITES) applied to uint8 images of one shape."""
  check(method)
  return {"paste": paste, "poisson": poisson}[method](photo, fill, hole)
