"""Resampling a variance (or inverse-variance) map consistently with the data.

The warp's output pixel is a linear combination of source pixels,
``out = sum_k c_k(s) src_k``, with ``c_k`` the interpolation weights at the sampled
position ``s``. For independent source pixels the output variance is therefore
``sum_k c_k(s)**2 var_k``; that is what is computed here, per output pixel:

* order 0: the nearest pixel's variance (exact);
* order 1: the four bilinear weights squared (exact);
* orders 2-5: the spline interpolation weights are those of the *cardinal* spline
  ``eta_n`` (B-spline of order n applied after the prefilter), which reach beyond
  the B-spline's support and decay geometrically (by 0.17, 0.27, 0.36, 0.43 per
  pixel for orders 2-5). The weights are evaluated exactly (from the prefiltered
  unit impulse, as the warp itself would) within ``WINDOW_RADIUS[order]`` pixels of
  the sampled position and neglected beyond: the neglected part of
  ``sum c_k**2`` is below 1e-4 of the total. Pixels reflected at the image edges
  (the warp's ``mirror`` boundary) add their weights before squaring.

This treats the source pixels as independent (the usual assumption of a variance
map); the output pixels are then correlated, which no per-pixel map can express.
With ``conserve_flux`` the data are multiplied by ``|J|`` and the variance by ``J**2``
(:mod:`gpualign._flux`). Non-finite variances (an inverse variance of 0) make every
output pixel they contribute to infinite (weight 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign.transform import Transform

__all__ = ["WEIGHT_TYPES", "to_variance", "from_variance", "resample_variance",
           "VarianceResampler", "WINDOW_RADIUS"]

WEIGHT_TYPES = ("variance", "inverse_variance", "stddev")

#: Truncation radius (pixels) of the cardinal-spline weights per order.
WINDOW_RADIUS = {0: 0, 1: 1, 2: 3, 3: 4, 4: 5, 5: 6}
_IMPULSE_HALF = 48
ROWS = 128


def to_variance(weight: Any, weight_type: str) -> np.ndarray:
    """A weight map of ``weight_type`` as a float64 variance map (inf where no weight)."""
    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, "
                         f"got {weight_type!r}")
    w = np.array(weight, dtype=np.float64)
    if w.ndim != 2:
        raise InputError(f"the weight map must be 2-D, got shape {w.shape}")
    if weight_type == "variance":
        return w
    if weight_type == "stddev":
        return w * w
    with np.errstate(divide="ignore"):
        return np.where(w > 0, 1.0 / w, np.inf)


def from_variance(var: np.ndarray, weight_type: str, footprint: np.ndarray) -> np.ndarray:
    """Back to ``weight_type``; no-data pixels get NaN (variance, stddev) or 0 (weights)."""
    if weight_type == "inverse_variance":
        with np.errstate(divide="ignore"):
            out = np.where(np.isfinite(var) & (var > 0), 1.0 / var, 0.0)
        out[~footprint] = 0.0
        return out.astype(np.float32)
    out = np.sqrt(var) if weight_type == "stddev" else var.copy()
    out[~footprint] = np.nan
    return out.astype(np.float32)


_ETA_CACHE: dict[int, np.ndarray] = {}


def _eta_coeffs(order: int) -> np.ndarray:
    """Prefiltered unit impulse: sampling it at ``c + t`` gives the cardinal spline eta(t)."""
    if order not in _ETA_CACHE:
        delta = np.zeros(2 * _IMPULSE_HALF + 1)
        delta[_IMPULSE_HALF] = 1.0
        from scipy import ndimage  # deferred: 0.3 s at start-up

        _ETA_CACHE[order] = ndimage.spline_filter1d(delta, order, mode="mirror")
    return _ETA_CACHE[order]


def _eta(order: int, t: np.ndarray) -> np.ndarray:
    """Cardinal spline interpolation weight of a pixel at offset ``t`` (order >= 1)."""
    if order == 1:
        return np.clip(1.0 - np.abs(t), 0.0, None)
    from scipy import ndimage

    c = _eta_coeffs(order)
    pos = np.clip(t + _IMPULSE_HALF, 0, 2 * _IMPULSE_HALF)
    return ndimage.map_coordinates(c, pos.reshape(1, -1), order=order, mode="mirror",
                                   prefilter=False).reshape(t.shape)


def _axis_weights(order: int, s: np.ndarray, n: int, radius: int):
    """Per window offset: the real pixel index and its (reflection-summed) weight."""
    f = np.floor(s)
    # reflections only matter within the window's reach of an edge
    near_lo = bool(f.min() <= 2 * radius + 2) if f.size else False
    near_hi = bool(f.max() >= n - 3 - 2 * radius) if f.size else False
    out = []
    for o in range(-radius, radius + 2):
        r = f + o
        ok = (r >= 0) & (r <= n - 1)
        w = _eta(order, s - r)
        # mirror boundary: the reflections of r about 0 and about n - 1
        if near_lo:
            w = w + np.where(r > 0, _eta(order, s + r), 0.0)
        if near_hi:
            w = w + np.where(r < n - 1, _eta(order, s - (2 * (n - 1) - r)), 0.0)
        w = np.where(ok, w, 0.0)
        out.append((np.clip(r, 0, n - 1).astype(np.intp), w))
    return out


class VarianceResampler:
    """The variance map of a source, propagated through a warp row block by row block.

    Parameters
    ----------
    variance : ndarray (H, W)
        Source variance (non-negative; inf where a pixel carries no information).
    transform : Transform
        Output pixel -> source pixel mapping (the one the data were warped with).
    order : int
        Interpolation order 0-5 of the data's warp.
    """

    def __init__(self, variance: np.ndarray, transform: Transform, order: int) -> None:
        var = np.asarray(variance, dtype=np.float64)
        self.bad = ~np.isfinite(var)
        self.any_bad = bool(self.bad.any())
        if self.any_bad:
            var = np.where(self.bad, 0.0, var)
        if np.any(var < 0):
            raise InputError("the variance map has negative values",
                             hint="give a variance (>= 0) or set weight_type")
        self.var = var
        self.transform = transform
        self.order = int(order)
        self.radius = WINDOW_RADIUS[self.order]

    def rows(self, y0: int, y1: int, nx: int) -> np.ndarray:
        """Output variance of rows ``y0:y1`` (all ``nx`` columns), float64."""
        var, bad = self.var, self.bad
        h, w = var.shape
        coords = self.transform.source_coords(np, 0, nx, y0, y1)
        sy, sx = coords[0], coords[1]
        if self.order == 0:
            iy = np.clip(np.floor(sy + 0.5), 0, h - 1).astype(np.intp)
            ix = np.clip(np.floor(sx + 0.5), 0, w - 1).astype(np.intp)
            acc = var[iy, ix]
            hit = bad[iy, ix] if self.any_bad else None
        else:
            wy = _axis_weights(self.order, sy, h, self.radius)
            wx = _axis_weights(self.order, sx, w, self.radius)
            wx2 = [(ix, c * c) for ix, c in wx]
            acc = np.zeros(sy.shape)
            hit = np.zeros(sy.shape, bool) if self.any_bad else None
            flat_var, flat_bad = var.ravel(), bad.ravel()
            for iy, cy in wy:
                cy2 = cy * cy
                row = iy * w
                for ix, cx2 in wx2:
                    w2 = cy2 * cx2
                    flat = row + ix
                    acc += w2 * flat_var.take(flat)
                    if hit is not None:
                        hit |= (w2 > 1e-12) & flat_bad.take(flat)
        if hit is not None:
            acc = np.where(hit, np.inf, acc)
        return acc


def resample_variance(
    variance: np.ndarray, transform: Transform, output_shape: tuple[int, int], order: int,
) -> np.ndarray:
    """Propagate a source variance map through the warp (see the module docstring).

    Parameters
    ----------
    variance : ndarray (H, W)
        Source variance (non-negative; inf where a pixel carries no information).
    transform : Transform
        Output pixel -> source pixel mapping (the one the data were warped with).
    output_shape : tuple of int
        ``(ny, nx)`` of the output.
    order : int
        Interpolation order 0-5 of the data's warp.

    Returns
    -------
    ndarray (ny, nx), float64
        Output variance (meaningful where the data's footprint is True).
    """
    resampler = VarianceResampler(variance, transform, order)
    ny, nx = int(output_shape[0]), int(output_shape[1])
    out = np.empty((ny, nx), dtype=np.float64)
    for y0 in range(0, ny, ROWS):
        y1 = min(y0 + ROWS, ny)
        out[y0:y1] = resampler.rows(y0, y1, nx)
    return out
