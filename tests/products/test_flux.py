"""Flux conservation: ``conserve_flux=True`` multiplies by |det J| of the full mapping.

A simulated pair whose source pixels are 1.2x smaller than the template's (scale 1.2:
template distances look 1.2x longer in the source) is aligned, and the same bright,
isolated stars are measured by aperture photometry in the source and in the output.
Kept flux: ratio 1 within 0.5%; kept surface brightness (the default, as spalipy and
astroalign do): 1/1.2**2 = 0.694.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

import gpualign
from gpualign.products._flux import jacobian_det_grid
from gpualign.transform._transform import Transform

T_SHAPE = (512, 512)
S_SHAPE = (620, 620)


def aperture_sum(img: np.ndarray, x: float, y: float, r: float) -> float:
    """Sum within radius r minus the median of an annulus (r+4 .. r+10) times the area."""
    h, w = img.shape
    y0, y1 = int(max(y - r - 11, 0)), int(min(y + r + 12, h))
    x0, x1 = int(max(x - r - 11, 0)), int(min(x + r + 12, w))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(xx - x, yy - y)
    cut = img[y0:y1, x0:x1]
    ap = d <= r
    ann = (d >= r + 4) & (d <= r + 10)
    return float(cut[ap].sum() - np.median(cut[ann]) * ap.sum())


def bright_isolated(pair, n: int = 40, r: float = 12.0) -> np.ndarray:
    """Indices of bright stars well inside both images with no bright neighbour."""
    xy, f = pair.template_xy, pair.flux
    tree = cKDTree(xy)
    idx = []
    for i in np.argsort(-f):
        x, y = xy[i]
        sx, sy = pair.source_xy[i]
        if not (r + 12 < x < T_SHAPE[1] - r - 12 and r + 12 < y < T_SHAPE[0] - r - 12):
            continue
        if not (1.2 * r + 12 < sx < S_SHAPE[1] - 1.2 * r - 12
                and 1.2 * r + 12 < sy < S_SHAPE[0] - 1.2 * r - 12):
            continue
        near = tree.query_ball_point(xy[i], r + 12)
        if any(j != i and f[j] > 0.02 * f[i] for j in near):
            continue
        idx.append(i)
        if len(idx) == n:
            break
    return np.array(idx)


PAIR_KW = dict(scale=1.2, rotation_deg=17.0, shift=(4.1, -3.3), n_stars=300,
               fwhm_template=3.0, fwhm_source=3.6, flux_range=(2e4, 2e6), seed=21)


@pytest.fixture(scope="module")
def scaled_pair(make_pair):
    return make_pair(T_SHAPE, S_SHAPE, **PAIR_KW)


@pytest.mark.parametrize("conserve, want", [(True, 1.0), (False, 1 / 1.2**2)])
def test_aperture_flux_ratio(conserve, want, scaled_pair):
    pair = scaled_pair
    res = gpualign.align(pair.source, pair.template, backend="numpy", conserve_flux=conserve)
    assert res.conserve_flux is conserve
    assert res.header["GA_FLUX"] is conserve
    idx = bright_isolated(pair)
    assert len(idx) >= 15
    r = 12.0
    f_out = sum(aperture_sum(res.data, *pair.template_xy[i], r) for i in idx)
    f_src = sum(aperture_sum(pair.source, *pair.source_xy[i], 1.2 * r) for i in idx)
    ratio = f_out / f_src
    assert ratio == pytest.approx(want, rel=0.005), ratio
    # star by star too (each within 2%)
    each = np.array([aperture_sum(res.data, *pair.template_xy[i], r)
                     / aperture_sum(pair.source, *pair.source_xy[i], 1.2 * r) for i in idx])
    assert np.all(np.abs(each / want - 1) < 0.03), each


@pytest.mark.parametrize("conserve, want", [(True, 1.0), (False, 1 / 1.2**2)])
def test_aperture_flux_ratio_noiseless(conserve, want, scaled_pair, make_pair, solve_pair):
    """The mapping found on the noisy pair applied to the noiseless rendering of the same
    sky: the resampling's own flux error, free of photometric noise (every star, 0.1%)."""
    clean = make_pair(T_SHAPE, S_SHAPE, noise=False, **PAIR_KW)
    np.testing.assert_array_equal(clean.template_xy, scaled_pair.template_xy)
    sol = solve_pair(scaled_pair)
    res = gpualign.apply_transform(sol, clean.source, conserve_flux=conserve, backend="numpy")
    idx = bright_isolated(clean)
    each = np.array([aperture_sum(res.data, *clean.template_xy[i], 12.0)
                     / aperture_sum(clean.source, *clean.source_xy[i], 14.4) for i in idx])
    np.testing.assert_allclose(each, want, rtol=1e-3)


