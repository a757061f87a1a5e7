"""Robust fitting of the mapping and choice of its complexity by cross-validation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from gpualign.transform._transform import Transform, fit_polynomial, n_terms

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
        polynomial of ``degree`` (:func:`fit_polynomial`).

    Returns
    -------
    transform : Transform
    inliers : ndarray of bool
    """
    if fit is None:
        def fit(t_xy: np.ndarray, s_xy: np.ndarray, w: np.ndarray) -> Transform:
            return fit_polynomial(t_xy, s_xy, w, degree, norm)

    keep = np.ones(len(tmpl_xy), bool)
    w = 1.0 / sigma**2
    t = fit(tmpl_xy, src_xy, w)
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


def _held_out_sq_errors_all(
    tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, degrees: list[int],
    norm: tuple[float, float, float, float], folds: np.ndarray, k: int,
) -> dict[int, np.ndarray]:
    """Squared k-fold held-out residual of every pair, for every degree at once.

    The design of degree ``d`` is the first ``n_terms(d)`` columns of the design of the
    highest degree, and a fold's training normal matrix is the full one minus the
    fold's own: one pass over the pairs serves all degrees and folds.
    """
    from gpualign.transform._transform import _design

    cx, cy, hx, hy = norm
    top = max(degrees)
    design = _design((tmpl_xy[:, 0] - cx) / hx, (tmpl_xy[:, 1] - cy) / hy, top)
    a = design * np.sqrt(w)[:, None]
    b = src_xy * np.sqrt(w)[:, None]
    scale = np.sqrt((a**2).sum(axis=0))
    scale[scale == 0] = 1.0
    a /= scale
    normal, rhs = a.T @ a, a.T @ b
    parts = [(folds == f, a[folds == f], b[folds == f]) for f in range(k)]
    fold_normal = [(m, af.T @ af, af.T @ bf) for m, af, bf in parts]
    out = {}
    for d in degrees:
        m = n_terms(d)
        e = np.full(len(tmpl_xy), np.nan)
        for mask, nf, rf in fold_normal:
            if not mask.any() or (~mask).sum() < m + 2:
                continue
            try:
                c = scipy.linalg.solve(normal[:m, :m] - nf[:m, :m], rhs[:m] - rf[:m],
                                       assume_a="pos", check_finite=False)
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
                continue
            pred = (a[mask, :m] @ c) / np.sqrt(w[mask])[:, None]
            e[mask] = ((pred - src_xy[mask]) ** 2).sum(axis=1)
        out[d] = e
    return out


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

    Every pair's held-out residual is computed for each degree (same folds), and
    degrees are compared pair by pair: the simplest degree whose excess held-out
    error over the best degree is not significant (within one standard error of the
    paired differences) is chosen. An undistorted field thus keeps the affine
    model, and a distorted one gets the degree its distortion needs even with few
    stars. A degree is only tried with at least 5 pairs per coefficient.

    Returns
    -------
    degree : int
    scores : dict
        Held-out weighted RMS (source px) per degree tried.
    """
    n = len(tmpl_xy)
    w = 1.0 / sigma**2
    folds = np.random.default_rng(seed).permutation(n) % k
    degrees = [d for d in range(1, max_degree + 1) if n >= MIN_PAIRS_PER_TERM * n_terms(d)]
    if not degrees:
        return 1, {}
    # Wrong matches are outliers whatever the degree; stars that only a higher degree
    # fits (corners of a distorted field) are not, and must keep their vote. Outliers
    # are dropped from the training folds too (a heavy one bends every fit near it and
    # makes the lower degrees look worse than they are), then the errors are redone.
    good = np.ones(n, bool)
    for attempt in range(4):
        errs: dict[int, np.ndarray] = {}
        for d, e in _held_out_sq_errors_all(tmpl_xy[good], src_xy[good], w[good], degrees,
                                            norm, folds[good], k).items():
            if not np.isfinite(e).all():
                break
            errs[d] = e
        if not errs:
            return 1, {}
        if attempt == 3:
            break
        z = np.array([w[good] * e for e in errs.values()])  # (degrees, pairs)
        zmin = z.min(axis=0)
        keep = zmin <= 25.0 * max(float(np.median(zmin)), 1e-300)
        if keep.all() or keep.sum() < max(8, MIN_PAIRS_PER_TERM * n_terms(min(errs))):
            break
        idx = np.flatnonzero(good)
        good[idx[~keep]] = False
    w, n = w[good], int(good.sum())
    mean = {d: float(np.sum(w * e) / np.sum(w)) for d, e in errs.items()}
    best = min(mean, key=mean.__getitem__)
    chosen = best
    for d in sorted(errs):
        if d >= best:
            break
        diff = w * (errs[d] - errs[best]) / np.mean(w)
        if diff.mean() <= diff.std(ddof=1) / np.sqrt(n):
            chosen = d
            break
    return chosen, {d: float(np.sqrt(v)) for d, v in mean.items()}
