"""Jacobian of the full mapping on the output grid, for flux-conserving resampling.

Resampling keeps surface brightness: an output pixel holds the source's value at
the sampled position. When a template pixel covers ``|J|`` source pixels (``J`` the
Jacobian determinant of the template -> source mapping, affine *and* distortion),
multiplying by ``|J|`` turns that into the flux the template pixel collects, so a
star's total flux is the same in the aligned image as in the source.

The determinant is computed analytically: the affine part plus the derivatives of
the clipped polynomial surfaces (zero where a normalised coordinate is clipped).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from gpualign.transform._transform import Transform

__all__ = ["jacobian_grid", "jacobian_det_grid", "conserve_flux_inplace"]

ROWS = 256


def jacobian_grid(
    t: Transform, xp: ModuleType, x0: int, x1: int, y0: int, y1: int
) -> tuple[Any, Any, Any, Any]:
    """``d(sx, sy)/d(x, y)`` of the block ``[y0:y1, x0:x1]`` (four arrays, float64).

    Returns
    -------
    dxx, dxy, dyx, dyy : arrays of shape (y1 - y0, x1 - x0)
        ``dsx/dx, dsx/dy, dsy/dx, dsy/dy``.
    """
    m = t.matrix
    shape = (y1 - y0, x1 - x0)
    out = [xp.full(shape, float(m[k, j]), dtype=xp.float64) for k in (0, 1) for j in (0, 1)]
    if not t.has_distortion:
        return out[0], out[1], out[2], out[3]
    cx, cy, hx, hy = t.norm
    umin, umax, vmin, vmax = t.clip
    xs = xp.arange(x0, x1, dtype=xp.float64)
    ys = xp.arange(y0, y1, dtype=xp.float64)
    ur, vr = (xs - cx) / hx, (ys - cy) / hy
    u, v = xp.clip(ur, umin, umax), xp.clip(vr, vmin, vmax)
    du_ok = ((ur >= umin) & (ur <= umax)).astype(xp.float64) / hx
    dv_ok = ((vr >= vmin) & (vr <= vmax)).astype(xp.float64) / hy
    d = t.coeffs.shape[1]
    p = xp.arange(d, dtype=xp.float64)
    vu = u[:, None] ** p[None, :]
    vv = v[:, None] ** p[None, :]
    # derivative Vandermonde: d/du u**i = i u**(i-1)
    dvu = xp.zeros_like(vu)
    dvv = xp.zeros_like(vv)
    if d > 1:
        dvu[:, 1:] = vu[:, :-1] * p[None, 1:]
        dvv[:, 1:] = vv[:, :-1] * p[None, 1:]
    for k in (0, 1):
        c = xp.asarray(t.coeffs[k])  # c[i, j] u**i v**j
        out[2 * k] = out[2 * k] + (vv @ c.T @ dvu.T) * du_ok[None, :]
        out[2 * k + 1] = out[2 * k + 1] + (dvv @ c.T @ vu.T) * dv_ok[:, None]
    return out[0], out[1], out[2], out[3]


def jacobian_det_grid(t: Transform, xp: ModuleType, x0: int, x1: int, y0: int,
                      y1: int) -> Any:
    """Jacobian determinant of ``t`` on the block ``[y0:y1, x0:x1]`` (float64)."""
    a, b, c, d = jacobian_grid(t, xp, x0, x1, y0, y1)
    return a * d - b * c


def conserve_flux_inplace(
    data: np.ndarray, t: Transform, *, variance: np.ndarray | None = None,
    footprint: np.ndarray | None = None,
) -> None:
    """Multiply ``data`` by ``|det J|`` (and ``variance`` by ``det J**2``), in row blocks.

    Parameters
    ----------
    data : ndarray (ny, nx)
        Resampled image on the grid where ``t`` is evaluated (modified in place).
    t : Transform
        Output pixel -> source pixel mapping used for the resampling.
    variance : ndarray, optional
        Resampled variance on the same grid (modified in place).
    footprint : ndarray of bool, optional
        Only these pixels are scaled (the others hold ``cval``).
    """
    ny, nx = data.shape
    for y0 in range(0, ny, ROWS):
        y1 = min(y0 + ROWS, ny)
        j = np.abs(jacobian_det_grid(t, np, 0, nx, y0, y1))
        if footprint is not None:
            j[~footprint[y0:y1]] = 1.0
        data[y0:y1] *= j.astype(data.dtype, copy=False)
        if variance is not None:
            variance[y0:y1] *= (j * j).astype(variance.dtype, copy=False)
