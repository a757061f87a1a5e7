"""NaN-safe resampling: NaN/inf source pixels never spread beyond the kernel's reach.

For every interpolation order 0-5 and each kind of bad region (columns, round blobs,
NaN borders as left by an earlier reprojection, scattered +/-inf pixels), the region
the output must leave empty is computed here by brute force from the truth mapping:
the output pixels whose nearest source pixel is bad (the bad area's image; these must
be NaN, no invented data) and those whose nearest source pixel is within the kernel's
reach (Chebyshev distance ``kernel_reach(order)``) of a bad pixel (the image grown by
the reach; NaN may not go beyond it). The footprint must be exactly the inside test
minus that grown region, and the valid pixels far from any bad one must equal the
resampling of the clean image.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import gpualign
from gpualign.backend import get_backend
from gpualign.detect._sep import detect
from gpualign.transform._transform import Transform
from gpualign.warp import _invalid
from gpualign.warp._resample import kernel_reach, warp
from gpualign.warp._sampler import _mask_at

SRC = (150, 170)
OUT = (160, 160)


def truth_transform() -> Transform:
    """Rotation 17 deg, scale 1.04, shift, plus a cubic distortion (template -> source)."""
    th = np.deg2rad(17.0)
    lin = 1.04 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    m = np.column_stack([lin, [12.3, -18.7]])
    coeffs = np.zeros((2, 4, 4))
    coeffs[0, 2, 0], coeffs[0, 1, 1], coeffs[1, 0, 2], coeffs[1, 3, 0] = 1.3, -0.7, 0.9, 0.4
    return Transform(m, coeffs, (79.5, 79.5, 80.0, 80.0), (-1.2, 1.2, -1.2, 1.2))


def clean_source() -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:SRC[0], 0:SRC[1]].astype(float)
    img = 100 + 20 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    for x0, y0, f in zip(rng.uniform(0, SRC[1], 40), rng.uniform(0, SRC[0], 40),
                         rng.uniform(200, 2000, 40), strict=True):
        img += f * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
    return img.astype(np.float32)


def bad_regions(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(bad mask, values to put there) for one kind of defect."""
    bad = np.zeros(SRC, bool)
    val = np.full(SRC, np.nan, np.float32)
    if kind == "columns":
        bad[:, 40:43] = True
        bad[20:120, 101] = True
    elif kind == "blobs":
        yy, xx = np.mgrid[0:SRC[0], 0:SRC[1]]
        bad |= (xx - 60) ** 2 + (yy - 50) ** 2 <= 9**2
        bad |= (xx - 120) ** 2 + (yy - 110) ** 2 <= 4**2
    elif kind == "border":
        bad[:, :12] = True
        bad[:9, :] = True
        bad[-5:, :] = True
    elif kind == "inf":
        rng = np.random.default_rng(2)
        idx = rng.choice(bad.size, 40, replace=False)
        bad.flat[idx] = True
        val.flat[idx[:20]] = np.inf
        val.flat[idx[20:]] = -np.inf
    return bad, val


def expected_regions(t: Transform, bad: np.ndarray, order: int):
    """Inside test, bad area's image and its growth by the kernel reach, by brute force."""
    yy, xx = np.mgrid[0:OUT[0], 0:OUT[1]].astype(float)
    sx, sy = t(xx, yy)
    h, w = bad.shape
    inside = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    ix = np.clip(np.rint(sx), 0, w - 1).astype(int)
    iy = np.clip(np.rint(sy), 0, h - 1).astype(int)
    # chessboard distance from every source pixel to the nearest bad pixel
    dist = ndimage.distance_transform_cdt(~bad, metric="chessboard") if bad.any() else \
        np.full(bad.shape, 10**6)
    image = inside & bad[iy, ix]
    grown = inside & (dist[iy, ix] <= kernel_reach(order))
    far = inside & (dist[iy, ix] > kernel_reach(order) + 12)
    return inside, image, grown, far


KINDS = ["columns", "blobs", "border", "inf"]


@pytest.fixture(scope="module")
def clean_outputs():
    be = gpualign.get_backend("numpy")
    src = clean_source()
    return {o: warp(src, truth_transform(), OUT, backend=be, order=o).data for o in range(6)}


