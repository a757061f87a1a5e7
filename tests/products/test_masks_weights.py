"""Masks and weights: bitmasks carried bit by bit, variance maps propagated, NDData round trips.

* Bitmask: an output pixel has bit b set iff a source pixel within the kernel's reach
  (Chebyshev distance ``kernel_reach(order)`` of the nearest source pixel to the sampled
  position, gpualign.warp._resample.kernel_reach) has it, checked against a brute-force OR.
* Variance: the warp is linear, so the exact output variance of independent source
  pixels is ``sum_k c_k**2 var_k`` with ``c_k`` the warp's own weights; these are read
  off by warping unit impulses, and a Monte Carlo of noise realisations checks the
  same thing statistically.
* NDData / CCDData in and out: mask, uncertainty (as variance), WCS, meta and unit.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (
    CCDData,
    InverseVariance,
    NDData,
    StdDevUncertainty,
    VarianceUncertainty,
)
from astropy.wcs import WCS

import gpualign
from gpualign.products._flux import jacobian_det_grid
from gpualign.products._variance import resample_variance
from gpualign.transform._transform import Transform
from gpualign.warp._resample import kernel_reach, warp

BE = gpualign.get_backend("numpy")


def rotation_transform(deg: float = 23.0, scale: float = 1.1, shift=(3.2, -2.7),
                       distortion: bool = False, size: float = 16.0) -> Transform:
    th = np.deg2rad(deg)
    lin = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c = np.array([size / 2, size / 2])
    m = np.column_stack([lin, c + np.asarray(shift) - lin @ c])
    if not distortion:
        return Transform(m)
    coeffs = np.zeros((2, 4, 4))
    coeffs[0, 2, 0], coeffs[1, 1, 1], coeffs[0, 0, 3] = 0.6, -0.4, 0.3
    return Transform(m, coeffs, (c[0], c[1], size / 2, size / 2), (-1.5, 1.5, -1.5, 1.5))


# ----------------------------------------------------------------------------- bitmasks

def brute_force_or(mask: np.ndarray, t: Transform, out_shape, order: int) -> np.ndarray:
    h, w = mask.shape
    r = kernel_reach(order)
    out = np.zeros(out_shape, dtype=np.uint64)
    for y in range(out_shape[0]):
        for x in range(out_shape[1]):
            sx, sy = t(float(x), float(y))
            ix, iy = int(np.floor(sx + 0.5)), int(np.floor(sy + 0.5))
            win = mask[max(iy - r, 0):min(iy + r, h - 1) + 1,
                       max(ix - r, 0):min(ix + r, w - 1) + 1]
            out[y, x] = np.bitwise_or.reduce(win.astype(np.uint64), axis=None) if win.size else 0
    return out


@pytest.mark.parametrize("order", range(6))
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_bitmask_or_of_bits_within_reach(order, dtype):
    rng = np.random.default_rng(order)
    shape = (40, 44)
    mask = np.zeros(shape, dtype=dtype)
    for bit in (0, 3, 7, 12):
        idx = rng.choice(mask.size, 25, replace=False)
        mask.flat[idx] |= dtype(1 << bit)
    mask[10:13, 5:30] |= dtype(1 << 5)  # a trail
    t = rotation_transform(31.0, 0.93, (1.7, 2.3), distortion=True, size=40.0)
    res = warp(np.ones(shape, np.float32), t, (38, 41), backend=BE, order=order, mask=mask)
    assert res.mask.dtype == dtype
    want = brute_force_or(mask, t, (38, 41), order)
    inside = res.footprint
    assert inside.mean() > 0.6
    np.testing.assert_array_equal(res.mask[inside].astype(np.uint64), want[inside])
    # every bit present in the source shows up somewhere in the output
    for bit in (0, 3, 5, 7, 12):
        assert ((res.mask[inside] >> bit) & 1).any()


def test_bitmask_through_align_and_apply(make_pair):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, n_stars=250, seed=12)
    mask = np.zeros(pair.source.shape, np.uint8)
    mask[100:104, :] = 4
    mask[:, 50] |= 1
    mask[200, 200] = 128
    res = gpualign.align(pair.source, pair.template, backend="numpy", source_mask=mask,
                         interp_order=3)
    again = gpualign.apply_transform(res.solution, pair.source, pair.template.shape, mask=mask,
                                     backend="numpy")
    np.testing.assert_array_equal(res.mask, again.mask)
    want = brute_force_or(mask, res.transform, (256, 256), 3)
    np.testing.assert_array_equal(res.mask[res.footprint], want[res.footprint])


# ----------------------------------------------------------------------------- variance

def impulse_weights(t: Transform, shape, out_shape, order: int) -> np.ndarray:
    """c[k, y, x]: the warp's weight of source pixel k in output pixel (x, y)."""
    h, w = shape
    c = np.zeros((h * w,) + tuple(out_shape))
    for k in range(h * w):
        e = np.zeros(h * w, np.float32)
        e[k] = 1.0
        c[k] = warp(e.reshape(shape), t, out_shape, backend=BE, order=order, cval=0.0,
                    threads=1).data
    return c


