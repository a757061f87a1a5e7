import numpy as np
import pytest

from gpualign._simulate import (
    TrueMapping,
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
    warp_real_image,
)


def _mapping(**kw):
    args = dict(
        source_shape=(300, 400),
        template_shape=(256, 256),
        shift=(12.5, -7.25),
        rotation_deg=137.0,
        scale=1.3,
        shear=0.02,
        corner_distortion_px=15.0,
    )
    args.update(kw)
    return make_mapping(**args)


@pytest.mark.parametrize("flip", [False, True])
def test_inverse_round_trip(flip):
    m = _mapping(flip=flip)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-300, 600, (2, 5000))
    sx, sy = m(x, y)
    bx, by = m.inverse(sx, sy)
    assert np.max(np.hypot(bx - x, by - y)) < 1e-9
    x2, y2 = m.inverse(x, y)
    fx, fy = m(x2, y2)
    assert np.max(np.hypot(fx - x, fy - y)) < 1e-9
    assert (m.determinant < 0) == flip


def test_dict_round_trip_and_jacobian():
    m = _mapping(flip=True)
    m2 = TrueMapping.from_dict(m.to_dict())
    x, y = np.array([3.0, 100.0, -40.0]), np.array([250.0, 7.0, 90.0])
    np.testing.assert_array_equal(np.stack(m(x, y)), np.stack(m2(x, y)))
    h = 1e-4
    num = np.stack(
        [
            (np.stack(m(x + h, y)) - np.stack(m(x - h, y))) / (2 * h),
            (np.stack(m(x, y + h)) - np.stack(m(x, y - h))) / (2 * h),
        ],
        axis=-1,
    )  # (2, n, 2): [out, n, in]
    np.testing.assert_allclose(m.jacobian(x, y), num.transpose(1, 0, 2), atol=1e-7)


@pytest.mark.parametrize("corner", [20.0, -8.0])
def test_corner_distortion_magnitude(corner):
    kw = dict(source_shape=(300, 500), template_shape=(256, 256), rotation_deg=30.0)
    m = make_mapping(corner_distortion_px=corner, **kw)
    lin = make_mapping(**kw)
    corners_x, corners_y = np.array([0.0, 499.0, 0.0, 499.0]), np.array([0.0, 0.0, 299.0, 299.0])
    px, py = lin.inverse(corners_x, corners_y)  # template points landing on the corners
    sx, sy = m(px, py)
    np.testing.assert_allclose(np.hypot(sx - corners_x, sy - corners_y), abs(corner), rtol=1e-12)
    r_new = np.hypot(sx - 249.5, sy - 149.5)
    r_old = np.hypot(corners_x - 249.5, corners_y - 149.5)
    np.testing.assert_allclose(r_new - r_old, corner, rtol=1e-12)
    assert m.k2 == pytest.approx(0.3 * m.k1)


