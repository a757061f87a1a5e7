"""The polynomial distortion model: clipped total-degree surfaces, and its fit.

``dx = sum c[0, i, j] u**i v**j`` (likewise ``dy`` with ``c[1]``) over
``2 <= i + j <= degree``, with ``u = clip((x - cx) / hx)`` and
``v = clip((y - cy) / hy)``. Clipping the normalised coordinates to the box of the
stars that constrained the fit keeps the polynomial from running away where there
are no stars; the linear part of the transform extrapolates on its own. The fused
CUDA kernel (``kernels/gpualign_warp.cuh``) evaluates exactly this model.

The fit is one weighted least-squares problem for the linear part and the surfaces
together, on normalised coordinates (well conditioned up to degree 7), with either
a full affine or a similarity (rotation, one scale, shift; with a parity) under the
surfaces.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

from gpualign.transform._model import Box, DistortionModel, register_model

__all__ = ["PolynomialDistortion", "fit_affine_parts", "fit_similarity_parts", "n_terms",
           "design_matrix", "weighted_lstsq", "exponents"]

NO_CLIP = (-np.inf, np.inf, -np.inf, np.inf)
#: Largest polynomial degree a transform file may hold (the fit goes to 7).
MAX_FILE_DEGREE = 9


def exponents(degree: int) -> list[tuple[int, int]]:
    """Monomial exponents (i, j) of u**i v**j with i + j <= degree, low order first."""
    return [(i, t - i) for t in range(degree + 1) for i in range(t, -1, -1)]


def n_terms(degree: int) -> int:
    """Number of coefficients per axis of a total-degree polynomial."""
    return (degree + 1) * (degree + 2) // 2


@register_model
class PolynomialDistortion(DistortionModel):
    """Clipped polynomial surfaces of total degree 2..7 in normalised coordinates.

    Parameters
    ----------
    coeffs : ndarray, shape (2, d+1, d+1)
        ``coeffs[k, i, j]`` multiplies ``u**i v**j`` on axis ``k`` (x, y); terms of
        degree < 2 are zero (the linear part holds them). Empty: no surface.
    norm : tuple of float
        ``(cx, cy, hx, hy)``.
    clip : tuple of float
        ``(umin, umax, vmin, vmax)``.
    """

    name = "poly"

    def __init__(self, coeffs: Any = None, norm: Box = (0.0, 0.0, 1.0, 1.0),
                 clip: Box = NO_CLIP) -> None:
        c = np.zeros((2, 0, 0)) if coeffs is None else np.asarray(coeffs, dtype=np.float64)
        if c.size == 0:
            c = np.zeros((2, 0, 0))
        self.coeffs = c
        self.norm = tuple(float(v) for v in norm)
        self.clip = tuple(float(v) for v in clip)
        # Column Vandermonde matrices of the last column arrays seen: every row tile of
        # a warp has the same columns, and u**i of negative u is the slow path of pow.
        self._columns_cache: dict[int, tuple[Any, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """The surfaces without the column cache (solutions travel between processes)."""
        return {k: v for k, v in self.__dict__.items() if k != "_columns_cache"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._columns_cache = {}

    @property
    def degree(self) -> int:
        """Total degree of the surfaces (1 = none)."""
        return max(int(self.coeffs.shape[1]) - 1, 1)

    @property
    def n_params(self) -> int:
        """Coefficients of degree >= 2 on both axes."""
        d = self.degree
        return 0 if d < 2 else 2 * (n_terms(d) - 3)

    @property
    def is_zero(self) -> bool:
        """No non-zero coefficient."""
        return not bool(self.coeffs.size and np.any(self.coeffs != 0))

    def _uv(self, xp: ModuleType, x: Any, y: Any) -> tuple[Any, Any]:
        cx, cy, hx, hy = self.norm
        umin, umax, vmin, vmax = self.clip
        return xp.clip((x - cx) / hx, umin, umax), xp.clip((y - cy) / hy, vmin, vmax)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets at template points (``polyval2d`` on the clipped coordinates)."""
        u, v = self._uv(np, x, y)
        return (np.polynomial.polynomial.polyval2d(u, v, self.coeffs[0]),
                np.polynomial.polynomial.polyval2d(u, v, self.coeffs[1]))

    def _columns(self, xp: ModuleType, xs: Any) -> tuple[Any, Any, Any]:
        """``(Vu, dVu/du, du_ok)`` of the columns ``xs``, reused while ``xs`` is the same array.

        ``Vu[:, i] = u**i`` with ``u`` clipped, ``dVu[:, i] = i u**(i-1)``, and ``du_ok``
        the derivative of the clipped ``u`` (``1/hx`` inside the clip box, 0 outside).
        Callers that pass the same column array for every tile (``Transform``'s
        cached ``arange``) compute these once per warp.
        """
        hit = self._columns_cache.get(id(xs))
        if hit is not None and hit[0] is xs:
            return hit[1], hit[2], hit[3]
        cx, _, hx, _ = self.norm
        umin, umax = self.clip[0], self.clip[1]
        ur = (xs - cx) / hx
        u = xp.clip(ur, umin, umax)
        du_ok = ((ur >= umin) & (ur <= umax)).astype(xp.float64) / hx
        p = xp.arange(self.coeffs.shape[1], dtype=xp.float64)
        vu = u[:, None] ** p[None, :]  # (nx, d)
        dvu = xp.zeros_like(vu)  # d/du u**i = i u**(i-1)
        if vu.shape[1] > 1:
            dvu[:, 1:] = vu[:, :-1] * p[None, 1:]
        if len(self._columns_cache) >= 64:
            self._columns_cache = {}
        self._columns_cache[id(xs)] = (xs, vu, dvu, du_ok)
        return vu, dvu, du_ok

    def grid_into(self, xp: ModuleType, out: Any, xs: Any, ys: Any) -> None:
        """Separable evaluation: ``Vv @ C.T @ Vu.T`` with 1-D Vandermonde matrices."""
        _, v = self._uv(xp, xs[:1], ys)
        powers = xp.arange(self.coeffs.shape[1], dtype=xp.float64)
        vu = self._columns(xp, xs)[0]  # (nx, d)
        vv = v[:, None] ** powers[None, :]  # (ny, d)
        for k, row in ((0, 1), (1, 0)):  # dx -> out[1], dy -> out[0]
            c = xp.asarray(self.coeffs[k])  # c[i, j] multiplies u**i v**j
            xp.matmul(vv, c.T @ vu.T, out=out[row])

    def jacobian_grid(self, xp: ModuleType, xs: Any, ys: Any) -> tuple[Any, Any, Any, Any]:
        """Analytic derivatives; zero along an axis where its coordinate is clipped."""
        _, cy, _, hy = self.norm
        vmin, vmax = self.clip[2], self.clip[3]
        vr = (ys - cy) / hy
        v = xp.clip(vr, vmin, vmax)
        dv_ok = ((vr >= vmin) & (vr <= vmax)).astype(xp.float64) / hy
        d = self.coeffs.shape[1]
        p = xp.arange(d, dtype=xp.float64)
        vu, dvu, du_ok = self._columns(xp, xs)
        vv = v[:, None] ** p[None, :]
        dvv = xp.zeros_like(vv)  # d/dv v**j = j v**(j-1)
        if d > 1:
            dvv[:, 1:] = vv[:, :-1] * p[None, 1:]
        out = []
        for k in (0, 1):
            c = xp.asarray(self.coeffs[k])
            ddx = vv @ c.T @ dvu.T
            ddx *= du_ok[None, :]
            ddy = dvv @ c.T @ vu.T
            ddy *= dv_ok[:, None]
            out += [ddx, ddy]
        return out[0], out[1], out[2], out[3]

    def shifted(self, ox: float, oy: float) -> PolynomialDistortion:
        """Same surfaces about a centre moved by ``(ox, oy)``."""
        cx, cy, hx, hy = self.norm
        return PolynomialDistortion(self.coeffs.copy(), (cx + ox, cy + oy, hx, hy), self.clip)

    def support_box(self) -> Box | None:
        """The clip box in template pixels (None without surfaces)."""
        if self.is_zero:
            return None
        cx, cy, hx, hy = self.norm
        umin, umax, vmin, vmax = self.clip
        return cx + umin * hx, cx + umax * hx, cy + vmin * hy, cy + vmax * hy

    def to_dict(self) -> dict[str, Any]:
        """``coeffs``, ``norm`` and ``clip`` (the transform file's historic keys)."""
        return {"model": self.name, "coeffs": self.coeffs.tolist(), "norm": list(self.norm),
                "clip": [float(c) for c in self.clip]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolynomialDistortion:
        """Inverse of :meth:`to_dict`; ValueError naming the field that is unusable."""
        coeffs = np.array(d.get("coeffs", []), dtype=np.float64)
        if coeffs.size:
            if coeffs.ndim != 3 or coeffs.shape[0] != 2 or coeffs.shape[1] != coeffs.shape[2]:
                raise ValueError(f"coeffs must have shape (2, d+1, d+1), got {coeffs.shape}")
            if coeffs.shape[1] - 1 > MAX_FILE_DEGREE:
                raise ValueError(f"coeffs of degree {coeffs.shape[1] - 1} exceed the "
                                 f"largest degree {MAX_FILE_DEGREE}")
            if not np.all(np.isfinite(coeffs)):
                raise ValueError("coeffs hold non-finite values")
        norm = np.array(d["norm"], dtype=np.float64).reshape(-1)
        if norm.shape != (4,) or not np.all(np.isfinite(norm)) or min(norm[2:]) <= 0:
            raise ValueError(f"norm must be 4 finite numbers (cx, cy, hx > 0, hy > 0), "
                             f"got {d['norm']!r}")
        clip = np.array(d.get("clip", NO_CLIP), dtype=np.float64).reshape(-1)
        if clip.shape != (4,) or np.isnan(clip).any() or clip[0] > clip[1] \
                or clip[2] > clip[3]:
            raise ValueError(f"clip must be (umin <= umax, vmin <= vmax), got {d.get('clip')!r}")
        return cls(coeffs, tuple(float(v) for v in norm), tuple(float(v) for v in clip))

    @classmethod
    def fit_transform(cls, tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, *,
                      complexity: Any, norm: Box, linear: str = "affine",
                      mirrored: bool = False) -> Any:
        """:func:`fit_affine_parts` or :func:`fit_similarity_parts` of degree ``complexity``."""
        if linear == "affine":
            return fit_affine_parts(tmpl_xy, src_xy, weights, int(complexity), norm)
        if linear == "similarity":
            return fit_similarity_parts(tmpl_xy, src_xy, weights, int(complexity), norm,
                                        mirrored=mirrored)
        raise ValueError(f"unknown linear model {linear!r}")


def design_matrix(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """Columns ``u**i v**j`` in :func:`exponents` order, one row per point."""
    pu = np.cumprod(np.column_stack([np.ones_like(u)] + [u] * degree), axis=1)
    pv = np.cumprod(np.column_stack([np.ones_like(v)] + [v] * degree), axis=1)
    exps = exponents(degree)
    return pu[:, [i for i, _ in exps]] * pv[:, [j for _, j in exps]]


def weighted_lstsq(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
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


def _clip_box(u: np.ndarray, v: np.ndarray, margin: float) -> Box:
    pad_u = margin * max(np.ptp(u), 1e-9)
    pad_v = margin * max(np.ptp(v), 1e-9)
    return tuple(float(c) for c in (u.min() - pad_u, u.max() + pad_u,
                                    v.min() - pad_v, v.max() + pad_v))


def fit_affine_parts(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    weights: np.ndarray,
    degree: int,
    norm: Box,
    clip_margin: float = 0.02,
) -> tuple[np.ndarray, PolynomialDistortion]:
    """Weighted least-squares fit of an affine map plus polynomial surfaces.

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
        The surfaces are clipped to the stars' box grown by this fraction of the
        normalised range.

    Returns
    -------
    matrix : ndarray (2, 3)
    distortion : PolynomialDistortion
    """
    cx, cy, hx, hy = norm
    u = (tmpl_xy[:, 0] - cx) / hx
    v = (tmpl_xy[:, 1] - cy) / hy
    sol = weighted_lstsq(design_matrix(u, v, degree), src_xy, weights)  # (n_terms, 2)
    exps = exponents(degree)
    c0 = sol[0]
    cu = sol[exps.index((1, 0))] if degree >= 1 else np.zeros(2)
    cv = sol[exps.index((0, 1))] if degree >= 1 else np.zeros(2)
    matrix = np.empty((2, 3))
    matrix[:, 0] = cu / hx
    matrix[:, 1] = cv / hy
    matrix[:, 2] = c0 - cu * cx / hx - cv * cy / hy
    if degree < 2:
        return matrix, PolynomialDistortion(None, norm)
    coeffs = np.zeros((2, degree + 1, degree + 1))
    for t, (i, j) in enumerate(exps):
        if i + j >= 2:
            coeffs[:, i, j] = sol[t]
    return matrix, PolynomialDistortion(coeffs, norm, _clip_box(u, v, clip_margin))


def _similarity_design(
    tmpl_xy: np.ndarray, degree: int, norm: Box, parity: float
) -> tuple[np.ndarray, list[tuple[int, int]], float]:
    """Design matrix (2N, 4 + 2 K) of a similarity (+ surfaces), rows x then y."""
    cx, cy, hx, hy = norm
    h = float(np.sqrt(hx * hy))
    dx = (tmpl_xy[:, 0] - cx) / h
    dy = (tmpl_xy[:, 1] - cy) / h
    n = len(tmpl_xy)
    high = [e for e in exponents(max(degree, 1)) if sum(e) >= 2]
    k = len(high)
    a = np.zeros((2 * n, 4 + 2 * k))
    # sx = c0x + a * (p dx) - b * dy ; sy = c0y + b * (p dx) + a * dy
    a[:n, 0] = 1.0
    a[n:, 1] = 1.0
    a[:n, 2] = parity * dx
    a[:n, 3] = -dy
    a[n:, 2] = dy
    a[n:, 3] = parity * dx
    if k:
        full = design_matrix((tmpl_xy[:, 0] - cx) / hx, (tmpl_xy[:, 1] - cy) / hy, degree)
        cols = [exponents(degree).index(e) for e in high]
        a[:n, 4:4 + k] = full[:, cols]
        a[n:, 4 + k:] = full[:, cols]
    return a, high, h


def fit_similarity_parts(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    weights: np.ndarray,
    degree: int,
    norm: Box,
    *,
    mirrored: bool = False,
    clip_margin: float = 0.02,
) -> tuple[np.ndarray, PolynomialDistortion]:
    """Weighted fit of a similarity (rotation, one scale, shift) plus polynomial surfaces.

    One least-squares problem over both axes: unknowns ``(c0x, c0y, a, b)`` and the
    surfaces' coefficients, in coordinates normalised by one common half-size (a
    similarity has a single scale). ``mirrored`` fixes the parity (a flipped source).
    Parameters and return as :func:`fit_affine_parts`.
    """
    parity = -1.0 if mirrored else 1.0
    a, high, h = _similarity_design(tmpl_xy, degree, norm, parity)
    target = np.concatenate([src_xy[:, 0], src_xy[:, 1]])[:, None]
    w = np.concatenate([weights, weights])
    sol = weighted_lstsq(a, target, w)[:, 0]
    c0x, c0y, sa, sb = sol[:4]
    cx, cy, hx, hy = norm
    lin = np.array([[parity * sa, -sb], [parity * sb, sa]]) / h
    matrix = np.empty((2, 3))
    matrix[:, :2] = lin
    matrix[:, 2] = np.array([c0x, c0y]) - lin @ np.array([cx, cy])
    k = len(high)
    if degree < 2 or k == 0:
        return matrix, PolynomialDistortion(None, norm)
    coeffs = np.zeros((2, degree + 1, degree + 1))
    for t, (i, j) in enumerate(high):
        coeffs[0, i, j] = sol[4 + t]
        coeffs[1, i, j] = sol[4 + k + t]
    u = (tmpl_xy[:, 0] - cx) / hx
    v = (tmpl_xy[:, 1] - cy) / hy
    return matrix, PolynomialDistortion(coeffs, norm, _clip_box(u, v, clip_margin))
