"""Choosing the distortion model (polynomial or thin-plate spline) by held-out error.

Same rules as the degree and the linear part (:mod:`gpualign.fit._selection`): k-fold
cross-validation on the final inlier pairs (seeded folds), each pair's held-out
residual computed under every candidate, and the simpler candidate kept unless a
more complex one predicts held-out pairs significantly better, pair by pair.

* ``"poly"``: the polynomial fit is returned untouched (the default; bit-identical).
* ``"tps"``: the spline's smoothing ``s`` (:mod:`gpualign.transform._tps`) is chosen
  among :data:`SMOOTHING_GRID` by held-out error (the smoothest value within one
  standard error of the best, as for the degree), then fitted on all pairs.
* ``"auto"``: the polynomial of the chosen degree against the spline at its best
  smoothing, on the same folds; the polynomial is kept unless the spline's excess is
  significant (``mean(diff) > 2 std(diff) / sqrt(N)``, as ``choose_model``).

With fewer than :data:`MIN_TPS_PAIRS` pairs the spline is not tried: ``"auto"`` keeps
the polynomial, and an explicit ``"tps"`` falls back to it with a warning (a spline
through a handful of stars is an interpolation of their noise).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gpualign.fit._selection import held_out_sq_errors
from gpualign.transform import Transform, fit_transform

log = logging.getLogger("gpualign")

__all__ = ["select_distortion", "choose_smoothing", "SMOOTHING_GRID", "MIN_TPS_PAIRS"]

#: Smoothing values tried (bending-energy weight against chi-square).
SMOOTHING_GRID = tuple(float(v) for v in 10.0 ** np.arange(-2.0, 5.0))
#: Fewest pairs for which the spline is tried.
MIN_TPS_PAIRS = 20


def _tps_held_out(tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, grid: tuple,
                  norm: tuple, linear: str, mirrored: bool, folds: np.ndarray,
                  k: int) -> dict[float, np.ndarray]:
    """Squared held-out residual of every pair for every smoothing value."""
    errs = {s: np.full(len(tmpl_xy), np.nan) for s in grid}
    for f in range(k):
        test = folds == f
        if not test.any() or (~test).sum() < MIN_TPS_PAIRS - 4:
            continue
        for s in grid:
            try:
                t = fit_transform("tps", tmpl_xy[~test], src_xy[~test], w[~test], complexity=s,
                                  norm=norm, linear=linear, mirrored=mirrored)
            except (np.linalg.LinAlgError, ValueError):
                continue
            m = t.matrix
            x, y = tmpl_xy[test, 0], tmpl_xy[test, 1]
            dx, dy = t.distortion.direct(x, y)
            px = m[0, 0] * x + m[0, 1] * y + m[0, 2] + dx
            py = m[1, 0] * x + m[1, 1] * y + m[1, 2] + dy
            errs[s][test] = (px - src_xy[test, 0]) ** 2 + (py - src_xy[test, 1]) ** 2
    return errs


def choose_smoothing(
    tmpl_xy: np.ndarray, src_xy: np.ndarray, sigma: np.ndarray, norm: tuple, *,
    linear: str = "affine", mirrored: bool = False, k: int = 5, seed: int = 0,
    grid: tuple = SMOOTHING_GRID,
) -> tuple[float | None, np.ndarray | None, dict[float, float]]:
    """The spline's smoothing by k-fold held-out error.

    Returns
    -------
    smoothing : float or None
        The largest (smoothest) value whose excess held-out error over the best is
        within one standard error of the paired differences; None when no value
        could be scored.
    errors : ndarray or None
        Squared held-out residual of every pair at that smoothing.
    scores : dict
        Held-out weighted RMS (source px) per smoothing value.
    """
    n = len(tmpl_xy)
    w = 1.0 / sigma**2
    folds = np.random.default_rng(seed).permutation(n) % k
    errs = {s: e for s, e in _tps_held_out(tmpl_xy, src_xy, w, grid, norm, linear, mirrored,
                                             folds, k).items() if np.isfinite(e).all()}
    if not errs:
        return None, None, {}
    mean = {s: float(np.sum(w * e) / np.sum(w)) for s, e in errs.items()}
    best = min(mean, key=mean.__getitem__)
    chosen = best
    for s in sorted(errs, reverse=True):
        if s <= best:
            break
        diff = w * (errs[s] - errs[best]) / np.mean(w)
        if diff.mean() <= diff.std(ddof=1) / np.sqrt(n):
            chosen = s
            break
    return chosen, errs[chosen], {s: float(np.sqrt(v)) for s, v in mean.items()}


def select_distortion(option: str, poly_fit: Transform, tmpl_xy: np.ndarray,
                      src_xy: np.ndarray, sigma: np.ndarray, *, degree: int,
                      norm: tuple[float, float, float, float], linear: str,
                      mirrored: bool, k: int = 5,
                      seed: int = 0) -> tuple[Transform, str, Any, dict[str, float]]:
    """Apply the ``distortion`` option to the final inlier pairs.

    Parameters
    ----------
    option : {"poly", "tps", "auto"}
        The user's choice.
    poly_fit : Transform
        The polynomial fit of these pairs (linear part ``linear``, degree ``degree``).
    tmpl_xy, src_xy, sigma : ndarray
        Inlier pairs and their expected residuals (source px).
    degree : int
        Degree of the polynomial surfaces.
    norm : tuple
        Normalisation of the template coordinates.
    linear : {"similarity", "affine"}
        Linear part under the surfaces.
    mirrored : bool
        Parity of a similarity.

    Returns
    -------
    transform, model name, complexity (degree or smoothing), held-out RMS per model
    (``"tps"``: the spline's; ``"auto"``: ``"poly"`` and ``"tps"``).
    """
    if option == "poly":
        return poly_fit, "poly", degree, {}
    if option not in ("tps", "auto"):
        raise ValueError(f"unknown distortion model {option!r}")
    n = len(tmpl_xy)
    if n < MIN_TPS_PAIRS:
        if option == "tps":
            log.warning("distortion=tps: only %d matched pairs (< %d), keeping the "
                        "polynomial model", n, MIN_TPS_PAIRS)
        return poly_fit, "poly", degree, {}
    s, e_tps, tps_scores = choose_smoothing(tmpl_xy, src_xy, sigma, norm, linear=linear,
                                            mirrored=mirrored, k=k, seed=seed)
    if s is None:
        log.warning("distortion=%s: the thin-plate spline could not be fitted, keeping "
                    "the polynomial model", option)
        return poly_fit, "poly", degree, {}
    w = 1.0 / sigma**2
    scores = {"tps": float(np.sqrt(np.sum(w * e_tps) / np.sum(w)))}
    if option == "auto":
        folds = np.random.default_rng(seed).permutation(n) % k
        e_poly = held_out_sq_errors(linear, tmpl_xy, src_xy, w, degree, norm, mirrored, folds, k)
        if not np.isfinite(e_poly).all():
            return poly_fit, "poly", degree, scores
        scores["poly"] = float(np.sqrt(np.sum(w * e_poly) / np.sum(w)))
        diff = w * (e_poly - e_tps) / np.mean(w)
        better = diff.mean() > 2.0 * diff.std(ddof=1) / np.sqrt(n)
        log.debug("distortion choice: held-out rms poly %.4f, tps %.4f (s=%g) -> %s",
                  scores["poly"], scores["tps"], s, "tps" if better else "poly")
        if not better:
            return poly_fit, "poly", degree, scores
    t = fit_transform("tps", tmpl_xy, src_xy, w, complexity=s, norm=norm, linear=linear,
                      mirrored=mirrored)
    log.debug("thin-plate spline: smoothing %g, held-out rms %s", s, tps_scores)
    return t, "tps", s, scores
