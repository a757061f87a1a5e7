"""The mapping: a linear part plus a distortion model, template pixel -> source pixel.

A :class:`Transform` maps TEMPLATE pixel coordinates to SOURCE pixel coordinates,
the direction the warp needs: each output (template) pixel asks where to sample
the source. Fitting it in that direction, with the surfaces' inputs in the
template frame, is what makes the distortion correction right at any rotation
(spalipy fits its spline in one frame and applies it in another).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign.transform._model import Box, DistortionModel, model_from_dict
from gpualign.transform._polynomial import NO_CLIP, PolynomialDistortion
from gpualign.transform._serialise import (
    FORMAT,
    VERSION,
    check_file_dict,
    decode_numbers,
    encode,
    read_json,
    write_json,
)

__all__ = ["Transform"]


class Transform:
    """Template pixel -> source pixel: ``s = M @ [x, y, 1] + D(x, y)``.

    Parameters
    ----------
    matrix : ndarray (2, 3)
        Linear part in pixels.
    coeffs : DistortionModel or ndarray, optional
        The surfaces ``D``: a :class:`DistortionModel`, or the coefficients
        ``(2, d+1, d+1)`` of a ``PolynomialDistortion`` with ``norm`` and
        ``clip``. None: linear.
    norm, clip : tuple of float, optional
        Only with polynomial coefficients.
    distortion : DistortionModel, optional
        The surfaces, by keyword.
    """

    __slots__ = ("matrix", "distortion", "_columns")

    def __init__(self, matrix: Any, coeffs: Any = None, norm: Box | None = None,
                 clip: Box | None = None, *, distortion: DistortionModel | None = None
                 ) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        if distortion is None:
            distortion = coeffs if isinstance(coeffs, DistortionModel) else \
                PolynomialDistortion(coeffs, norm or (0.0, 0.0, 1.0, 1.0), clip or NO_CLIP)
        self.distortion: DistortionModel = distortion
        self._columns: dict[tuple[int, int, int], Any] = {}

    def __getstate__(self) -> tuple[np.ndarray, DistortionModel]:
        """The mapping without the column cache (solutions travel between processes)."""
        return self.matrix, self.distortion

    def __setstate__(self, state: tuple[np.ndarray, DistortionModel]) -> None:
        self.matrix, self.distortion = state
        self._columns = {}

    def _column_coords(self, xp: ModuleType, x0: int, x1: int) -> Any:
        """``arange(x0, x1)`` on ``xp``, the same array for every tile of a warp.

        A distortion model may then reuse what it computed for these columns
        (:meth:`PolynomialDistortion._columns`).
        """
        key = (id(xp), int(x0), int(x1))
        xs = self._columns.get(key)
        if xs is None:
            xs = xp.arange(x0, x1, dtype=xp.float64)
            if len(self._columns) >= 64:
                self._columns = {}
            self._columns[key] = xs
        return xs

    def __repr__(self) -> str:
        return (f"Transform(matrix={self.matrix.tolist()}, distortion="
                f"{self.distortion.name}, {self.distortion.n_params} parameters)")

    # -- polynomial view (what the fused CUDA kernel and the file format know) --
    @property
    def coeffs(self) -> np.ndarray:
        """Polynomial coefficients (empty for another model or none)."""
        d = self.distortion
        return d.coeffs if isinstance(d, PolynomialDistortion) else np.zeros((2, 0, 0))

    @property
    def norm(self) -> Box:
        """``(cx, cy, hx, hy)`` of a polynomial model."""
        d = self.distortion
        return d.norm if isinstance(d, PolynomialDistortion) else (0.0, 0.0, 1.0, 1.0)

    @property
    def clip(self) -> Box:
        """``(umin, umax, vmin, vmax)`` of a polynomial model."""
        d = self.distortion
        return d.clip if isinstance(d, PolynomialDistortion) else NO_CLIP

    @property
    def is_polynomial(self) -> bool:
        """Whether the distortion is the polynomial model (what the fused kernel runs)."""
        return isinstance(self.distortion, PolynomialDistortion)

    @property
    def degree(self) -> int:
        """Degree of polynomial surfaces (1 = affine only, or another model)."""
        d = self.distortion
        return d.degree if isinstance(d, PolynomialDistortion) else 1

    @property
    def has_distortion(self) -> bool:
        """Whether the distortion surfaces are not identically zero."""
        return not self.distortion.is_zero

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Transform:
        """A linear transform from a 2x3 (or 3x3) matrix."""
        return cls(np.array(matrix, dtype=np.float64)[:2, :3].copy())

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map template (x, y) to source (sx, sy) on the host, in float64."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = self.matrix
        sx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
        sy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
        if self.has_distortion:
            dx, dy = self.distortion.evaluate(x, y)
            sx = sx + dx
            sy = sy + dy
        return sx, sy

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` template points to ``(N, 2)`` source points."""
        sx, sy = self(xy[:, 0], xy[:, 1])
        return np.column_stack([sx, sy])

    def evaluate_grid(self, xp: ModuleType, x0: int, x1: int, y0: int,
                      y1: int) -> tuple[Any, Any]:
        """Source coordinates ``(sx, sy)`` of the output pixel block ``[y0:y1, x0:x1]``.

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

        The layout ``map_coordinates`` takes, built in place (no stacking copy): the
        surfaces first (:meth:`DistortionModel.grid_into`), then the linear part added,
        ``(D + m00 x) + (m01 y + m02)``.
        """
        return self.source_coords_bounds(xp, x0, x1, y0, y1)[0]

    def source_coords_bounds(self, xp: ModuleType, x0: int, x1: int, y0: int, y1: int
                             ) -> tuple[Any, tuple[float, float, float, float] | None]:
        """:meth:`source_coords` and, when known at no cost, their range.

        On NumPy with the compiled host library the linear part is added in one pass
        per axis that also finds ``(sy_min, sy_max, sx_min, sx_max)`` (the same
        values as NumPy's two additions, bit for bit); otherwise the range is None.
        """
        xs = self._column_coords(xp, x0, x1)
        ys = xp.arange(y0, y1, dtype=xp.float64)
        out = xp.empty((2, y1 - y0, x1 - x0), dtype=xp.float64)
        m = self.matrix
        distorted = self.has_distortion
        if distorted:
            self.distortion.grid_into(xp, out, xs, ys)
        ranges: list[float] | None = [] if xp is np else None
        for k, row in ((1, 0), (0, 1)):  # sy -> out[0], sx -> out[1]
            target = out[row]
            ax = m[k, 0] * xs
            by = m[k, 1] * ys + m[k, 2]
            if ranges is not None:
                from gpualign.backend import _host  # deferred: the library loads on use

                got = _host.add_linear(target, ax, by, distorted)
                if got is not None:
                    ranges += got
                    continue
                ranges = None
            if distorted:
                target += ax[None, :]
            else:
                target[...] = ax[None, :]
            target += by[:, None]
        bounds = None if ranges is None else (ranges[0], ranges[1], ranges[2], ranges[3])
        return out, bounds

    def jacobian_grid(self, xp: ModuleType, x0: int, x1: int, y0: int,
                      y1: int) -> tuple[Any, Any, Any, Any]:
        """``dsx/dx, dsx/dy, dsy/dx, dsy/dy`` on the block ``[y0:y1, x0:x1]`` (float64)."""
        m = self.matrix
        linear = [float(m[k, j]) for k in (0, 1) for j in (0, 1)]
        if not self.has_distortion:
            shape = (y1 - y0, x1 - x0)
            out = [xp.full(shape, v, dtype=xp.float64) for v in linear]
            return out[0], out[1], out[2], out[3]
        xs = self._column_coords(xp, x0, x1)
        ys = xp.arange(y0, y1, dtype=xp.float64)
        out = list(self.distortion.jacobian_grid(xp, xs, ys))  # fresh arrays: added in place
        for a, v in zip(out, linear, strict=True):
            a += v
        return out[0], out[1], out[2], out[3]

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

    def shifted(self, ox: int, oy: int) -> Transform:
        """``T'(X, Y) = T(X - ox, Y - oy)``: the mapping seen from a canvas offset by (ox, oy)."""
        m = self.matrix.copy()
        m[:, 2] = self.matrix[:, 2] - self.matrix[:, 0] * ox - self.matrix[:, 1] * oy
        return Transform(m, self.distortion.shifted(ox, oy))

    def support_box(self) -> Box | None:
        """Where the surfaces are constrained by stars (template px), or None."""
        return None if not self.has_distortion else self.distortion.support_box()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (exact float64 round trip).

        A polynomial keeps the historic layout (``matrix``, ``coeffs``, ``norm``,
        ``clip``); another model adds a ``distortion`` entry naming it.
        """
        d = self.distortion.to_dict()
        if isinstance(self.distortion, PolynomialDistortion):
            return {"matrix": self.matrix.tolist(), "coeffs": d["coeffs"], "norm": d["norm"],
                    "clip": d["clip"]}
        return {"matrix": self.matrix.tolist(), "distortion": d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """Inverse of :meth:`to_dict`; ValueError naming the field that is unusable."""
        matrix = np.array(d["matrix"], dtype=np.float64)
        if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)):
            raise ValueError(f"matrix must be 2x3 finite numbers, got {d['matrix']!r}")
        if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            raise ValueError("matrix is singular (it maps the template onto a line)")
        if "distortion" in d:
            return cls(matrix, model_from_dict(d["distortion"]))
        return cls(matrix, PolynomialDistortion.from_dict(d))

    def save(self, path: Any) -> None:
        """Write this transform to a JSON file (exact round trip, see :meth:`load`)."""
        write_json({"format": FORMAT, "version": VERSION, "transform": encode(self.to_dict())},
                   path)

    @classmethod
    def load(cls, path: Any) -> Transform:
        """Read the transform of a file written by :meth:`save` or ``Solution.save``."""
        d = read_json(path)
        check_file_dict(d)
        try:
            return cls.from_dict(decode_numbers(d["transform"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{path} is not a valid gpualign transform file ({exc})") from None
