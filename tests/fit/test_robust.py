"""``robust_fit``: planted outliers are rejected, inliers kept, the map recovered to noise.

Pairs come from a known affine map (and an affine + cubic distortion) with Gaussian
centroid noise of ``sigma`` per axis; 10% of them are moved 20 sigma away in random
directions. The rejection must find exactly the planted set (a 4-sigma cut on a
2-D Gaussian loses an inlier with probability exp(-8) = 3e-4), and the transform must
then be the weighted fit of the true inliers.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpualign.fit import robust_fit
from gpualign.transform import fit_polynomial

NORM = (500.0, 500.0, 500.0, 500.0)
SIGMA = 0.05
AFFINE = np.array([[0.99, 0.03, 12.0], [-0.02, 1.01, -30.0]])


def cubic(t):
    u, v = (t[:, 0] - 500) / 500, (t[:, 1] - 500) / 500
    return np.column_stack([0.8 * u**3 - 0.5 * u * v**2, 0.6 * v**3 + 0.4 * u**2 * v])


def truth(t, distorted):
    s = t @ AFFINE[:, :2].T + AFFINE[:, 2]
    return s + cubic(t) if distorted else s


def make(n, seed, *, outlier_frac=0.1, distorted=False, sigma=None):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1000, (n, 2))
    sig = np.full(n, SIGMA) if sigma is None else sigma(rng, n)
    s = truth(t, distorted) + rng.normal(0, 1, (n, 2)) * sig[:, None]
    bad = np.zeros(n, bool)
    bad[rng.permutation(n)[: int(round(outlier_frac * n))]] = True
    ang = rng.uniform(0, 2 * np.pi, bad.sum())
    s[bad] += 20 * sig[bad, None] * np.column_stack([np.cos(ang), np.sin(ang)])
    return t, s, sig, bad


def grid_error(transform, distorted):
    g = np.stack(np.meshgrid(np.linspace(0, 1000, 21), np.linspace(0, 1000, 21)), -1)
    g = g.reshape(-1, 2)
    return float(np.max(np.hypot(*(transform.map_points(g) - truth(g, distorted)).T)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planted_outliers_are_rejected(seed):
    t, s, sig, bad = make(500, seed)
    fitted, inliers = robust_fit(t, s, sig, 1, NORM)
    np.testing.assert_array_equal(inliers, ~bad)
    # the final fit is the weighted fit of exactly the true inliers
    ref = fit_polynomial(t[~bad], s[~bad], 1 / sig[~bad] ** 2, 1, NORM)
    np.testing.assert_allclose(fitted.matrix, ref.matrix, rtol=0, atol=1e-9)
    # and lands within the noise of the truth everywhere in the field
    assert grid_error(fitted, False) < SIGMA / 2


def test_without_outliers_everything_is_kept():
    t, s, sig, bad = make(400, 7, outlier_frac=0.0)
    assert not bad.any()
    fitted, inliers = robust_fit(t, s, sig, 1, NORM)
    assert inliers.all()
    assert grid_error(fitted, False) < SIGMA / 2


def test_plain_fit_is_spoiled_by_the_outliers():
    """The control: without rejection the same outliers move the map by many sigma."""
    t, s, sig, bad = make(500, 0)
    plain = fit_polynomial(t, s, 1 / sig**2, 1, NORM)
    robust, _ = robust_fit(t, s, sig, 1, NORM)
    assert grid_error(plain, False) > 3 * grid_error(robust, False)


def test_distorted_map_with_outliers():
    t, s, sig, bad = make(600, 4, distorted=True)
    fitted, inliers = robust_fit(t, s, sig, 3, NORM)
    np.testing.assert_array_equal(inliers, ~bad)
    assert fitted.degree == 3
    assert grid_error(fitted, True) < SIGMA


def test_underestimated_sigma_is_scaled_not_everything_rejected():
    """Residuals 3x the stated sigma: the robust scale grows, the inliers stay."""
    t, s, _, bad = make(400, 5, outlier_frac=0.0)
    fitted, inliers = robust_fit(t, s, np.full(len(t), SIGMA / 3), 1, NORM)
    assert inliers.mean() > 0.99
    assert grid_error(fitted, False) < SIGMA / 2


def test_per_pair_sigma_weights_the_cut():
    """Faint stars (sigma 4x larger) are cut at 4 of their own sigma, not of the bright ones'."""
    def sigma(rng, n):
        return np.where(rng.uniform(size=n) < 0.5, SIGMA, 4 * SIGMA)

    t, s, sig, bad = make(500, 6, sigma=sigma)
    fitted, inliers = robust_fit(t, s, sig, 1, NORM)
    np.testing.assert_array_equal(inliers, ~bad)
    assert grid_error(fitted, False) < SIGMA / 2


def test_custom_fit_callable_is_used():
    t, s, sig, bad = make(300, 8)
    calls = []

    def fit(tx, sx, w):
        calls.append(len(tx))
        return fit_polynomial(tx, sx, w, 1, NORM)

    _, inliers = robust_fit(t, s, sig, 1, NORM, fit=fit)
    assert calls[0] == 300 and calls[-1] == int(inliers.sum()) == 270
