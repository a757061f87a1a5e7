"""The warp (``apply_transform`` / ``gpualign.warp._resample.warp``) against analytic truth.

A smooth analytic image sampled on the source grid is resampled through a known
transform (rotation, scale, shift and distortion surfaces); the output must
approach the analytic function at the mapped positions, better with each spline
order; outside the footprint it is ``cval``; the footprint is exactly the
transform's inside test; masks carry the OR of the bits within the kernel's reach;
tiles and threads do not change a single bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import gpualign
from gpualign.transform._transform import Transform
from gpualign.warp._resample import warp

H, W = 200, 260  # source
OUT = (180, 240)  # output grid, another shape


def analytic(x, y):
    """Smooth: wavelengths of 25-40 px."""
    return (np.sin(2 * np.pi * (0.031 * x + 0.017 * y))
            + 0.5 * np.cos(2 * np.pi * (-0.023 * x + 0.041 * y)))


def distorted_transform(shift=(40.3, -20.7)) -> Transform:
    th = np.deg2rad(17.0)
    m = np.array([[0.93 * np.cos(th), -0.93 * np.sin(th), shift[0]],
                  [0.93 * np.sin(th), 0.93 * np.cos(th), shift[1]]])
    c = np.zeros((2, 4, 4))
    c[0, 2, 0], c[1, 1, 1], c[0, 0, 3], c[1, 2, 1] = 1.5, -1.0, 0.6, 0.4
    return Transform(m, c, (120.0, 90.0, 130.0, 100.0))


@pytest.fixture(scope="module")
def setup():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    src = analytic(xx, yy).astype(np.float32)
    t = distorted_transform()
    oy, ox = np.mgrid[0:OUT[0], 0:OUT[1]].astype(np.float64)
    sx, sy = t(ox, oy)
    return src, t, sx, sy


@pytest.fixture(scope="module")
def by_order(setup):
    src, t, _, _ = setup
    return {k: gpualign.apply_transform(t, src, OUT, interp_order=k, backend="numpy")
            for k in range(6)}


def test_error_shrinks_with_order(setup, by_order):
    """RMS error vs the analytic truth, 15 px inside the source (away from the mirror
    boundary, whose influence on the prefilter grows with the order)."""
    _, _, sx, sy = setup
    truth = analytic(sx, sy)
    inner = (sx > 15) & (sx < W - 16) & (sy > 15) & (sy < H - 16)
    assert inner.mean() > 0.7
    err = {k: float(np.sqrt(np.mean((r.data[inner] - truth[inner]) ** 2)))
           for k, r in by_order.items()}
    assert err[0] < 0.1  # nearest pixel: about the gradient times a quarter pixel
    for k in (1, 2, 3):
        assert err[k + 1] < err[k] / 2, err
    assert err[5] < err[4], err
    assert err[3] < 1e-5 and err[5] < 1e-7, err  # order 5 is at float32's floor


def test_matches_the_reference_semantics(setup, by_order):
    """Inside the footprint, each order equals scipy's map_coordinates (mirror mode),
    the contract of DESIGN.md, up to float32 storage."""
    src, _, sx, sy = setup
    for k, r in by_order.items():
        ref = ndimage.map_coordinates(src.astype(np.float64), [sy, sx], order=k, mode="mirror")
        f = r.footprint
        tol = 1e-6 if k > 0 else 0.0
        if k == 0:  # nearest: away from exact half-pixel ties, identical values
            tie = (np.abs(sx - np.floor(sx) - 0.5) < 1e-6) | (np.abs(sy - np.floor(sy) - 0.5)
                                                              < 1e-6)
            f = f & ~tie
        assert np.max(np.abs(r.data[f] - ref[f])) <= tol + 2e-6, k


def test_cval_outside_the_footprint(setup):
    src, t, sx, sy = setup
    for cval in (np.nan, -999.0, 0.0):
        r = gpualign.apply_transform(t, src, OUT, cval=cval, backend="numpy")
        out = ~r.footprint
        assert out.sum() > 500 and r.footprint.sum() > 10_000
        if np.isnan(cval):
            assert np.isnan(r.data[out]).all()
        else:
            assert np.all(r.data[out] == cval)
        assert np.isfinite(r.data[r.footprint]).all()
        assert np.all(r.data[r.footprint] != -999.0)


def _inside(sx, sy, shape):
    return (sx >= -0.5) & (sx <= shape[1] - 0.5) & (sy >= -0.5) & (sy <= shape[0] - 0.5)


def test_footprint_is_the_inside_test(setup, by_order):
    src, t, sx, sy = setup
    expect = _inside(sx, sy, src.shape)
    for r in by_order.values():
        differ = r.footprint != expect
        # only where the host and the tile evaluation of T could round differently
        d = np.minimum.reduce([np.abs(sx + 0.5), np.abs(sx - (W - 0.5)),
                               np.abs(sy + 0.5), np.abs(sy - (H - 0.5))])
        assert np.all(d[differ] < 1e-9)


def test_footprint_boundaries_exact():
    """Half-pixel shifts put output pixels exactly on the -0.5 / W-0.5 edges: inside."""
    src = np.ones((20, 30), np.float32)
    for shift in (-0.5, 0.5, -1.5, 1.5):
        t = Transform.from_matrix(np.array([[1.0, 0.0, shift], [0.0, 1.0, shift]]))
        r = gpualign.apply_transform(t, src, (20, 30), interp_order=1, backend="numpy")
        x = np.arange(30) + shift
        y = np.arange(20) + shift
        expect = (((y >= -0.5) & (y <= 19.5))[:, None] & ((x >= -0.5) & (x <= 29.5))[None, :])
        assert np.array_equal(r.footprint, expect), shift
        assert np.allclose(r.data[expect], 1.0)


def test_output_shape_differs_from_source(setup):
    src, t, sx, sy = setup
    for given in [(50, 400), (300, 90), (1, 1), (17, 3), np.array([40, 50]), [9, 8]]:
        shape = tuple(int(v) for v in given)
        r = gpualign.apply_transform(t, src, given, interp_order=3, backend="numpy")
        assert r.data.shape == shape and r.footprint.shape == shape
        ref = gpualign.apply_transform(t, src, OUT, interp_order=3, backend="numpy")
        ny, nx = min(shape[0], OUT[0]), min(shape[1], OUT[1])
        # the output grid is the template's: a bigger or smaller window of the same pixels
        assert np.array_equal(r.data[:ny, :nx], ref.data[:ny, :nx], equal_nan=True)
        assert np.array_equal(r.footprint[:ny, :nx], ref.footprint[:ny, :nx])


def test_float64_output_when_asked(setup, by_order):
    src, t, _, _ = setup
    r64 = gpualign.apply_transform(t, src, OUT, dtype=np.float64, backend="numpy")
    r32 = by_order[3]
    assert r64.data.dtype == np.float64 and r32.data.dtype == np.float32
    assert np.array_equal(r64.footprint, r32.footprint)
    assert np.allclose(r64.data, r32.data, equal_nan=True, rtol=0, atol=1e-6)
    r = gpualign.apply_transform(t, src.astype(np.float64), OUT, dtype=np.float64,
                                 backend="numpy")
    assert r.data.dtype == np.float64


def _reference_mask(mask: np.ndarray, sx, sy, order: int) -> np.ndarray:
    """OR of the mask values within the kernel's reach of the nearest source pixel."""
    r = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3}[order]  # B-spline support around round(s)
    h, w = mask.shape
    ix = np.clip(np.floor(sx + 0.5).astype(np.int64), 0, w - 1)
    iy = np.clip(np.floor(sy + 0.5).astype(np.int64), 0, h - 1)
    out = np.zeros(sx.shape, dtype=mask.dtype if mask.dtype != bool else np.uint8)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            jy = np.clip(iy + dy, 0, h - 1)
            jx = np.clip(ix + dx, 0, w - 1)
            out |= mask[jy, jx].astype(out.dtype)
    return out