@pytest.mark.parametrize("distortion", [False, True])
def test_variance_equals_the_warps_squared_weights(distortion):
    shape = (14, 16)
    t = rotation_transform(23.0, 1.1, (0.7, -0.4), distortion=distortion)
    rng = np.random.default_rng(0)
    var = rng.uniform(0.5, 5.0, shape)
    for order in range(6):
        c = impulse_weights(t, shape, shape, order)
        exact = np.einsum("kyx,k->yx", c**2, var.ravel())
        got = resample_variance(var, t, shape, order)
        foot = warp(np.ones(shape, np.float32), t, shape, backend=BE, order=order).footprint
        assert foot.sum() > 100
        tol = 1e-6 if order <= 1 else 1e-4  # orders 2-5: truncated cardinal weights
        np.testing.assert_allclose(got[foot], exact[foot], rtol=tol)


@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_variance_against_monte_carlo(order):
    shape = (24, 24)
    rng = np.random.default_rng(10 + order)
    var = rng.uniform(0.5, 8.0, shape)
    var[5:8, :] = 30.0  # a noisy band
    t = rotation_transform(37.0, 0.9, (0.3, 0.8), size=24.0)
    n = 2500
    noise = rng.standard_normal((n,) + shape) * np.sqrt(var)
    outs = np.stack([warp(z.astype(np.float32), t, shape, backend=BE, order=order,
                          threads=1).data for z in noise])
    emp = outs.var(axis=0, ddof=1)
    pred = resample_variance(var, t, shape, order)
    foot = np.isfinite(outs[0])
    ratio = emp[foot] / pred[foot]
    assert abs(ratio.mean() - 1) < 0.01, ratio.mean()
    assert np.all(np.abs(ratio - 1) < 6 * np.sqrt(2 / n)), np.abs(ratio - 1).max()
    # interpolation averages noise: below the source variance for order >= 1
    if order >= 1:
        near = resample_variance(var, t, shape, 0)
        assert np.median(pred[foot] / near[foot]) < 0.95


def test_weight_types_and_zero_weights():
    rng = np.random.default_rng(3)
    shape = (60, 64)
    data = rng.normal(100, 3, shape).astype(np.float32)
    var = rng.uniform(1.0, 4.0, shape)
    t = rotation_transform(15.0, 1.05, (1.0, 2.0), size=60.0)
    outs = {}
    for kind, w in (("variance", var), ("inverse_variance", 1 / var), ("stddev", np.sqrt(var))):
        r = gpualign.apply_transform(t, data, shape, source_weight=w, weight_type=kind,
                                     backend="numpy")
        assert r.weight_type == kind
        outs[kind] = r
    f = outs["variance"].footprint
    v = outs["variance"].weight
    np.testing.assert_allclose(outs["inverse_variance"].weight[f], 1 / v[f], rtol=1e-5)
    np.testing.assert_allclose(outs["stddev"].weight[f] ** 2, v[f], rtol=1e-5)
    assert np.isnan(v[~f]).all() and (outs["inverse_variance"].weight[~f] == 0).all()
    # a zero inverse variance (no information) gives zero weight within the kernel's reach
    ivar = 1 / var
    ivar[30, 30] = 0.0
    r = gpualign.apply_transform(t, data, shape, source_weight=ivar,
                                 weight_type="inverse_variance", backend="numpy",
                                 interp_order=1)
    zero = (r.weight == 0) & r.footprint
    assert 1 <= zero.sum() <= 9
    with pytest.raises(gpualign.InputError, match="weight_type"):
        gpualign.apply_transform(t, data, shape, source_weight=var, weight_type="sigma",
                                 backend="numpy")
    with pytest.raises(gpualign.InputError, match="shape"):
        gpualign.apply_transform(t, data, shape, source_weight=var[:10], backend="numpy")


def test_variance_with_flux_conservation_scales_by_jacobian_squared():
    rng = np.random.default_rng(4)
    shape = (48, 48)
    data = rng.normal(100, 3, shape).astype(np.float32)
    var = rng.uniform(1.0, 4.0, shape)
    t = rotation_transform(20.0, 1.2, (0.5, 0.5), distortion=True, size=48.0)
    a = gpualign.apply_transform(t, data, shape, source_weight=var, backend="numpy")
    b = gpualign.apply_transform(t, data, shape, source_weight=var, backend="numpy",
                                 conserve_flux=True)
    j = np.abs(jacobian_det_grid(t, np, 0, 48, 0, 48))
    f = a.footprint
    np.testing.assert_allclose(b.data[f], a.data[f] * j[f], rtol=1e-5)
    np.testing.assert_allclose(b.weight[f], a.weight[f] * j[f] ** 2, rtol=1e-5)


