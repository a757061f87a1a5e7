"""Robust fitting of the mapping and choice of its complexity by cross-validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ._transform import Transform, fit_polynomial, n_terms

log = logging.getLogger("gpualign")

__all__ = ["FitResult", "robust_fit", "choose_degree"]

MAX_DEGREE = 7
MIN_PAIRS_PER_TERM = 5


@dataclass
class FitResult:
    """A fitted mapping and the pairs that survived outlier rejection.

    Attributes
    ----------
    transform : Transform
    inliers : ndarray of bool
        Which of the given pairs were kept.
    degree : int
        Polynomial degree used (1 = affine).
    cv_scores : dict
        Cross-validated weighted RMS (source px) per degree tried.
    """

    transform: Transform
    inliers: np.ndarray
    degree: int
    cv_scores: dict[int, float]


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

    Returns
    -------
    transform : Transform
    inliers : ndarray of bool
    """
    keep = np.ones(len(tmpl_xy), bool)
    w = 1.0 / sigma**2
    t = fit_polynomial(tmpl_xy, src_xy, w, degree, norm)
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
        t = fit_polynomial(tmpl_xy[keep], src_xy[keep], w[keep], degree, norm)
    return t, keep


def _cv_score(
    tmpl_xy: np.ndarray, src_xy: np.ndarray, sigma: np.ndarray, degree: int,
    norm: tuple[float, float, float, float], folds: np.ndarray, k: int,
) -> tuple[float, float]:
    """Weighted held-out mean squared error and its standard error over folds."""
    w = 1.0 / sigma**2
    per_fold = []
    for f in range(k):
        test = folds == f
        if test.sum() == 0 or (~test).sum() < n_terms(degree) + 2:
            continue
        t = fit_polynomial(tmpl_xy[~test], src_xy[~test], w[~test], degree, norm, 0.0)
        r2 = ((t.map_points(tmpl_xy[test]) - src_xy[test]) ** 2).sum(axis=1)
        per_fold.append(np.sum(w[test] * r2) / np.sum(w[test]))
    if not per_fold:
        return np.inf, np.inf
    arr = np.array(per_fold)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0


def choose_degree(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    norm: tuple[float, float, float, float],
    *,
    max_degree: int = MAX_DEGREE,
    k: int = 5,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """Pick the polynomial degree by k-fold cross-validation on held-out pairs.

    The simplest degree whose held-out error is within one standard error of the
    best is chosen (the one-standard-error rule), so an undistorted field keeps
    the affine model and a distorted one gets the degree its distortion needs.
    A degree is only tried with at least 5 pairs per coefficient.

    Returns
    -------
    degree : int
    scores : dict
        Held-out weighted RMS (source px) per degree tried.
    """
    n = len(tmpl_xy)
    rng = np.random.default_rng(seed)
    folds = rng.permutation(n) % k
    stats = {}
    for d in range(1, max_degree + 1):
        if n < MIN_PAIRS_PER_TERM * n_terms(d):
            break
        stats[d] = _cv_score(tmpl_xy, src_xy, sigma, d, norm, folds, k)
        # Stop climbing once two degrees in a row made things worse.
        if d >= 3 and stats[d][0] > stats[d - 1][0] and stats[d - 1][0] > stats[d - 2][0]:
            break
    if not stats:
        return 1, {}
    best = min(stats, key=lambda d: stats[d][0])
    limit = stats[best][0] + stats[best][1]
    chosen = min(d for d in stats if stats[d][0] <= limit)
    scores = {d: float(np.sqrt(m)) for d, (m, _) in stats.items()}
    return chosen, scores
