"""Scoring a fitted mapping against the truth, and resampling a real image through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from gpualign._simulate._mapping import Shape, TrueMapping
from gpualign._simulate._render import SimPair, _inside

__all__ = ["bright_overlap_stars", "position_errors", "error_stats", "warp_real_image"]


def bright_overlap_stars(pair: SimPair, n: int = 200, margin_fwhm: float = 3.0) -> np.ndarray:
    """Template-frame positions of the brightest stars inside both images.

    Parameters
    ----------
    pair : SimPair
        A simulated pair.
    n : int
        Maximum number of stars returned.
    margin_fwhm : float
        Stars closer than this many FWHM to an edge of either image, or with a
        NaN source pixel within that distance, are excluded.

    Returns
    -------
    ndarray, shape (M, 2)
        Positions, brightest first.

    """
    ok = _inside(pair.template_xy, pair.template.shape, margin_fwhm * pair.fwhm_template)
    ok &= _inside(pair.source_xy, pair.source.shape, margin_fwhm * pair.fwhm_source)
    idx = np.flatnonzero(ok)
    nan = ~np.isfinite(pair.source)
    if nan.any() and idx.size:
        rad = int(np.ceil(margin_fwhm * pair.fwhm_source))
        near = ndimage.maximum_filter(nan, size=2 * rad + 1)
        sxy = np.rint(pair.source_xy[idx]).astype(np.int64)
        idx = idx[~near[sxy[:, 1], sxy[:, 0]]]
    idx = idx[np.argsort(-pair.flux[idx], kind="stable")][:n]
    return pair.template_xy[idx].copy()


Mapping2D = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]


def position_errors(
    fitted: Mapping2D,
    truth: Mapping2D,
    xy_template: np.ndarray,
    *,
    step: float = 1e-2,
    tol: float = 1e-9,
    max_iter: int = 50,
) -> np.ndarray:
    """Return where stars land after resampling with ``fitted``, as errors.

    A star truly at template position ``p`` is at ``s = truth(p)`` in the
    source; resampling the source with ``fitted`` shows it at the template
    position ``q`` solving ``fitted(q) = s`` (Newton iterations with a
    central-difference Jacobian of ``fitted``, starting at ``p``).

    Parameters
    ----------
    fitted : callable
        Fitted template -> source mapping, ``fitted(x, y) -> (sx, sy)``.
    truth : callable
        True template -> source mapping.
    xy_template : ndarray, shape (M, 2)
        True template positions of the stars.
    step : float
        Finite-difference step (pixels) of the Jacobian.
    tol : float
        Convergence tolerance (pixels).
    max_iter : int
        Maximum number of Newton iterations.

    Returns
    -------
    ndarray, shape (M,)
        ``|q - p|`` in template pixels; NaN where ``fitted`` is not finite or
        the iteration did not converge.

    """
    p = np.asarray(xy_template, dtype=np.float64).reshape(-1, 2)
    tx, ty = (np.asarray(v, dtype=np.float64) for v in truth(p[:, 0], p[:, 1]))

    def f(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx, fy = fitted(x, y)
        return np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)

    qx, qy = p[:, 0].copy(), p[:, 1].copy()
    converged = np.zeros(len(p), dtype=bool)
    for _ in range(max_iter):
        fx, fy = f(qx, qy)
        rx, ry = tx - fx, ty - fy
        ax, ay = f(qx + step, qy)
        bx, by = f(qx - step, qy)
        j00, j10 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        ax, ay = f(qx, qy + step)
        bx, by = f(qx, qy - step)
        j01, j11 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        det = j00 * j11 - j01 * j10
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (j11 * rx - j01 * ry) / det
            dy = (j00 * ry - j10 * rx) / det
        qx, qy = qx + dx, qy + dy
        converged = np.hypot(dx, dy) < tol
        if np.all(converged | ~np.isfinite(dx)):
            break
    err = np.hypot(qx - p[:, 0], qy - p[:, 1])
    err[~converged] = np.nan
    return err


def error_stats(errors: np.ndarray) -> dict[str, float]:
    """Summarise position errors.

    Parameters
    ----------
    errors : ndarray
        Output of :func:`position_errors`.

    Returns
    -------
    dict
        ``rms``, ``max``, ``median`` over the finite errors, ``n`` (finite
        count) and ``n_nonfinite``.

    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    fin = e[np.isfinite(e)]
    if fin.size == 0:
        nan = float("nan")
        return {"rms": nan, "max": nan, "median": nan, "n": 0, "n_nonfinite": int(e.size)}
    return {
        "rms": float(np.sqrt(np.mean(fin**2))),
        "max": float(fin.max()),
        "median": float(np.median(fin)),
        "n": int(fin.size),
        "n_nonfinite": int(e.size - fin.size),
    }


def warp_real_image(
    image: np.ndarray, mapping: TrueMapping, output_shape: Shape, *, rows_per_chunk: int = 256
) -> np.ndarray:
    """Resample a real image (the template-frame sky) into the source frame.

    ``source(s) = image(mapping.inverse(s))`` with cubic spline interpolation
    (``scipy.ndimage.map_coordinates``, order 3); NaN outside the image and
    next to NaN input pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Template-frame image.
    mapping : TrueMapping
        Template -> source mapping.
    output_shape : tuple of int
        ``(height, width)`` of the source image to produce.
    rows_per_chunk : int
        Output rows computed at a time (bounds memory).

    Returns
    -------
    ndarray, float32, shape ``output_shape``
        The distorted copy.

    """
    img = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(img)
    if bad.any():
        img = np.where(bad, np.nanmedian(img) if (~bad).any() else 0.0, img)
    coeffs = ndimage.spline_filter(img, order=3, mode="mirror")
    h, w = img.shape
    out = np.empty(output_shape, dtype=np.float32)
    xs = np.arange(output_shape[1], dtype=np.float64)
    for r0 in range(0, output_shape[0], rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, output_shape[0])
        sy, sx = np.meshgrid(np.arange(r0, r1, dtype=np.float64), xs, indexing="ij")
        x, y = mapping.inverse(sx, sy)
        vals = ndimage.map_coordinates(coeffs, [y, x], order=3, mode="mirror", prefilter=False)
        outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
        if bad.any():
            iy = np.clip(np.rint(y), 0, h - 1).astype(np.int64)
            ix = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
            outside |= bad[iy, ix]
        vals[outside] = np.nan
        out[r0:r1] = vals
    return out
