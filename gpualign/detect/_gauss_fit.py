"""A circular Gaussian fitted to a stamp: Levenberg-Marquardt with box bounds.

The PSF width of an image comes from one five-parameter fit to a stack of stars
(:meth:`gpualign.detect._sep._Pixels.psf_fwhm`). ``scipy.optimize.least_squares`` does
it as well, but importing ``scipy.optimize`` costs 0.2-0.45 s of a run's start-up on a
2-core machine, several times the fit. This is the damped Gauss-Newton iteration of
Levenberg (1944) and Marquardt (1963), with Marquardt's scaling by the diagonal of
J^T J and the parameters projected onto their bounds after each step.
``tests/detect/test_gauss_fit.py`` checks it against ``least_squares``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_gaussian"]

#: Stop when a step lowers the sum of squares by less than this fraction.
FTOL = 1e-12
MAX_ITER = 200


def _model(p: np.ndarray, xx: np.ndarray, yy: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """The model and its Jacobian (columns: amp, cx, cy, s, c) at ``p``."""
    amp, cx, cy, s, c = p
    dx, dy = xx - cx, yy - cy
    r2 = dx * dx + dy * dy
    e = np.exp(-r2 / (2.0 * s * s))
    g = amp * e
    jac = np.stack([e, g * dx / (s * s), g * dy / (s * s), g * r2 / (s**3),
                    np.ones_like(e)], axis=-1)
    return g + c, jac.reshape(-1, 5)


def fit_gaussian(stamp: np.ndarray, xx: np.ndarray, yy: np.ndarray, start: list[float],
                 lower: list[float], upper: list[float]) -> np.ndarray | None:
    """Least-squares fit of ``amp * exp(-r^2 / (2 s^2)) + c`` to ``stamp``.

    Parameters
    ----------
    stamp : ndarray
        The values, on the grid ``xx``, ``yy`` (same shape).
    xx, yy : ndarray
        Pixel offsets from the stamp's centre.
    start, lower, upper : list of float
        Parameters (amp, cx, cy, s, c): starting values and bounds (``np.inf`` allowed).

    Returns
    -------
    ndarray or None
        The fitted parameters; None when the start is outside the bounds or the
        residuals are not finite.
    """
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    p = np.asarray(start, float)
    if np.any(p < lo) or np.any(p > hi):
        return None
    y = np.asarray(stamp, float).ravel()
    model, jac = _model(p, xx, yy)
    r = model.ravel() - y
    cost = float(r @ r)
    if not np.isfinite(cost):
        return None
    lam = 1e-3
    for _ in range(MAX_ITER):
        jtj = jac.T @ jac
        grad = jac.T @ r
        improved = False
        while lam < 1e12:
            a = jtj + lam * np.diag(np.maximum(np.diag(jtj), 1e-30))
            try:
                step = np.linalg.solve(a, -grad)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            trial = np.clip(p + step, lo, hi)
            t_model, t_jac = _model(trial, xx, yy)
            t_r = t_model.ravel() - y
            t_cost = float(t_r @ t_r)
            if np.isfinite(t_cost) and t_cost <= cost:
                improved = True
                break
            lam *= 10.0
        if not improved:
            break
        gain = cost - t_cost
        p, r, jac, cost = trial, t_r, t_jac, t_cost
        lam = max(lam / 10.0, 1e-12)
        if gain <= FTOL * max(cost, 1e-300):
            break
    return p
