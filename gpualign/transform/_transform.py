"""The mapping model: affine plus polynomial distortion surfaces, and its fitting.

A :class:`Transform` maps TEMPLATE pixel coordinates to SOURCE pixel coordinates,
the direction the warp needs: each output (template) pixel asks where to sample
the source. Fitting it in that direction, with the surfaces' inputs in the
template frame, is what makes the distortion correction right at any rotation
(spalipy fits its spline in one frame and applies it in another).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

__all__ = ["Transform", "fit_polynomial", "n_terms"]


def _exponents(degree: int) -> list[tuple[int, int]]:
    """Monomial exponents (i, j) of u**i v**j with i + j <= degree, low order first."""
    return [(i, t - i) for t in range(degree + 1) for i in range(t, -1, -1)]


def n_terms(degree: int) -> int:
    """Number of coefficients per axis of a total-degree polynomial."""
    return (degree + 1) * (degree + 2) // 2


@dataclass(frozen=True)
class Transform:
    """Template pixel -> source pixel mapping: affine + clipped polynomial surfaces.

    ``sx = m[0,0] x + m[0,1] y + m[0,2] + Dx(u, v)`` and likewise for ``sy``, with
    ``u = clip((x - cx) / hx)``, ``v = clip((y - cy) / hy)`` and
    ``Dk = sum coeffs[k, i, j] u**i v**j`` over ``2 <= i + j <= degree``. Clipping
    the surfaces' inputs to the box of the stars that constrained them keeps the
    polynomial from running away where there are no stars; the affine part
    extrapolates linearly.

    Attributes
    ----------
    matrix : ndarray (2, 3)
        Affine part in pixels.
    coeffs : ndarray (2, d+1, d+1)
        Distortion coefficients in normalised coordinates (empty when affine only).
    norm : tuple of float
        ``(cx, cy, hx, hy)``.
    clip : tuple of float
        ``(umin, umax, vmin, vmax)``.
    """

    matrix: np.ndarray
    coeffs: np.ndarray = field(default_factory=lambda: np.zeros((2, 0, 0)))
    norm: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    clip: tuple[float, float, float, float] = (-np.inf, np.inf, -np.inf, np.inf)

    @property
    def degree(self) -> int:
        """Degree of the distortion surfaces (1 = affine only)."""
        return max(int(self.coeffs.shape[1]) - 1, 1)

    @property
    def has_distortion(self) -> bool:
        """Whether any distortion coefficient is non-zero."""
        return bool(self.coeffs.size and np.any(self.coeffs != 0))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Transform:
        """An affine-only transform from a 2x3 (or 3x3) matrix."""
        return cls(np.array(matrix, dtype=np.float64)[:2, :3].copy())

    def _uv(self, xp: ModuleType, x: Any, y: Any) -> tuple[Any, Any]:
        cx, cy, hx, hy = self.norm
        umin, umax, vmin, vmax = self.clip
        u = xp.clip((x - cx) / hx, umin, umax)
        v = xp.clip((y - cy) / hy, vmin, vmax)
        return u, v

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map template (x, y) to source (sx, sy) on the host, in float64."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = self.matrix
        sx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
        sy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
        if self.has_distortion:
            u, v = self._uv(np, x, y)
            sx = sx + np.polynomial.polynomial.polyval2d(u, v, self.coeffs[0])
            sy = sy + np.polynomial.polynomial.polyval2d(u, v, self.coeffs[1])
        return sx, sy

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` template points to ``(N, 2)`` source points."""
        sx, sy = self(xy[:, 0], xy[:, 1])
        return np.column_stack([sx, sy])

    def evaluate_grid(
        self, xp: ModuleType, x0: int, x1: int, y0: int, y1: int
    ) -> tuple[Any, Any]:
        """Source coordinates of the output pixel block ``[y0:y1, x0:x1]``.

        The surfaces are evaluated as separable products of 1-D Vandermonde
        matrices, ``Vv @ C.T @ Vu.T``: no per-pixel polynomial calls and no
        full-frame arrays.

        Parameters
        ----------
        xp : module
            Array module (NumPy or CuPy); the result lives there.
        x0, x1, y0, y1 : int
            Block bounds (half-open).

        Returns
        -------
        sx, sy : arrays of shape (y1 - y0, x1 - x0), float64
        """
        coords = self.source_coords(xp, x0, x1, y0, y1)
        return coords[1], coords[0]

    def source_coords(self, xp: ModuleType, x0: int, x1: int, y0: int, y1: int) -> Any:
        """``[sy, sx]`` of the block ``[y0:y1, x0:x1]`` as one (2, ny, nx) float64 array.

        The layout ``map_coordinates`` takes, built in place (no stacking copy);
        the values equal :meth:`evaluate_grid`'s.
        """
        xs = xp.arange(x0, x1, dtype=xp.float64)
        ys = xp.arange(y0, y1, dtype=xp.float64)
        out = xp.empty((2, y1 - y0, x1 - x0), dtype=xp.float64)
        m = self.matrix
        if self.has_distortion:
            u, v = self._uv(xp, xs, ys)
            powers = xp.arange(self.coeffs.shape[1], dtype=xp.float64)
            vu = u[:, None] ** powers[None, :]  # (nx, d)
            vv = v[:, None] ** powers[None, :]  # (ny, d)
        for k, row in ((0, 1), (1, 0)):  # sx -> out[1], sy -> out[0]
            target = out[row]
            if self.has_distortion:
                c = xp.asarray(self.coeffs[k])  # c[i, j] multiplies u**i v**j
                xp.matmul(vv, c.T @ vu.T, out=target)
                target += (m[k, 0] * xs)[None, :]
            else:
                target[...] = (m[k, 0] * xs)[None, :]
            target += (m[k, 1] * ys + m[k, 2])[:, None]
        return out

    def jacobian_det(self, x: Any, y: Any, eps: float = 0.25) -> np.ndarray:
        """Determinant of d(source)/d(template) at template points (host, float64)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        sxp, syp = self(x + eps, y)
        sxm, sym = self(x - eps, y)
        sxq, syq = self(x, y + eps)
        sxn, syn = self(x, y - eps)
        dxx, dyx = (sxp - sxm) / (2 * eps), (syp - sym) / (2 * eps)
        dxy, dyy = (sxq - sxn) / (2 * eps), (syq - syn) / (2 * eps)
        return dxx * dyy - dxy * dyx

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (exact float64 round trip)."""
        return {
            "matrix": self.matrix.tolist(),
            "coeffs": self.coeffs.tolist(),
            "norm": list(self.norm),
            "clip": [float(c) for c in self.clip],
        }

    def save(self, path: Any) -> None:
        """Write this transform to a JSON file (exact round trip, see :meth:`load`)."""
        from gpualign.products._solution_io import save_transform

        save_transform(self, path)

    @classmethod
    def load(cls, path: Any) -> Transform:
        """Read the transform of a file written by :meth:`save` or ``Solution.save``."""
        from gpualign.products._solution_io import load_transform

        return load_transform(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """Inverse of :meth:`to_dict`."""
        coeffs = np.array(d.get("coeffs", []), dtype=np.float64)
        if coeffs.size == 0:
            coeffs = np.zeros((2, 0, 0))
        return cls(
            np.array(d["matrix"], dtype=np.float64),
            coeffs,
            tuple(float(v) for v in d["norm"]),
            tuple(float(v) for v in d["clip"]),
        )


def _design(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    pu = np.cumprod(np.column_stack([np.ones_like(u)] + [u] * degree), axis=1)
    pv = np.cumprod(np.column_stack([np.ones_like(v)] + [v] * degree), axis=1)
    exps = _exponents(degree)
    return pu[:, [i for i, _ in exps]] * pv[:, [j for _, j in exps]]


def _weighted_lstsq(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares by normal equations on unit-norm columns.

    On normalised coordinates in [-1, 1] the scaled design is well conditioned (about
    200 at degree 7), so Cholesky on the small normal matrix is exact to ~1e-11 and
    several times faster than an SVD; a rank-deficient system falls back to lstsq.
    """
    a = design * np.sqrt(weights)[:, None]
    b = target * np.sqrt(weights)[:, None]
    scale = np.sqrt((a**2).sum(axis=0))
    scale[scale == 0] = 1.0
    a = a / scale
    try:
        sol = scipy.linalg.solve(a.T @ a, a.T @ b, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol / scale[:, None]


def fit_polynomial(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    weights: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    clip_margin: float = 0.02,
) -> Transform:
    """Weighted least-squares fit of a total-degree polynomial mapping.

    Parameters
    ----------
    tmpl_xy, src_xy : ndarray, shape (N, 2)
        Matched positions (template -> source).
    weights : ndarray, shape (N,)
        Inverse variances.
    degree : int
        Total degree (1 = affine).
    norm : tuple
        ``(cx, cy, hx, hy)`` normalisation of the template coordinates.
    clip_margin : float
        The distortion surfaces are clipped to the stars' box grown by this
        fraction of the normalised range.

    Returns
    -------
    Transform
    """
    cx, cy, hx, hy = norm
    u = (tmpl_xy[:, 0] - cx) / hx
    v = (tmpl_xy[:, 1] - cy) / hy
    sol = _weighted_lstsq(_design(u, v, degree), src_xy, weights)  # (n_terms, 2)
    exps = _exponents(degree)
    c0 = sol[0]
    cu = sol[exps.index((1, 0))] if degree >= 1 else np.zeros(2)
    cv = sol[exps.index((0, 1))] if degree >= 1 else np.zeros(2)
    matrix = np.empty((2, 3))
    matrix[:, 0] = cu / hx
    matrix[:, 1] = cv / hy
    matrix[:, 2] = c0 - cu * cx / hx - cv * cy / hy
    if degree < 2:
        return Transform(matrix, np.zeros((2, 0, 0)), norm)
    coeffs = np.zeros((2, degree + 1, degree + 1))
    for t, (i, j) in enumerate(exps):
        if i + j >= 2:
            coeffs[:, i, j] = sol[t]
    pad_u = clip_margin * max(np.ptp(u), 1e-9)
    pad_v = clip_margin * max(np.ptp(v), 1e-9)
    clip = (u.min() - pad_u, u.max() + pad_u, v.min() - pad_v, v.max() + pad_v)
    return Transform(matrix, coeffs, norm, tuple(float(c) for c in clip))