@pytest.mark.parametrize("order", range(6))
@pytest.mark.parametrize("kind", KINDS)
def test_bad_pixels_do_not_spread(kind, order, clean_outputs):
    t = truth_transform()
    src = clean_source()
    bad, val = bad_regions(kind)
    src[bad] = val[bad]
    before = src.copy()
    res = warp(src, t, OUT, backend=gpualign.get_backend("numpy"), order=order)
    np.testing.assert_array_equal(src, before)  # input untouched
    inside, image, grown, far = expected_regions(t, bad, order)
    assert image.sum() > 20  # the defect is seen on the output grid
    nan = ~np.isfinite(res.data)
    assert not np.isinf(res.data).any()
    # covers the bad area's image (no invented data) ...
    assert nan[image].all()
    # ... and goes no further than that image grown by the kernel's reach
    assert not (nan & inside & ~grown).any()
    assert nan.sum() <= grown.sum() + (~inside).sum()
    # the footprint says exactly which pixels came from valid source data
    np.testing.assert_array_equal(res.footprint, inside & ~grown)
    np.testing.assert_array_equal(res.footprint, ~nan)
    # valid pixels far from any bad pixel are those of the clean image
    np.testing.assert_allclose(res.data[far], clean_outputs[order][far], rtol=2e-4, atol=0.02)
    # and valid pixels next to the defect are finite and plausible (no ringing blow-up)
    near = res.footprint & ~far
    lo, hi = clean_outputs[order][inside].min(), clean_outputs[order][inside].max()
    span = hi - lo
    assert np.all((res.data[near] > lo - 0.5 * span) & (res.data[near] < hi + 0.5 * span))


@pytest.mark.parametrize("order", [0, 3, 5])
def test_cval_fills_exactly_the_empty_region(order):
    t = truth_transform()
    src = clean_source()
    bad, val = bad_regions("blobs")
    src[bad] = val[bad]
    res = warp(src, t, OUT, backend=gpualign.get_backend("numpy"), order=order, cval=-7.0)
    inside, _, grown, _ = expected_regions(t, bad, order)
    assert np.isfinite(res.data).all()
    np.testing.assert_array_equal(res.data == -7.0, ~(inside & ~grown))


def test_four_percent_nan_stays_about_four_percent():
    """The spalipy case: ~4% NaN in the source must not become most of the output."""
    t = truth_transform()
    src = clean_source()
    rng = np.random.default_rng(5)
    bad = np.zeros(SRC, bool)
    for x in rng.choice(SRC[1], 6, replace=False):  # 1-px columns, the worst case
        bad[:, x] = True
    src[bad] = np.nan
    assert 0.03 < bad.mean() < 0.05
    for order in range(6):
        res = warp(src, t, OUT, backend=gpualign.get_backend("numpy"), order=order)
        inside, image, grown, _ = expected_regions(t, bad, order)
        lost = (~res.footprint & inside).sum() / inside.sum()
        assert lost <= (2 * kernel_reach(order) + 1) * 0.05, (order, lost)


@pytest.fixture(scope="module")
def nan_pair(make_pair):
    return make_pair((512, 512), shift=(5.3, -2.7), rotation_deg=25.0, n_stars=800,
                     nan_fraction=0.05, seed=10)


def test_detection_ignores_nan_regions(nan_pair):
    pair = nan_pair
    bad = ~np.isfinite(pair.source)
    cat = detect(pair.source)
    assert len(cat) > 100
    ix, iy = np.rint(cat.x).astype(int), np.rint(cat.y).astype(int)
    assert not bad[iy, ix].any()  # nothing detected on the NaN pixels
    # every detection is a real star (no spurious sources along the NaN edges)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pair.source_xy).query(cat.xy)
    assert d.max() < 2.0, np.sort(d)[-10:]  # (the few > 0.5 px are blends)
    assert np.mean(d < 1.0) >= 0.95
    # and the same stars are found as in the image with the NaN pixels filled
    clean = detect(np.where(bad, np.nanmedian(pair.source), pair.source))
    dist = ndimage.distance_transform_edt(~bad)
    far = dist[np.rint(clean.y).astype(int), np.rint(clean.x).astype(int)] > 10
    d2, _ = cKDTree(cat.xy).query(clean.xy[far])
    assert np.mean(d2 < 0.5) >= 0.97


