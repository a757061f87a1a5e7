"""Jacobian of the full mapping on the output grid, for flux-conserving resampling.

Resampling keeps surface brightness: an output pixel holds the source's value at
the sampled position. When a template pixel covers ``|J|`` source pixels (``J`` the
Jacobian determinant of the template -> source mapping, affine *and* distortion),
multiplying by ``|J|`` turns that into the flux the template pixel collects, so a
star's total flux is the same in the aligned image as in the source.

The determinant is computed analytically: the linear part plus the derivatives of
the distortion model (``Transform.jacobian_grid``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from gpualign.transform import Transform

__all__ = ["jacobian_det_grid", "conserve_flux_inplace"]

ROWS = 256


def jacobian_det_grid(t: Transform, xp: ModuleType, x0: int, x1: int, y0: int,
                      y1: int) -> Any:
    """Jacobian determinant of ``t`` on the block ``[y0:y1, x0:x1]`` (float64)."""
    a, b, c, d = t.jacobian_grid(xp, x0, x1, y0, y1)
    a *= d  # a * d - b * c, in place (the arrays are the grid's own)
    b *= c
    a -= b
    return a


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
