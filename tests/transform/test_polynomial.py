"""The polynomial model and :class:`Transform`, against known coefficients.

``fit_polynomial`` recovers noise-free coefficients exactly at degrees 1-4; the
surfaces are frozen outside the stars' box (the clip); the grid evaluators
(``source_coords``, ``evaluate_grid``, ``jacobian_grid``) agree with the point
evaluator and with finite differences; ``to_dict``/``from_dict`` are exact; the
legacy constructor and the model registry still work.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpualign.transform import (
    PolynomialDistortion,
    Transform,
    fit_polynomial,
    model_class,
    model_from_dict,
    model_names,
    n_terms,
)

NORM = (400.0, 300.0, 400.0, 300.0)  # an 800 x 600 template
MATRIX = np.array([[0.97, 0.05, 12.5], [-0.04, 1.02, -7.25]])


def random_coeffs(degree: int, seed: int, amplitude: float = 2.0) -> np.ndarray:
    """Random (2, d+1, d+1) coefficients of the terms 2 <= i + j <= degree."""
    rng = np.random.default_rng(seed)
    c = np.zeros((2, degree + 1, degree + 1))
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            if i + j >= 2:
                c[:, i, j] = rng.normal(0, amplitude, 2)
    return c


def direct(matrix, coeffs, norm, x, y):
    """The model written out term by term (no clip)."""
    cx, cy, hx, hy = norm
    u, v = (x - cx) / hx, (y - cy) / hy
    sx = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    sy = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    for i in range(coeffs.shape[1]):
        for j in range(coeffs.shape[2]):
            sx = sx + coeffs[0, i, j] * u**i * v**j
            sy = sy + coeffs[1, i, j] * u**i * v**j
    return sx, sy


@pytest.fixture(scope="module")
def stars():
    rng = np.random.default_rng(0)
    return rng.uniform([0, 0], [800, 600], (300, 2))


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_fit_recovers_known_coefficients(stars, degree):
    coeffs = random_coeffs(degree, seed=degree) if degree >= 2 else np.zeros((2, 0, 0))
    sx, sy = direct(MATRIX, coeffs, NORM, stars[:, 0], stars[:, 1])
    t = fit_polynomial(stars, np.column_stack([sx, sy]), np.ones(len(stars)), degree, NORM)
    assert t.degree == degree
    np.testing.assert_allclose(t.matrix, MATRIX, rtol=0, atol=1e-9)
    if degree >= 2:
        np.testing.assert_allclose(t.coeffs, coeffs, rtol=0, atol=1e-9)
        assert t.distortion.n_params == 2 * (n_terms(degree) - 3)
        # terms of degree < 2 belong to the linear part
        assert not t.coeffs[:, 0, 0].any() and not t.coeffs[:, 1, 0].any()
        assert not t.coeffs[:, 0, 1].any()
    else:
        assert not t.has_distortion and t.distortion.n_params == 0
    np.testing.assert_allclose(t.map_points(stars), np.column_stack([sx, sy]), atol=1e-9)


def test_weights_matter_and_zero_weight_pairs_are_ignored(stars):
    coeffs = random_coeffs(3, seed=9)
    sx, sy = direct(MATRIX, coeffs, NORM, stars[:, 0], stars[:, 1])
    s = np.column_stack([sx, sy])
    s[:20] += 50.0  # wrong pairs, weighted (almost) out
    w = np.ones(len(stars))
    w[:20] = 1e-30
    t = fit_polynomial(stars, s, w, 3, NORM)
    np.testing.assert_allclose(t.coeffs, coeffs, atol=1e-6)
    assert np.abs(fit_polynomial(stars, s, np.ones(len(stars)), 3, NORM).matrix
                  - MATRIX).max() > 1e-3


def test_clip_box_freezes_the_surfaces_outside_the_stars(stars):
    inner = stars[(stars[:, 0] > 200) & (stars[:, 0] < 600) & (stars[:, 1] > 150)
                  & (stars[:, 1] < 450)]
    coeffs = random_coeffs(3, seed=3)
    sx, sy = direct(MATRIX, coeffs, NORM, inner[:, 0], inner[:, 1])
    t = fit_polynomial(inner, np.column_stack([sx, sy]), np.ones(len(inner)), 3, NORM,
                       clip_margin=0.02)
    cx, cy, hx, hy = NORM
    u, v = (inner[:, 0] - cx) / hx, (inner[:, 1] - cy) / hy
    pu, pv = 0.02 * np.ptp(u), 0.02 * np.ptp(v)
    assert t.clip == pytest.approx((u.min() - pu, u.max() + pu, v.min() - pv, v.max() + pv))
    x0, x1, y0, y1 = t.support_box()
    assert (x0, x1) == pytest.approx((cx + t.clip[0] * hx, cx + t.clip[1] * hx))
    assert (y0, y1) == pytest.approx((cy + t.clip[2] * hy, cy + t.clip[3] * hy))
    # inside the box: the true model
    xin, yin = np.array([300.0, 500.0]), np.array([200.0, 400.0])
    np.testing.assert_allclose(np.column_stack(t(xin, yin)),
                               np.column_stack(direct(MATRIX, coeffs, NORM, xin, yin)),
                               atol=1e-8)
    # outside: the linear part extrapolates, the surfaces stay at the box's edge value
    xo = np.array([0.0, 800.0, 0.0, 800.0, 400.0])
    yo = np.array([0.0, 600.0, 300.0, 0.0, 600.0])
    xc, yc = np.clip(xo, x0, x1), np.clip(yo, y0, y1)
    lin = np.column_stack(Transform(MATRIX)(xo, yo))
    lin_c = np.column_stack(Transform(MATRIX)(xc, yc))
    edge = np.column_stack(direct(MATRIX, coeffs, NORM, xc, yc)) - lin_c
    np.testing.assert_allclose(np.column_stack(t(xo, yo)), lin + edge, atol=1e-8)
    # the unclipped polynomial would have gone elsewhere
    free = np.column_stack(direct(MATRIX, coeffs, NORM, xo, yo))
    assert np.abs(free - (lin + edge)).max() > 0.1


@pytest.fixture(scope="module")
def clipped() -> Transform:
    coeffs = random_coeffs(4, seed=4, amplitude=1.5)
    return Transform(MATRIX, PolynomialDistortion(coeffs, NORM, (-0.8, 0.7, -0.9, 0.6)))


@pytest.mark.parametrize("block", [(0, 800, 0, 600), (37, 81, 590, 600), (700, 701, 5, 9)])
def test_grid_evaluators_equal_the_point_evaluator(clipped, block):
    x0, x1, y0, y1 = block
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    sx, sy = clipped(xx, yy)
    coords = clipped.source_coords(np, x0, x1, y0, y1)
    assert coords.shape == (2, y1 - y0, x1 - x0) and coords.dtype == np.float64
    np.testing.assert_allclose(coords[1], sx, rtol=0, atol=1e-9)
    np.testing.assert_allclose(coords[0], sy, rtol=0, atol=1e-9)
    gx, gy = clipped.evaluate_grid(np, x0, x1, y0, y1)
    np.testing.assert_array_equal(gx, coords[1])
    np.testing.assert_array_equal(gy, coords[0])


def test_linear_grid_is_exact():
    """No surfaces: ``m00 x + (m01 y + m02)`` per pixel, bit for bit (the row term once)."""
    t = Transform(MATRIX)
    coords = t.source_coords(np, 3, 9, 4, 7)
    yy, xx = np.mgrid[4:7, 3:9].astype(np.float64)
    np.testing.assert_array_equal(coords[1], MATRIX[0, 0] * xx + (MATRIX[0, 1] * yy
                                                                  + MATRIX[0, 2]))
    np.testing.assert_array_equal(coords[0], MATRIX[1, 0] * xx + (MATRIX[1, 1] * yy
                                                                  + MATRIX[1, 2]))
    # __call__ sums left to right: the same to the last bit or two
    np.testing.assert_allclose(coords[1], t(xx, yy)[0], rtol=1e-15, atol=0)


def test_jacobian_grid_matches_finite_differences(clipped):
    # (avoid the clip's kinks: the derivative jumps there)
    x0, x1, y0, y1 = 100, 700, 50, 500
    jac = clipped.jacobian_grid(np, x0, x1, y0, y1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, v = (xx - NORM[0]) / NORM[2], (yy - NORM[1]) / NORM[3]
    lo, hi = clipped.clip[0::2], clipped.clip[1::2]
    eps = 1e-3
    away = ((np.abs(u - lo[0]) > 2 * eps / NORM[2]) & (np.abs(u - hi[0]) > 2 * eps / NORM[2])
            & (np.abs(v - lo[1]) > 2 * eps / NORM[3]) & (np.abs(v - hi[1]) > 2 * eps / NORM[3]))
    fx = [(a - b) / (2 * eps) for a, b in zip(clipped(xx + eps, yy), clipped(xx - eps, yy),
                                             strict=True)]
    fy = [(a - b) / (2 * eps) for a, b in zip(clipped(xx, yy + eps), clipped(xx, yy - eps),
                                             strict=True)]
    expected = [fx[0], fy[0], fx[1], fy[1]]  # dsx/dx, dsx/dy, dsy/dx, dsy/dy
    for got, want in zip(jac, expected, strict=True):
        assert got.shape == (y1 - y0, x1 - x0)
        np.testing.assert_allclose(got[away], want[away], rtol=0, atol=1e-7)
    # outside the clip box in u the surfaces' x-derivatives vanish: the linear part's
    outside = u > hi[0]
    assert outside.any()
    np.testing.assert_allclose(jac[0][outside], MATRIX[0, 0], atol=0)
    np.testing.assert_allclose(jac[2][outside], MATRIX[1, 0], atol=0)
    det = jac[0] * jac[3] - jac[1] * jac[2]
    np.testing.assert_allclose(det[::50, ::50], clipped.jacobian_det(xx, yy)[::50, ::50],
                               rtol=1e-6)


def test_dict_round_trips_are_exact(clipped):
    d = clipped.distortion
    back = PolynomialDistortion.from_dict(json.loads(json.dumps(d.to_dict())))
    np.testing.assert_array_equal(back.coeffs, d.coeffs)
    assert back.norm == d.norm and back.clip == d.clip
    assert model_from_dict(d.to_dict()).__class__ is PolynomialDistortion
    # awkward floats survive the Transform's JSON form bit for bit
    m = np.array([[np.pi / 3, -1e-17, 1 / 3], [2 / 7, 0.1 + 0.2, 1e300]])
    t = Transform(m, d.coeffs * np.e, (1 / 3, 2 / 3, 1e-3, 7.0), d.clip)
    t2 = Transform.from_dict(json.loads(json.dumps(t.to_dict())))
    assert t2.matrix.tobytes() == t.matrix.tobytes()
    assert t2.coeffs.tobytes() == t.coeffs.tobytes()
    assert t2.norm == t.norm and t2.clip == t.clip
    # a linear transform: no coefficients, an unbounded clip (JSON's -Infinity)
    lin = Transform.from_dict(json.loads(json.dumps(Transform(m).to_dict())))
    assert not lin.has_distortion and lin.clip == (-np.inf, np.inf, -np.inf, np.inf)
    # the historic file layout: matrix, coeffs, norm, clip at the top level
    assert set(t.to_dict()) == {"matrix", "coeffs", "norm", "clip"}


def test_shifted_is_the_same_mapping_seen_from_an_offset_grid(clipped):
    ox, oy = 37, -12
    s = clipped.shifted(ox, oy)
    yy, xx = np.mgrid[0:600:7, 0:800:9].astype(np.float64)
    a = np.column_stack(s(xx.ravel(), yy.ravel()))
    b = np.column_stack(clipped(xx.ravel() - ox, yy.ravel() - oy))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    x0, x1, y0, y1 = s.support_box()
    bx0, bx1, by0, by1 = clipped.support_box()
    assert (x0, x1, y0, y1) == pytest.approx((bx0 + ox, bx1 + ox, by0 + oy, by1 + oy))
    np.testing.assert_array_equal(clipped.shifted(0, 0).matrix, clipped.matrix)


def test_legacy_constructor_equals_the_model_one():
    coeffs = random_coeffs(3, seed=5)
    clip = (-1.1, 1.0, -0.95, 1.05)
    a = Transform(MATRIX, coeffs, NORM, clip)
    b = Transform(MATRIX, PolynomialDistortion(coeffs, NORM, clip))
    c = Transform(MATRIX, distortion=PolynomialDistortion(coeffs, NORM, clip))
    yy, xx = np.mgrid[-50:650:13, -50:850:11].astype(np.float64)
    for t in (b, c):
        assert t.to_dict() == a.to_dict()
        np.testing.assert_array_equal(np.column_stack(t(xx, yy)), np.column_stack(a(xx, yy)))
    # defaults: no surfaces, unit norm, no clip
    d = Transform(MATRIX)
    assert d.norm == (0.0, 0.0, 1.0, 1.0) and d.clip == (-np.inf, np.inf, -np.inf, np.inf)
    assert d.degree == 1 and not d.has_distortion and d.support_box() is None
    # all-zero coefficients are no distortion
    assert not Transform(MATRIX, np.zeros((2, 4, 4)), NORM).has_distortion


def test_registry():
    assert model_class("poly") is PolynomialDistortion
    assert "poly" in model_names()
    with pytest.raises(KeyError, match="unknown distortion model 'spline'.*poly"):
        model_class("spline")
    with pytest.raises(KeyError):
        model_from_dict({"model": "nope", "coeffs": [], "norm": [0, 0, 1, 1]})