# ----------------------------------------------------------------------------- NDData

def sky_wcs(shape, crval=(150.1, 2.2)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.crval = list(crval)
    w.wcs.cd = [[-5e-5, 0.0], [0.0, 5e-5]]
    return w


def test_nddata_identity_round_trip():
    """Through the identity mapping (order 0: reach 0, exact), NDData comes back unchanged."""
    rng = np.random.default_rng(5)
    shape = (50, 60)
    data = rng.normal(10, 1, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[10:12, 20:25] = True
    std = rng.uniform(0.5, 2, shape)
    w = sky_wcs(shape)
    nd = NDData(data, mask=mask, uncertainty=StdDevUncertainty(std), wcs=w,
                meta={"OBJECT": "X", "EXPTIME": 30.0}, unit=u.electron)
    r = gpualign.apply_transform(Transform.from_matrix(np.eye(2, 3)), nd, shape,
                                 interp_order=0, backend="numpy")
    out = r.to_nddata()
    np.testing.assert_array_equal(out.data, data)
    np.testing.assert_array_equal(out.mask, mask)
    assert isinstance(out.uncertainty, VarianceUncertainty)
    np.testing.assert_allclose(out.uncertainty.array, std**2, rtol=1e-6)
    assert out.meta["OBJECT"] == "X" and out.meta["EXPTIME"] == 30.0
    assert out.unit == u.electron
    yy, xx = np.mgrid[0:shape[0]:7, 0:shape[1]:7]
    np.testing.assert_allclose(np.array(out.wcs.all_pix2world(xx, yy, 0)),
                               np.array(w.all_pix2world(xx, yy, 0)), atol=1e-12)


def test_nddata_source_through_align(make_pair, tmp_path):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, n_stars=250, seed=12)
    shape = pair.source.shape
    mask = np.zeros(shape, bool)
    mask[60:64, 30:90] = True
    var = np.full(shape, 25.0) + pair.source.clip(0) / 2.0
    src = CCDData(pair.source, mask=mask, uncertainty=InverseVariance(1 / var), unit="adu",
                  wcs=sky_wcs(shape), meta={"FILTER": "r"})
    tw = sky_wcs(shape, crval=(150.1003, 2.2001))
    tmpl = NDData(pair.template, wcs=tw)
    r = gpualign.align(src, tmpl, backend="numpy")
    plain = gpualign.align(np.ma.masked_array(pair.source, mask), pair.template,
                           backend="numpy")
    np.testing.assert_array_equal(r.data, plain.data)
    np.testing.assert_array_equal(r.mask, plain.mask)
    f = r.footprint
    np.testing.assert_allclose(r.weight[f], resample_variance(var, r.transform, shape, 3)[f],
                               rtol=1e-5)
    assert np.isnan(r.weight[~f]).all()
    assert r.weight_type == "variance"
    ccd = r.to_ccddata()
    assert ccd.unit == u.adu and ccd.meta["FILTER"] == "r"
    np.testing.assert_array_equal(ccd.mask, plain.mask | ~plain.footprint)
    # the output carries the template's WCS
    np.testing.assert_allclose(ccd.wcs.wcs.crval, tw.wcs.crval)
    # CCDData file round trip: data, mask, variance, WCS and meta
    path = tmp_path / "out.fits"
    ccd.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
    back = CCDData.read(path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
    np.testing.assert_array_equal(back.data, ccd.data)
    np.testing.assert_array_equal(back.mask, ccd.mask)
    np.testing.assert_allclose(back.uncertainty.array, ccd.uncertainty.array)
    assert back.meta["FILTER"] == "r" and back.meta["GA_WCS"] == "template"
    np.testing.assert_allclose(back.wcs.wcs.crval, tw.wcs.crval)


def test_fits_bitmask_and_weight_hdus_read_by_extension(tmp_path, make_pair):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, n_stars=250, seed=12)
    mask = np.zeros(pair.source.shape, np.int16)
    mask[40:42, :] = 6
    path = tmp_path / "src.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(pair.source, name="SCI"),
                  fits.ImageHDU(mask, name="DQ"),
                  fits.ImageHDU(np.full(pair.source.shape, 4.0, np.float32), name="VAR")]
                 ).writeto(path)
    from gpualign.io import load_mask, load_weight

    m = load_mask(path, pair.source.shape, ext="DQ")
    assert m.dtype == np.int16 and (m == mask).all()
    w = load_weight(path, pair.source.shape, ext="VAR")
    r = gpualign.align(str(path), pair.template, source_ext="SCI", source_mask=m,
                       source_weight=w, backend="numpy")
    assert r.mask.dtype == np.int16 and set(np.unique(r.mask)) == {0, 6}
    # interpolation averages: below 4 inside (above only at the mirror-reflected edges)
    assert np.nanmedian(r.weight) < 4.0 and np.nanmax(r.weight) < 4.5
