"""Robust weighted fitting: iterative rejection of pairs the model cannot explain."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from gpualign.transform import Transform, fit_transform, n_terms

log = logging.getLogger("gpualign")

__all__ = ["robust_fit"]

#: Median residual of the first fit, in units of the pairs' errors, above which a
#: fit to the better half of the pairs is tried as the start.
TRIMMED_START = 3.0


def _residuals(t: Transform, tmpl_xy: np.ndarray, src_xy: np.ndarray) -> np.ndarray:
    return np.hypot(*(t.map_points(tmpl_xy) - src_xy).T)


def robust_fit(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    *,
    clip_sigma: float = 4.0,
    max_iter: int = 8,
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], Transform] | None = None,
) -> tuple[Transform, np.ndarray]:
    """Weighted fit with iterative rejection of outliers.

    Each pair is weighted by ``1 / sigma**2``; pairs whose residual exceeds
    ``clip_sigma`` times their expected error (``sigma`` scaled by a robust estimate
    of how much the residuals exceed it) are dropped, and the fit repeated until the
    set is stable.

    Parameters
    ----------
    tmpl_xy, src_xy : ndarray, shape (N, 2)
    sigma : ndarray, shape (N,)
        Expected residual of each pair (source px, per axis).
    degree : int
    norm : tuple
    clip_sigma : float
    max_iter : int
    fit : callable, optional
        ``fit(tmpl_xy, src_xy, weights) -> Transform``; default: the full affine +
        polynomial of ``degree``, through the distortion-model interface.

    Returns
    -------
    transform : Transform
    inliers : ndarray of bool
    """
    if fit is None:
        def fit(t_xy: np.ndarray, s_xy: np.ndarray, w: np.ndarray) -> Transform:
            return fit_transform("poly", t_xy, s_xy, w, complexity=degree, norm=norm)

    keep = np.ones(len(tmpl_xy), bool)
    w = 1.0 / sigma**2
    t = fit(tmpl_xy, src_xy, w)
    r = _residuals(t, tmpl_xy, src_xy) / sigma
    half = r <= np.median(r)
    if np.median(r) / 1.1774 > TRIMMED_START and half.sum() >= max(n_terms(degree) + 2, 4):
        # Residuals far above the pairs' errors: the weighted fit may be dragged by
        # wrong pairs (a deep list against a shallow one, where every unpartnered star
        # finds some neighbour). A fit to the better half is kept when it explains
        # most pairs much better.
        t_half = fit(tmpl_xy[half], src_xy[half], w[half])
        if np.median(_residuals(t_half, tmpl_xy, src_xy) / sigma) < 0.5 * np.median(r):
            t = t_half
    for _ in range(max_iter):
        r = _residuals(t, tmpl_xy, src_xy) / sigma
        # chi with 2 degrees of freedom: median is 1.1774 for unit-variance axes
        scale = max(np.median(r[keep]) / 1.1774, 1.0)
        new_keep = r <= clip_sigma * scale
        if new_keep.sum() < max(n_terms(degree) + 2, 4):
            break
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
        t = fit(tmpl_xy[keep], src_xy[keep], w[keep])
    return t, keep
