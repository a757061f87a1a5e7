"""The thin-plate-spline distortion model: a smoothing spline surface, bounded by the stars' hull.

The surfaces are a weighted smoothing thin-plate spline of the residuals that the
linear part leaves, fitted with SciPy's ``RBFInterpolator(kernel="thin_plate_spline",
degree=1)`` in coordinates normalised by the template half-size ``L``
(``u = (x - cx) / L``, ``v = (y - cy) / L``):

``D(u, v) = sum_j w_j phi(|(u, v) - c_j|) + a0 + a1 u' + a2 v'``, ``phi(r) = r**2 log r``,

with ``(u', v')`` the spline's own shifted and scaled copy of ``(u, v)`` (SciPy's
convention, kept so that the coefficients are used as fitted).

**Smoothing** (the model's ``complexity``, a float ``s``): the per-pair smoothing
passed to SciPy is ``s * sigma_i**2`` (``sigma_i = 1 / sqrt(weight_i)`` in source
px), i.e. the fit minimises ``chi2 + s * w^T K w`` with ``chi2 = sum r_i**2 /
sigma_i**2``: ``s`` is the weight of the spline's bending energy (kernel in the
normalised coordinates, values in source px) against chi-square. ``s -> 0``
interpolates the pairs; large ``s`` tends to the spline's affine term alone.

**Centres**: at most :data:`MAX_CENTRES` pairs carry the spline (the solve is
``O(M**3)``): beyond that, a spatially even subsample of the best-measured pairs
(one per cell of a ``g x g`` grid over the pairs' box, best first, then second best
per cell, ...). The linear part is fitted on all pairs.

**Bounded outside the hull**: the convex hull of the matched template positions (all
pairs; at most :data:`HULL_MAX` vertices, simplified from the inside) is grown by
:data:`HULL_MARGIN` of its extent; outside it the surface takes its value at the
nearest point of the hull (exact projection per pixel, one pass per edge, only for
pixels outside it): no extrapolation, at any distance. The linear part of the
transform extrapolates on its own (as with the polynomial's clip box).

**Evaluation on grids**: the spline is computed once, on the host, at the nodes of a
lattice ``x = cx + i h``, ``y = cy + j h`` covering the hull's box (+2 nodes), with
``h`` = 1/:data:`SPACING_DIVISOR` of the centres' mean spacing (a power of two,
2-64 px, at most :data:`MAX_NODES_SIDE` nodes a side); the lattice is cached (and
its device copy per array module) and shared by :meth:`shifted` copies. Pixels are
interpolated with Keys' cubic convolution (``a = -0.5``: C1, exact on quadratics,
4 x 4 stencil), separably, with ``xp`` operations only. :meth:`evaluate` uses the
same nodes and the same arithmetic (equal to ``grid_into`` at integer pixels),
:meth:`jacobian_grid` is the interpolant's exact derivative (chain rule through the
projection outside), :meth:`direct` the exact spline (for held-out scoring).
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg
import scipy.spatial

from gpualign.transform._model import Box, DistortionModel, register_model
from gpualign.transform._polynomial import fit_affine_parts, fit_similarity_parts

__all__ = ["ThinPlateSplineDistortion", "MAX_CENTRES", "node_spacing", "even_subsample"]

#: Most pairs that carry the spline (its solve is cubic in their number).
MAX_CENTRES = 1000
#: Most vertices of the hull (a larger hull is simplified from the inside).
HULL_MAX = 32
#: The hull is grown by this fraction of its extent on each side.
HULL_MARGIN = 0.02
#: Node spacing = mean centre spacing / this (rounded down to a power of two).
SPACING_DIVISOR = 8.0
#: Most nodes along a side of the lattice.
MAX_NODES_SIDE = 192


def node_spacing(hull_px: np.ndarray, n_centres: int) -> float:
    """Lattice spacing (template px): 1/SPACING_DIVISOR of the centres' mean spacing.

    A power of two between 2 and 64 px, and at least 1/MAX_NODES_SIDE of the hull's box.
    """
    x, y = hull_px[:, 0], hull_px[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    mean = np.sqrt(max(area, 1.0) / max(n_centres, 1))
    side = float(np.max(np.ptp(hull_px, axis=0))) / MAX_NODES_SIDE
    h = max(2.0 ** np.floor(np.log2(max(mean / SPACING_DIVISOR, 1e-9))),
            2.0 ** np.ceil(np.log2(max(side, 1e-9))))
    return float(min(64.0, max(2.0, h)))


def even_subsample(xy: np.ndarray, weights: np.ndarray, cap: int) -> np.ndarray:
    """Indices of at most ``cap`` points, spread evenly, best (highest weight) first per cell."""
    n = len(xy)
    if n <= cap:
        return np.arange(n)
    g = max(int(np.ceil(np.sqrt(cap))), 1)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    cell = np.minimum((g * (xy - lo) / span).astype(np.int64), g - 1)
    key = cell[:, 1] * g + cell[:, 0]
    order = np.lexsort((-weights, key))  # by cell, best first within a cell
    ks = key[order]
    start = np.r_[0, np.flatnonzero(np.diff(ks)) + 1]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(start, np.diff(np.r_[start, n]))
    pick = np.lexsort((-weights, rank))[:cap]
    return np.sort(pick)


def _hull(uv: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull vertices of points (a thin box when degenerate)."""
    try:
        v = uv[scipy.spatial.ConvexHull(uv).vertices]
    except (scipy.spatial.QhullError, ValueError):
        lo, hi = uv.min(axis=0) - 1e-6, uv.max(axis=0) + 1e-6
        return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    # At most HULL_MAX vertices (the per-pixel cost outside is one pass per edge): drop
    # the vertex whose triangle with its neighbours is smallest (stays convex, inside).
    while len(v) > HULL_MAX:
        p, n = np.roll(v, 1, axis=0), np.roll(v, -1, axis=0)
        area = np.abs((v[:, 0] - p[:, 0]) * (n[:, 1] - p[:, 1])
                      - (n[:, 0] - p[:, 0]) * (v[:, 1] - p[:, 1]))
        v = np.delete(v, int(np.argmin(area)), axis=0)
    return np.ascontiguousarray(v)