@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_boolean_mask_carried(order, setup):
    src, t, sx, sy = setup
    rng = np.random.default_rng(order)
    mask = np.zeros(src.shape, bool)
    mask[rng.integers(0, H, 60), rng.integers(0, W, 60)] = True
    mask[100:104, :] = True  # a bad row
    r = gpualign.apply_transform(t, src, OUT, interp_order=order, mask=mask, backend="numpy")
    assert r.mask.dtype == bool and r.mask.shape == OUT
    expect = _reference_mask(mask, sx, sy, order).astype(bool)
    f = r.footprint
    assert np.array_equal(r.mask[f], expect[f])
    assert r.mask[f].sum() > 100
    # the data are untouched by the mask (it is carried, not applied)
    plain = gpualign.apply_transform(t, src, OUT, interp_order=order, backend="numpy")
    assert np.array_equal(r.data, plain.data, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_bitmask_carried_as_or_of_bits(dtype, setup):
    src, t, sx, sy = setup
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).bits - (1 if np.issubdtype(dtype, np.signedinteger) else 0)
    bits = [0, 2, top - 1]
    mask = np.zeros(src.shape, dtype)
    for b in bits:
        n = 200
        mask[rng.integers(0, H, n), rng.integers(0, W, n)] |= dtype(1) << dtype(b)
    r = gpualign.apply_transform(t, src, OUT, interp_order=3, mask=mask, backend="numpy")
    assert r.mask.dtype == np.dtype(dtype)
    expect = _reference_mask(mask, sx, sy, 3)
    f = r.footprint
    assert np.array_equal(r.mask[f], expect[f])
    # several bits meet in one output pixel somewhere
    multi = [int(v).bit_count() > 1 for v in np.unique(r.mask[f])]
    assert any(multi)
    assert set(np.unique(r.mask[f])) <= set(np.unique(expect))


def test_nan_pixels_leave_the_footprint(setup):
    src, t, sx, sy = setup
    s = src.copy()
    s[50:60, 80:95] = np.nan
    r = gpualign.apply_transform(t, s, OUT, interp_order=3, backend="numpy")
    hole = (sx > 80 - 2.5) & (sx < 94 + 2.5) & (sy > 50 - 2.5) & (sy < 59 + 2.5)
    near = (sx > 79.5) & (sx < 94.5) & (sy > 49.5) & (sy < 59.5)
    assert not r.footprint[near].any()
    assert np.isnan(r.data[~r.footprint]).all()
    assert np.isfinite(r.data[r.footprint]).all()
    far = _inside(sx, sy, src.shape) & ~hole
    assert r.footprint[far].all()


@pytest.mark.parametrize("order", [1, 3])
def test_tiles_and_threads_do_not_change_the_result(order, setup):
    src, t, _, _ = setup
    be = gpualign.get_backend("numpy")
    mask = np.zeros(src.shape, np.uint16)
    mask[::17, ::13] = 5
    s = src.copy()
    s[20:30, 40:50] = np.nan
    ref = warp(s, t, OUT, backend=be, order=order, mask=mask, tile_rows=OUT[0], threads=1)
    for tile_rows in (1, 7, 64, 179, None):
        for threads in (1, 2):
            r = warp(s, t, OUT, backend=be, order=order, mask=mask, tile_rows=tile_rows,
                     threads=threads)
            assert np.array_equal(r.data, ref.data, equal_nan=True), (tile_rows, threads)
            assert np.array_equal(r.footprint, ref.footprint)
            assert np.array_equal(r.mask, ref.mask)