def _centroid(img, x, y, rad=10):
    ix, iy = int(round(x)), int(round(y))
    win = img[iy - rad : iy + rad + 1, ix - rad : ix + rad + 1]
    yy, xx = np.mgrid[iy - rad : iy + rad + 1, ix - rad : ix + rad + 1]
    return (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum(), win.sum()


def test_rendered_centroids_at_true_positions():
    m = _mapping(source_shape=(256, 320), corner_distortion_px=10.0, rotation_deg=23.0)
    pair = simulate_pair(
        (256, 256), (256, 320), mapping=m, n_stars=25, sky=0.0, noise=False, seed=3
    )
    assert pair.template.dtype == np.float32
    tx, sx = pair.template_xy, pair.source_xy
    d_t = np.hypot(*(tx[:, None, :] - tx[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d_t, np.inf)
    isolated = d_t.min(axis=1) > 35  # scale 1.3: > 45 source px apart
    checked = 0
    for i in np.flatnonzero(isolated):
        for img, pos in ((pair.template, tx[i]), (pair.source, sx[i])):
            h, w = img.shape
            if not (12 <= pos[0] <= w - 13 and 12 <= pos[1] <= h - 13):
                continue
            cx, cy, total = _centroid(img.astype(np.float64), *pos)
            assert np.hypot(cx - pos[0], cy - pos[1]) < 0.01
            assert total == pytest.approx(pair.flux[i], rel=1e-4)
            checked += 1
    assert checked >= 10


def test_moffat_centroid():
    pair = simulate_pair((96, 96), n_stars=2, sky=0.0, noise=False, psf="moffat", seed=1)
    (inside,) = np.nonzero(np.all((pair.template_xy > 15) & (pair.template_xy < 80), axis=1))
    assert len(pair.template_xy) == 3 and len(inside) == 1  # isolated, away from the edges
    pos = pair.template_xy[inside[0]]
    cx, cy, total = _centroid(pair.template.astype(np.float64), *pos, rad=13)
    assert np.hypot(cx - pos[0], cy - pos[1]) < 0.01
    assert total == pytest.approx(pair.flux[inside[0]], rel=0.02)


@pytest.mark.parametrize("sky", [200.0, 10.0])
def test_noise_statistics(sky):
    gain, rn = 2.0, 5.0
    pair = simulate_pair((200, 200), n_stars=0, sky=sky, gain=gain, read_noise=rn, seed=7)
    for img in (pair.template, pair.source):
        assert img.mean() == pytest.approx(sky, abs=0.1)
        assert img.var() == pytest.approx(sky / gain + (rn / gain) ** 2, rel=0.03)
    assert not np.array_equal(pair.template, pair.source)
    again = simulate_pair((200, 200), n_stars=0, sky=sky, gain=gain, read_noise=rn, seed=7)
    np.testing.assert_array_equal(pair.template, again.template)


def test_star_count_and_flux_range():
    pair = simulate_pair((128, 128), n_stars=500, noise=False, flux_range=(100, 1e4), seed=2)
    assert abs(pair.in_template.sum() - 500) < 80
    assert pair.flux.min() >= 100 and pair.flux.max() <= 1e4
    assert np.median(pair.flux) < 400  # power law: mostly faint stars


def test_static_artefacts_identical_positions():
    m = _mapping(source_shape=(200, 300), template_shape=(256, 256), corner_distortion_px=0.0)
    pair = simulate_pair(
        (256, 256), (200, 300), mapping=m, n_stars=50, n_hot_pixels=30, n_bad_columns=2, seed=4
    )
    hot = pair.hot_pixel_xy.astype(int)
    assert len(hot) >= 30
    assert np.all(hot[:, 0] < 256) and np.all(hot[:, 1] < 200)
    for img in (pair.template, pair.source):
        assert np.all(img[hot[:, 1], hot[:, 0]] > 1e4)
        for x in pair.bad_column_x:
            assert np.median(img[:, x]) > np.median(img) + 30


def test_nan_fraction():
    pair = simulate_pair((256, 256), n_stars=100, nan_fraction=0.05, seed=6)
    frac = np.isnan(pair.source).mean()
    assert 0.04 < frac < 0.08
    assert not np.isnan(pair.template).any()
    stars = bright_overlap_stars(pair, n=50)
    sx, sy = pair.mapping(stars[:, 0], stars[:, 1])
    assert np.all(np.isfinite(pair.source[np.rint(sy).astype(int), np.rint(sx).astype(int)]))


def test_bright_overlap_stars():
    m = _mapping(shift=(120.0, 0.0), rotation_deg=0.0, scale=1.0, shear=0.0)
    pair = simulate_pair((256, 256), (300, 400), mapping=m, n_stars=400, noise=False, seed=8)
    stars = bright_overlap_stars(pair, n=40)
    assert len(stars) == 40
    sx, sy = m(stars[:, 0], stars[:, 1])
    assert np.all((stars >= 8.5) & (stars <= 255 - 8.5))
    assert np.all((sx >= 8.5) & (sx <= 399 - 8.5) & (sy >= 8.5) & (sy <= 299 - 8.5))
    idx = [np.flatnonzero((pair.template_xy == s).all(axis=1))[0] for s in stars]
    assert np.all(np.diff(pair.flux[idx]) <= 0)


def test_position_errors():
    m = _mapping()
    xy = np.random.default_rng(0).uniform(0, 255, (100, 2))
    assert np.max(position_errors(m, m, xy)) < 1e-8

    def shifted(x, y):
        return m(x - 0.3, y + 0.4)

    err = position_errors(shifted, m, xy)
    np.testing.assert_allclose(err, 0.5, atol=1e-8)

    def big(x, y):
        return m(x - 30.0, y + 40.0)

    np.testing.assert_allclose(position_errors(big, m, xy), 50.0, atol=1e-7)

    def nan(x, y):
        sx, sy = m(x, y)
        return sx * np.nan, sy

    stats = error_stats(np.concatenate([err, position_errors(nan, m, xy[:3])]))
    assert stats["rms"] == pytest.approx(0.5) and stats["max"] == pytest.approx(0.5)
    assert stats["n"] == 100 and stats["n_nonfinite"] == 3


def test_warp_real_image():
    yy, xx = np.mgrid[0:128, 0:160].astype(np.float64)

    def sky(x, y):
        return 100 + 10 * np.sin(x / 9.0) * np.cos(y / 13.0)

    image = sky(xx, yy)
    m = make_mapping(
        source_shape=(140, 170), template_shape=(128, 160), rotation_deg=20, corner_distortion_px=4
    )
    out = warp_real_image(image, m, (140, 170), rows_per_chunk=7)
    assert out.shape == (140, 170) and out.dtype == np.float32
    sy, sx = np.mgrid[0:140, 0:170].astype(np.float64)
    x, y = m.inverse(sx, sy)
    inside = (x >= 3) & (x <= 156) & (y >= 3) & (y <= 124)
    np.testing.assert_allclose(out[inside], sky(x, y)[inside], atol=0.05)
    outside = (x < -0.5) | (x > 159.5) | (y < -0.5) | (y > 127.5)
    assert outside.any() and np.isnan(out[outside]).all()