def _keys(t: Any) -> tuple[Any, Any, Any, Any]:
    """Keys' cubic-convolution weights (a = -0.5) of taps -1, 0, 1, 2 at fraction ``t``."""
    t2 = t * t
    t3 = t2 * t
    return ((-t3 + 2.0 * t2 - t) * 0.5, (3.0 * t3 - 5.0 * t2 + 2.0) * 0.5,
            (-3.0 * t3 + 4.0 * t2 + t) * 0.5, (t3 - t2) * 0.5)


def _keys_d(t: Any) -> tuple[Any, Any, Any, Any]:
    """Derivatives of :func:`_keys` with respect to ``t``."""
    t2 = t * t
    return ((-3.0 * t2 + 4.0 * t - 1.0) * 0.5, (9.0 * t2 - 10.0 * t) * 0.5,
            (-9.0 * t2 + 8.0 * t + 1.0) * 0.5, (3.0 * t2 - 2.0 * t) * 0.5)


@register_model
class ThinPlateSplineDistortion(DistortionModel):
    """Smoothing thin-plate-spline surfaces, constant beyond the matched stars' hull.

    Parameters
    ----------
    centres : ndarray (M, 2)
        Spline centres, normalised coordinates.
    coeffs : ndarray (M + 3, 2)
        Kernel weights, then the affine term's coefficients (of ``1, u', v'``), per axis.
    poly_shift, poly_scale : ndarray (2,)
        ``(u', v') = ((u, v) - poly_shift) / poly_scale``.
    norm : tuple
        ``(cx, cy, L)``: normalisation of template px.
    hull : ndarray (H, 2)
        Counter-clockwise hull vertices, normalised coordinates.
    spacing : float
        Node lattice spacing, template px.
    smoothing : ndarray (M,)
        The per-centre smoothing of the fit (for :attr:`n_params`).
    """

    name = "tps"

    def __init__(self, centres: Any, coeffs: Any, poly_shift: Any, poly_scale: Any,
                 norm: tuple[float, float, float], hull: Any, spacing: float,
                 smoothing: Any) -> None:
        self.centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
        self.coeffs = np.asarray(coeffs, dtype=np.float64).reshape(-1, 2)
        self.poly_shift = np.asarray(poly_shift, dtype=np.float64).reshape(2)
        self.poly_scale = np.asarray(poly_scale, dtype=np.float64).reshape(2)
        self.norm = tuple(float(v) for v in norm)
        self.hull = np.asarray(hull, dtype=np.float64).reshape(-1, 2)
        self.spacing = float(spacing)
        self.smoothing = np.asarray(smoothing, dtype=np.float64).reshape(-1)
        if len(self.coeffs) != len(self.centres) + 3:
            raise ValueError("coeffs must have one row per centre plus 3")
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._lock = threading.Lock()
        self._nodes_cache: tuple[int, int, np.ndarray] | None = None
        self._device: dict[str, Any] = {}
        self._dof: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        """The surface without its caches and lock (a batch sends solutions between processes)."""
        skip = {"_lock", "_nodes_cache", "_device", "_dof"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    # -- exact surface (host) ---------------------------------------------------------
    def _spline(self, uv: np.ndarray) -> np.ndarray:
        """The spline at normalised points ``uv`` (n, 2) -> (n, 2), no hull rule."""
        out = np.empty((len(uv), 2))
        m = len(self.centres)
        pu = (uv - self.poly_shift) / self.poly_scale
        poly = (self.coeffs[m] + pu[:, :1] * self.coeffs[m + 1][None, :]
                + pu[:, 1:] * self.coeffs[m + 2][None, :])
        step = max(1, 1_000_000 // max(m, 1))
        cu, cv = self.centres[:, 0], self.centres[:, 1]
        for i in range(0, len(uv), step):
            r2 = (uv[i:i + step, 0:1] - cu[None, :]) ** 2
            r2 += (uv[i:i + step, 1:2] - cv[None, :]) ** 2
            np.maximum(r2, 1e-300, out=r2)  # phi(0) = 0 (to 1e-297)
            k = np.log(r2)
            k *= r2
            k *= 0.5
            out[i:i + step] = k @ self.coeffs[:m] + poly[i:i + step]
        return out

    def _hull_px(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hull vertices in template px, edge vectors and their squared lengths."""
        cx, cy, length = self.norm
        a = self.hull * length + np.array([cx, cy])
        d = np.roll(a, -1, axis=0) - a
        return a, d, np.maximum(d[:, 0] ** 2 + d[:, 1] ** 2, 1e-300)

    def _row_spans(self, xp: ModuleType, y: Any) -> tuple[Any, Any]:
        """``[xl, xr]``: the hull's extent along the rows ``y`` (empty: xl > xr)."""
        a, d, _ = self._hull_px()
        xl = xp.full(y.shape, np.inf)
        xr = xp.full(y.shape, -np.inf)
        for k in range(len(a)):
            ay, by = a[k, 1], a[k, 1] + d[k, 1]
            if d[k, 1] == 0.0:
                continue
            on = (y >= min(ay, by)) & (y <= max(ay, by))
            xi = a[k, 0] + (y - ay) * (d[k, 0] / d[k, 1])
            xl = xp.where(on, xp.minimum(xl, xi), xl)
            xr = xp.where(on, xp.maximum(xr, xi), xr)
        return xl, xr

    def _project(self, xp: ModuleType, x: Any, y: Any) -> tuple[Any, Any, Any, Any, Any]:
        """Nearest hull points ``(qx, qy)`` of points outside it, and ``dq/dp`` (2x2 entries).

        ``dq/dp`` is ``t t^T`` (``t`` the edge's unit direction) on an edge's strip and
        zero where the nearest point is a vertex.
        """
        a, d, l2 = self._hull_px()
        best = qx = qy = kbest = None
        for k in range(len(a)):
            t = ((x - a[k, 0]) * d[k, 0] + (y - a[k, 1]) * d[k, 1]) / l2[k]
            t = xp.clip(t, 0.0, 1.0)
            px = a[k, 0] + t * d[k, 0]
            py = a[k, 1] + t * d[k, 1]
            dist = (px - x) ** 2 + (py - y) ** 2
            strip = ((t > 0.0) & (t < 1.0)).astype(xp.float64)
            if best is None:
                best, qx, qy, kbest = dist, px, py, strip * 0.0 + k
                on_strip = strip
            else:
                closer = dist < best
                best = xp.where(closer, dist, best)
                qx = xp.where(closer, px, qx)
                qy = xp.where(closer, py, qy)
                kbest = xp.where(closer, k, kbest)
                on_strip = xp.where(closer, strip, on_strip)
        kb = kbest.astype(xp.int64)
        ux = xp.asarray(d[:, 0] / np.sqrt(l2))[kb] * on_strip
        uy = xp.asarray(d[:, 1] / np.sqrt(l2))[kb] * on_strip
        return qx, qy, ux * ux, ux * uy, uy * uy

    # -- node lattice ---------------------------------------------------------------------
    def _lattice(self) -> tuple[int, int, np.ndarray]:
        """``(i0, j0, values)``: spline values (2, nj, ni) at nodes ``i0.., j0..`` (cached).

        The lattice covers the hull's box and two nodes more on every side (the cubic
        stencil of any point of the hull).
        """
        if self._nodes_cache is None:
            with self._lock:
                if self._nodes_cache is None:
                    r = self.spacing / self.norm[2]
                    lo = np.floor(self.hull.min(axis=0) / r).astype(np.int64) - 2
                    hi = np.ceil(self.hull.max(axis=0) / r).astype(np.int64) + 3
                    gu, gv = np.meshgrid(np.arange(lo[0], hi[0] + 1) * r,
                                         np.arange(lo[1], hi[1] + 1) * r)
                    vals = self._spline(np.column_stack([gu.ravel(), gv.ravel()]))
                    self._nodes_cache = (int(lo[0]), int(lo[1]),
                                         np.ascontiguousarray(vals.T.reshape((2,) + gu.shape)))
        return self._nodes_cache

    def _device_nodes(self, xp: ModuleType) -> tuple[int, int, Any]:
        i0, j0, vals = self._lattice()
        key = xp.__name__
        dev = self._device.get(key)
        if dev is None:
            dev = vals if xp is np else xp.asarray(vals)
            self._device[key] = dev
        return i0, j0, dev

    def _cells(self, xp: ModuleType, x: Any, c: float, first: int, n: int) -> tuple[Any, Any]:
        """Stencil start (index into the lattice) and fraction of coordinates ``x``.

        Cells are clamped into the lattice (points outside it are projected first, so
        only the unused fast-path values of outside pixels see the clamp).
        """
        t = (x - c) / self.spacing
        i = xp.floor(t)
        f = t - i
        idx = xp.clip(i.astype(xp.int64) - first - 1, 0, n - 4)
        return idx, f

    def _point_interp(self, xp: ModuleType, plane: Any, x: Any, y: Any, i0: int, j0: int,
                      wxf: Any = _keys, wyf: Any = _keys) -> Any:
        """Cubic convolution of a node plane at scattered points (same arithmetic as the grid)."""
        cx, cy, _ = self.norm
        cols, fx = self._cells(xp, x, cx, i0, plane.shape[1])
        rows, fy = self._cells(xp, y, cy, j0, plane.shape[0])
        wx, wy = wxf(fx), wyf(fy)
        acc = None
        for r in range(4):
            t = None
            for k in range(4):
                term = wx[k] * plane[rows + r, cols + k]
                t = term if t is None else t + term
            term = wy[r] * t
            acc = term if acc is None else acc + term
        return acc

    # -- the interface -----------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Effective parameters: 2 x the trace of the smoother's hat matrix (on the centres).

        ``trace(H) = M - sum_i lambda_i (S^-1)_ii`` with ``S`` the spline's system
        matrix; computed once on demand (an ``O(M**3)`` inverse).
        """
        if self._dof is None:
            m = len(self.centres)
            if m == 0:
                self._dof = 0.0
            else:
                d = self.centres[:, None, :] - self.centres[None, :, :]
                r2 = d[..., 0] ** 2 + d[..., 1] ** 2
                s = np.zeros((m + 3, m + 3))
                s[:m, :m] = 0.5 * r2 * np.log(np.maximum(r2, 1e-300)) + np.diag(self.smoothing)
                pu = (self.centres - self.poly_shift) / self.poly_scale
                p = np.column_stack([np.ones(m), pu])
                s[:m, m:] = p
                s[m:, :m] = p.T
                try:
                    inv_diag = np.diag(scipy.linalg.inv(s))[:m]
                    self._dof = float(m - np.sum(self.smoothing * inv_diag))
                except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
                    self._dof = float(m)
        return int(round(2 * self._dof))

    @property
    def is_zero(self) -> bool:
        """No non-zero coefficient."""
        return not bool(np.any(self.coeffs != 0))

    def _outside(self, xp: ModuleType, x: Any, y: Any) -> Any:
        xl, xr = self._row_spans(xp, y)
        return ~((x >= xl) & (x <= xr))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets at template points: the node interpolation of :meth:`grid_into`."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = np.broadcast(x, y).shape
        x = np.array(np.broadcast_to(x, shape), dtype=np.float64).ravel()
        y = np.array(np.broadcast_to(y, shape), dtype=np.float64).ravel()
        out = self._rule(np, x, y)
        return out[0].reshape(shape), out[1].reshape(shape)

    def _rule(self, xp: ModuleType, x: Any, y: Any) -> tuple[Any, Any]:
        """``(dx, dy)`` at scattered points: projected onto the hull when outside it."""
        i0, j0, nodes = self._device_nodes(xp)
        if x.size == 0:
            return xp.zeros(0), xp.zeros(0)
        outside = self._outside(xp, x, y)
        if bool(outside.any()):
            qx, qy = x.copy(), y.copy()
            qx[outside], qy[outside] = self._project(xp, x[outside], y[outside])[:2]
            x, y = qx, qy
        return (self._point_interp(xp, nodes[0], x, y, i0, j0),
                self._point_interp(xp, nodes[1], x, y, i0, j0))

    def direct(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact spline (hull rule included) at template points, without the nodes.

        What the nodes sample; :meth:`evaluate` differs from it by the interpolation
        error. Used to score held-out pairs (no lattice to build).
        """
        x = np.asarray(x, dtype=np.float64).ravel().copy()
        y = np.asarray(y, dtype=np.float64).ravel().copy()
        outside = self._outside(np, x, y)
        if outside.any():
            x[outside], y[outside] = self._project(np, x[outside], y[outside])[:2]
        cx, cy, length = self.norm
        v = self._spline(np.column_stack([(x - cx) / length, (y - cy) / length]))
        return v[:, 0], v[:, 1]

    def _block(self, xp: ModuleType, xs: Any, ys: Any, dx: bool, dy: bool,
               planes: tuple[int, ...]) -> list[Any]:
        """Separable cubic convolution of node planes on the block ``ys x xs``."""
        i0, j0, nodes = self._device_nodes(xp)
        cx, cy, _ = self.norm
        cols, fx = self._cells(xp, xs, cx, i0, nodes.shape[2])
        rows, fy = self._cells(xp, ys, cy, j0, nodes.shape[1])
        wx = _keys_d(fx) if dx else _keys(fx)
        wy = _keys_d(fy) if dy else _keys(fy)
        res = []
        for c in planes:
            plane = nodes[c]
            t = None
            for k in range(4):
                term = wx[k][None, :] * plane[:, cols + k]  # (ny_nodes, nx)
                t = term if t is None else t + term
            acc = None
            for r in range(4):
                term = wy[r][:, None] * t[rows + r]  # (ny, nx)
                acc = term if acc is None else acc + term
            res.append(acc)
        return res

    def _outside_block(self, xp: ModuleType, xs: Any, ys: Any) -> Any:
        xl, xr = self._row_spans(xp, ys)
        return ~((xs[None, :] >= xl[:, None]) & (xs[None, :] <= xr[:, None]))

    def grid_into(self, xp: ModuleType, out: Any, xs: Any, ys: Any) -> None:
        """Cubic convolution of the node lattice on the block; hull rule outside (``xp`` only)."""
        if len(xs) == 0 or len(ys) == 0:
            return
        out[1][...], out[0][...] = self._block(xp, xs, ys, False, False, (0, 1))
        outside = self._outside_block(xp, xs, ys)
        if bool(outside.any()):
            rr, cc = xp.nonzero(outside)
            vx, vy = self._rule(xp, xs[cc], ys[rr])
            out[1][rr, cc] = vx
            out[0][rr, cc] = vy

    def jacobian_grid(self, xp: ModuleType, xs: Any, ys: Any) -> tuple[Any, Any, Any, Any]:
        """Exact derivatives of the interpolant of :meth:`grid_into` (chain rule outside)."""
        h = self.spacing
        gx = self._block(xp, xs, ys, True, False, (0, 1))
        gy = self._block(xp, xs, ys, False, True, (0, 1))
        jac = [gx[0] / h, gy[0] / h, gx[1] / h, gy[1] / h]
        outside = self._outside_block(xp, xs, ys)
        if bool(outside.any()):
            rr, cc = xp.nonzero(outside)
            qx, qy, pxx, pxy, pyy = self._project(xp, xs[cc], ys[rr])
            i0, j0, nodes = self._device_nodes(xp)
            for c in (0, 1):
                ddx = self._point_interp(xp, nodes[c], qx, qy, i0, j0, _keys_d, _keys) / h
                ddy = self._point_interp(xp, nodes[c], qx, qy, i0, j0, _keys, _keys_d) / h
                jac[2 * c][rr, cc] = ddx * pxx + ddy * pxy
                jac[2 * c + 1][rr, cc] = ddx * pxy + ddy * pyy
        return jac[0], jac[1], jac[2], jac[3]

    def shifted(self, ox: float, oy: float) -> ThinPlateSplineDistortion:
        """Same surface about a centre moved by ``(ox, oy)`` (same nodes, same values)."""
        cx, cy, length = self.norm
        new = ThinPlateSplineDistortion(self.centres, self.coeffs, self.poly_shift,
                                        self.poly_scale, (cx + ox, cy + oy, length), self.hull,
                                        self.spacing, self.smoothing)
        # The nodes depend on normalised coordinates only: share them.
        new._nodes_cache = self._lattice()
        new._device = self._device
        new._dof = self._dof
        return new

    def support_box(self) -> Box | None:
        """The hull's bounding box in template pixels."""
        if self.is_zero:
            return None
        cx, cy, length = self.norm
        lo, hi = self.hull.min(axis=0), self.hull.max(axis=0)
        return (cx + lo[0] * length, cx + hi[0] * length, cy + lo[1] * length,
                cy + hi[1] * length)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the surface exactly (lists of float64)."""
        return {"model": self.name, "centres": self.centres.tolist(),
                "coeffs": self.coeffs.tolist(), "poly_shift": self.poly_shift.tolist(),
                "poly_scale": self.poly_scale.tolist(), "norm": list(self.norm),
                "hull": self.hull.tolist(), "spacing": self.spacing,
                "smoothing": self.smoothing.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThinPlateSplineDistortion:
        """Inverse of :meth:`to_dict`; ValueError naming the first unusable field."""
        def field(name: str, shape: tuple[int | None, ...]) -> np.ndarray:
            try:
                a = np.array(d[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"distortion {name} must be numbers") from None
            if a.ndim != len(shape) or any(n is not None and n != m
                                           for n, m in zip(shape, a.shape, strict=True)):
                want = "x".join("N" if n is None else str(n) for n in shape)
                raise ValueError(f"distortion {name} must be {want}, got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"distortion {name} must be finite")
            return a

        centres = field("centres", (None, 2))
        if len(centres) < 1:
            raise ValueError("distortion centres must hold at least one point")
        coeffs = field("coeffs", (len(centres) + 3, 2))
        norm = field("norm", (3,))
        if norm[2] <= 0:
            raise ValueError("distortion norm's length must be positive")
        spacing = field("spacing", ())
        if spacing <= 0:
            raise ValueError("distortion spacing must be positive")
        return cls(centres, coeffs, field("poly_shift", (2,)), field("poly_scale", (2,)),
                   tuple(float(v) for v in norm), field("hull", (None, 2)), float(spacing),
                   field("smoothing", (len(centres),)))

    @classmethod
    def fit_transform(cls, tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, *,
                      complexity: Any, norm: Box, linear: str = "affine",
                      mirrored: bool = False) -> Any:
        """Weighted linear part (degree 1) first, then the smoothing spline of the residuals.

        ``complexity`` is the smoothing ``s`` (module docstring): per-pair smoothing
        ``s / weight_i``.
        """
        from scipy.interpolate import RBFInterpolator

        tmpl_xy = np.asarray(tmpl_xy, dtype=np.float64)
        src_xy = np.asarray(src_xy, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        if linear == "affine":
            matrix, _ = fit_affine_parts(tmpl_xy, src_xy, weights, 1, norm)
        elif linear == "similarity":
            matrix, _ = fit_similarity_parts(tmpl_xy, src_xy, weights, 1, norm,
                                             mirrored=mirrored)
        else:
            raise ValueError(f"unknown linear model {linear!r}")
        resid = src_xy - (tmpl_xy @ matrix[:, :2].T + matrix[:, 2])
        cx, cy, hx, hy = (float(v) for v in norm)
        length = float(np.sqrt(hx * hy))
        uv = (tmpl_xy - np.array([cx, cy])) / length
        hull = _hull(uv)
        # Grown by HULL_MARGIN of its extent about its centroid (as the polynomial's clip
        # box is): stars just beyond the matched ones are extrapolated, not clamped.
        mid = hull.mean(axis=0)
        hull = mid + (hull - mid) * (1.0 + 2.0 * HULL_MARGIN)
        pick = even_subsample(uv, weights, MAX_CENTRES)
        smoothing = float(complexity) / weights[pick]
        rbf = RBFInterpolator(uv[pick], resid[pick], kernel="thin_plate_spline",
                              smoothing=smoothing, degree=1)
        powers = np.asarray(rbf.powers).tolist()
        m = len(pick)
        coeffs = np.asarray(rbf._coeffs, dtype=np.float64)
        order = [powers.index(p) for p in ([0, 0], [1, 0], [0, 1])]
        coeffs = np.concatenate([coeffs[:m], coeffs[m:][order]])
        model = cls(uv[pick], coeffs, np.asarray(rbf._shift), np.asarray(rbf._scale),
                    (cx, cy, length), hull,
                    node_spacing(hull * length + np.array([cx, cy]), m), smoothing)
        return matrix, model
