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

from gpualign.transform import Transform

__all__ = ["jacobian_det_grid"]



def jacobian_det_grid(t: Transform, xp: ModuleType, x0: int, x1: int, y0: int,
                      y1: int) -> Any:
    """Jacobian determinant of ``t`` on the block ``[y0:y1, x0:x1]`` (float64)."""
    a, b, c, d = t.jacobian_grid(xp, x0, x1, y0, y1)
    a *= d  # a * d - b * c, in place (the arrays are the grid's own)
    b *= c
    a -= b
    return a