@pytest.mark.parametrize("order", range(6))
def test_pipeline_nan_region_against_truth(order, nan_pair):
    """Through align(): the empty output region against the truth mapping (1 px slack,
    the fitted mapping being ~0.01 px from the truth)."""
    pair = nan_pair
    bad = ~np.isfinite(pair.source)
    res = gpualign.align(pair.source, pair.template, backend="numpy", interp_order=order)
    yy, xx = np.mgrid[0:512, 0:512].astype(float)
    sx, sy = pair.mapping(xx, yy)
    h, w = bad.shape
    inside = (sx >= 0.5) & (sx <= w - 1.5) & (sy >= 0.5) & (sy <= h - 1.5)
    ix = np.clip(np.rint(sx), 0, w - 1).astype(int)
    iy = np.clip(np.rint(sy), 0, h - 1).astype(int)
    dist = ndimage.distance_transform_cdt(~bad, metric="chessboard")
    nan = np.isnan(res.data)
    np.testing.assert_array_equal(nan, ~res.footprint)
    assert nan[inside & (dist[iy, ix] == 0) & (ndimage.binary_erosion(bad)[iy, ix])].all()
    assert not (nan & inside & (dist[iy, ix] > kernel_reach(order) + 1)).any()
    assert (nan & inside).mean() <= 0.05 * (2 * kernel_reach(order) + 1)