def test_distorted_field_conserves_flux(make_pair):
    pair = make_pair(T_SHAPE, S_SHAPE, scale=1.2, rotation_deg=-40.0, shift=(2.0, 1.0),
                     corner_distortion_px=8.0, n_stars=300, fwhm_template=3.0,
                     fwhm_source=3.6, flux_range=(2e4, 2e6), seed=22)
    res = gpualign.align(pair.source, pair.template, backend="numpy", conserve_flux=True)
    assert res.solution.degree >= 3
    idx = bright_isolated(pair)
    f_out = sum(aperture_sum(res.data, *pair.template_xy[i], 12.0) for i in idx)
    f_src = sum(aperture_sum(pair.source, *pair.source_xy[i], 14.4) for i in idx)
    assert f_out / f_src == pytest.approx(1.0, rel=0.005)


def test_analytic_jacobian_matches_finite_differences():
    m = np.array([[1.1, 0.2, 3.0], [-0.15, 0.95, -2.0]])
    coeffs = np.zeros((2, 5, 5))
    coeffs[0, 2, 0], coeffs[0, 1, 2], coeffs[1, 0, 3], coeffs[1, 4, 0] = 2.0, -1.0, 0.7, 0.5
    t = Transform(m, coeffs, (100.0, 80.0, 100.0, 80.0), (-0.8, 0.9, -1.0, 0.7))
    j = jacobian_det_grid(t, np, 0, 200, 0, 160)
    yy, xx = np.mgrid[0:160, 0:200].astype(float)
    fd = t.jacobian_det(xx, yy, eps=1e-4)
    u, v = (xx - 100) / 100, (yy - 80) / 80
    away = (np.abs(u - (-0.8)) > 0.01) & (np.abs(u - 0.9) > 0.01) & \
        (np.abs(v + 1.0) > 0.01) & (np.abs(v - 0.7) > 0.01)  # not on a clip edge
    np.testing.assert_allclose(j[away], fd[away], rtol=1e-6)
    assert not np.allclose(j, np.linalg.det(m[:, :2]))  # the surfaces count


def test_constant_image_becomes_the_jacobian():
    m = np.array([[1.3, 0.1, 3.0], [-0.1, 1.25, 2.0]])
    coeffs = np.zeros((2, 4, 4))
    coeffs[0, 3, 0], coeffs[1, 1, 1] = 1.5, -0.8
    t = Transform(m, coeffs, (32.0, 32.0, 32.0, 32.0), (-1.0, 1.0, -1.0, 1.0))
    flat = np.full((120, 120), 5.0, np.float32)
    res = gpualign.apply_transform(t, flat, (64, 64), conserve_flux=True, backend="numpy")
    j = np.abs(jacobian_det_grid(t, np, 0, 64, 0, 64))
    np.testing.assert_allclose(res.data[res.footprint], 5.0 * j[res.footprint], rtol=1e-5)
    assert res.footprint.mean() > 0.5
    # cval stays cval outside the footprint
    res = gpualign.apply_transform(t, flat, (64, 64), conserve_flux=True, cval=-3.0,
                                   backend="numpy")
    assert np.all(res.data[~res.footprint] == -3.0)