def _defect_image(rng, shape=(1024, 768)):
    img = (rng.normal(size=shape) * 5 + 100).astype(np.float32)
    bad = np.zeros(shape, bool)
    bad[:, shape[1] - 68:] = True  # a 68 px NaN border: beyond max_reach, the median
    bad[300:340, 100:140] = True  # a blob
    bad[:, shape[1] // 2] = True  # a bad column through every row block
    bad[::97, ::89] = True  # scattered pixels
    img[bad] = np.nan
    return img, bad


def _reference_fill(image, bad, max_reach=32):
    """The definition, on the whole frame: growing windows 3, 5, 9, ... 65 until one
    holds a valid pixel, the mean of its valid pixels; (filled, still-unfilled)."""
    valid = (~bad).astype(np.float32)
    data = np.where(bad, np.float32(0), image).astype(np.float32)
    out, todo, size = data.copy(), bad.copy(), 3
    while todo.any() and size <= 2 * max_reach + 1:
        num = ndimage.uniform_filter(data, size=size, mode="constant")
        den = ndimage.uniform_filter(valid, size=size, mode="constant")
        ok = todo & (den > 1e-6)
        out = np.where(ok, num / np.maximum(den, np.float32(1e-6)), out)
        todo, size = todo & ~ok, 2 * size - 1
    return out, todo


def _packed(bad):
    return _invalid.PackedMask(np, np.packbits(bad, axis=1), bad.shape)


def test_packed_mask_round_trips_and_finds_invalid_pixels():
    img, bad = _defect_image(np.random.default_rng(4), shape=(300, 203))
    img[5, 7] = np.inf
    bad[5, 7] = True
    found = _invalid.PackedMask.of_invalid(np, img, block_rows=17)
    assert found.nbytes() == 300 * 26  # one bit per pixel, rows padded to bytes
    np.testing.assert_array_equal(found.rows(0, 300), bad)
    for lo, hi, c0, c1 in [(0, 1, 0, 203), (13, 77, 3, 11), (299, 300, 200, 203), (40, 90, 8, 16)]:
        np.testing.assert_array_equal(found.rows(lo, hi, c0, c1), bad[lo:hi, c0:c1])
    assert _invalid.PackedMask.of_invalid(np, np.ones((40, 9), np.float32)) is None
    grown = _invalid.PackedMask.zeros(np, (10, 21))
    part = np.zeros((3, 13), bool)
    part[1, [0, 12]] = True
    grown.set_or(4, 8, part)
    grown.set_or(4, 8, np.zeros((3, 13), bool))  # OR: nothing is cleared
    want = np.zeros((10, 21), bool)
    want[5, [8, 20]] = True
    np.testing.assert_array_equal(grown.rows(0, 10), want)
    with pytest.raises(ValueError, match="byte boundary"):
        grown.set_or(0, 3, part)


def test_mask_lookup_equals_order0_map_coordinates():
    rng = np.random.default_rng(8)
    bad = rng.random((120, 90)) < 0.05
    coords = np.stack([rng.uniform(-5, 125, (40, 30)), rng.uniform(-5, 95, (40, 30))])
    coords[:, 0, :4] = [[-0.5, 0.5, 119.5, 89.49], [0.4999, 89.5, -0.51, 3.5]]  # ties, edges
    ref = ndimage.map_coordinates(bad.astype(np.uint8), coords, order=0, mode="nearest")
    got = _mask_at(np, _packed(bad), coords)
    np.testing.assert_array_equal(got, ref.astype(bool))


def test_fill_invalid_in_blocks_equals_the_definition():
    img, bad = _defect_image(np.random.default_rng(5))
    backend = get_backend("numpy")
    ref, far = _reference_fill(img, bad)
    near = bad & ~far
    assert near.sum() > 10_000 and far.sum() > 10_000  # both kinds are exercised
    pbad = _packed(bad)
    for rows in (1, 64, 257, img.shape[0]):
        got = _invalid.fill_invalid(backend, img, pbad, block_rows=rows)
        # Same windows; only the running sums of the filters may start elsewhere.
        np.testing.assert_allclose(got[near], ref[near], rtol=2e-6, atol=0)
        np.testing.assert_array_equal(got[~bad], img[~bad])  # valid pixels untouched
        # Far from valid data: the median of the valid pixels (of a strided sample).
        assert np.unique(got[far]).size == 1
        assert abs(got[far][0] - np.median(img[~bad])) < 0.05
    mine = img.copy()
    same = _invalid.fill_invalid(backend, mine, pbad, block_rows=64, in_place=True)
    assert same is mine  # filled in its own memory, to the same values
    np.testing.assert_array_equal(same, _invalid.fill_invalid(backend, img, pbad,
                                                              block_rows=64))


def test_column_runs():
    flags = np.zeros(300, bool)
    assert _invalid._runs(flags, 5) == []
    flags[[0, 9, 40, 52, 299]] = True
    # 0 and 9 are within 2*5+1 of each other, 40 and 52 are not.
    assert _invalid._runs(flags, 5) == [(0, 15), (35, 46), (47, 58), (294, 300)]


def test_fill_invalid_temporaries_stay_small(monkeypatch):
    import tracemalloc

    # At mosaic sizes the median's sample (2**20 px) is small beside a frame; scale
    # it down with this small image so that the blocks' own temporaries are measured.
    monkeypatch.setattr(_invalid, "FILL_MEDIAN_SAMPLE", 1 << 14)
    img, bad = _defect_image(np.random.default_rng(6), shape=(4096, 256))
    pbad = _packed(bad)
    frame = img.nbytes
    backend = get_backend("numpy")
    peaks = {}
    for rows in (img.shape[0], 32):
        tracemalloc.start()
        _invalid.fill_invalid(backend, img, pbad, block_rows=rows)
        peaks[rows] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # The result is one frame; whole-frame filling needs several more for its
    # temporaries, blocks of 32 rows (windows of 96) a small fraction of one.
    assert peaks[img.shape[0]] > 4 * frame
    assert peaks[32] < 1.5 * frame


@pytest.mark.parametrize("reach", [0, 1, 2, 3])
def test_grow_invalid_equals_a_whole_frame_maximum_filter(reach):
    _, bad = _defect_image(np.random.default_rng(7), shape=(700, 500))
    bad[0, 250] = bad[699, 0] = bad[350, 499] = True  # on the edges and corners
    ref = ndimage.maximum_filter(bad.astype(np.uint8), size=2 * reach + 1, mode="nearest")
    for rows in (1, 33, 700):
        got = _invalid.grow_invalid(get_backend("numpy"), _packed(bad), reach, block_rows=rows)
        np.testing.assert_array_equal(got.rows(0, 700), ref.astype(bool))
