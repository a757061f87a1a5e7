"""Thin overlaps, blind (issue 11, item 2): multi-scale quads over the whole frame.

Pairs of survey tiles overlapping by 5% and 10% of their area (offsets along x, y and
the diagonal, with a border without data), at a realistic density (3000 stars per
2048^2) and a sparse one (400: 5% of the area holds 15-20 common stars): the brightest
stars of the whole frame rarely lie in the overlap, so the first quad stage finds
nothing and the multi-scale fallback (``gpualign.match._multiscale``) must. Accuracy:
landing errors of the common stars against the true mapping (template px). Plus a
rendered pair, a real pair of adjacent 2MASS tiles (J and Ks, same pixel grid: the truth
is a pure offset; a crowded field, solved with the defaults by the retry with a crowding
filter adapted to the density), and unrelated fields of the same density (simulated, and
2MASS tiles that do not overlap, which go through that retry), which must fail with
NoQuadMatch (no false match).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from overlap_sky import similarity, sky_pair, tile_offset

import gpualign
from gpualign._simulate import (
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
)
from gpualign.match import quad_match

SHAPE = (2048, 2048)
DATA = Path(__file__).resolve().parents[1] / "data"

# The degree's cross-validation meets near-singular normal matrices on a strip a few
# stars wide (gpualign.fit._selection: higher-degree terms across the strip are
# degenerate); the degree chosen is still 1 and the result as accurate.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")


def solve(pair, **kw):
    return gpualign.find_transform(None, None, source_det=pair.source,
                                   template_det=pair.template, backend="numpy", **kw)


def landing(sol, pair, n: int = 100) -> dict:
    return error_stats(position_errors(sol.transform, pair.truth, pair.common_template_xy[:n]))


@pytest.mark.parametrize("direction", ["x", "y", "diagonal"])
@pytest.mark.parametrize("fraction", [0.05, 0.10])
def test_thin_overlap_realistic_density(fraction, direction):
    """3000 stars per 2048^2, 20 px border without data, rotation 0.3 deg."""
    shift = tile_offset(fraction, direction, border=20)
    m = similarity(SHAPE, SHAPE, shift=shift, rotation_deg=0.3)
    pair = sky_pair(m, n_template=3000, n_source=3000, nan_border=20, seed=1)
    sol = solve(pair)
    acc = landing(sol, pair)
    # issue 11's target: 0.02 px RMS; measured 0.0042-0.0117 (centroid noise 0.1 px at
    # the faint end, the fit's lever arm the overlap's width)
    assert acc["rms"] <= 0.02, acc
    assert sol.stats["n_match"] >= 0.9 * len(pair.common_template_xy)


@pytest.mark.filterwarnings("ignore::gpualign.GpuAlignWarning")  # few matches, extrapolated
@pytest.mark.parametrize(("fraction", "direction", "seed"), [
    (0.05, "x", 2), (0.05, "diagonal", 2), (0.10, "y", 1), (0.10, "diagonal", 3),
])
def test_thin_overlap_sparse(fraction, direction, seed):
    """400 stars per 2048^2: 17-19 common stars at 5%, 36-37 at 10%."""
    shift = tile_offset(fraction, direction, border=20)
    m = similarity(SHAPE, SHAPE, shift=shift, rotation_deg=0.3)
    pair = sky_pair(m, n_template=400, n_source=400, nan_border=20, seed=seed)
    sol = solve(pair)
    acc = landing(sol, pair)
    # measured 0.019-0.035 px: a few faint common stars (0.1 px centroid noise)
    assert acc["rms"] <= 0.08, acc
    assert sol.stats["n_match"] >= 0.9 * len(pair.common_template_xy)


def test_thin_overlap_mirrored():
    """A mirror-image source (x flipped), 5% along y: the fallback tries both parities."""
    m = similarity(SHAPE, SHAPE, shift=tile_offset(0.05, "y", border=20), rotation_deg=0.3,
                   flip=True)
    pair = sky_pair(m, n_template=3000, n_source=3000, nan_border=20, seed=1)
    with pytest.warns(gpualign.GpuAlignWarning, match="mirror"):
        sol = solve(pair)
    assert sol.mirrored
    assert landing(sol, pair)["rms"] <= 0.02  # measured 0.0094


def test_thin_overlap_device_backend(monkeypatch):
    """The CuPy path (strict stand-in, tests/gpu/strict_cupy) gives the NumPy answer.

    The fallback's small per-candidate cross-matches run on the host for either backend.
    """
    import strict_cupy

    m = similarity(SHAPE, SHAPE, shift=tile_offset(0.05, "x", border=20), rotation_deg=0.3)
    pair = sky_pair(m, n_template=3000, n_source=3000, nan_border=20, seed=1)
    ref = solve(pair)
    strict_cupy.install(monkeypatch)
    got = gpualign.find_transform(None, None, source_det=pair.source,
                                  template_det=pair.template, backend="cupy")
    assert got.stats["n_match"] == ref.stats["n_match"]
    grid = pair.common_template_xy[:50]
    np.testing.assert_allclose(np.column_stack(got.transform(*grid.T)),
                               np.column_stack(ref.transform(*grid.T)), atol=1e-6)


def test_ordinary_fields_skip_the_fallback():
    """A full overlap is solved by the first quad stage, as before."""
    m = similarity(SHAPE, SHAPE, shift=(30.0, -20.0), rotation_deg=10.0)
    pair = sky_pair(m, n_template=3000, n_source=3000, seed=4)
    qs = quad_match(pair.source, pair.template)
    assert not qs.multiscale
    thin = sky_pair(similarity(SHAPE, SHAPE, shift=tile_offset(0.05, "x", border=20)),
                    n_template=3000, n_source=3000, nan_border=20, seed=1)
    assert quad_match(thin.source, thin.template).multiscale


def test_thin_overlap_rendered_images():
    """Rendered 2048^2 tiles of 3000 stars whose data overlap by 5% along x (NaN borders)."""
    shift = tile_offset(0.05, "x", SHAPE, border=20)
    mapping = make_mapping(source_shape=SHAPE, template_shape=SHAPE,
                           shift=(shift[0] + 0.37, shift[1] + 2.61), rotation_deg=0.3)
    pair = simulate_pair(SHAPE, mapping=mapping, n_stars=3000, seed=5)
    for image in (pair.template, pair.source):
        for edge in (np.s_[:20, :], np.s_[-20:, :], np.s_[:, :20], np.s_[:, -20:]):
            image[edge] = np.nan
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    stars = bright_overlap_stars(pair, n=200, margin_fwhm=5.0)
    stars = stars[np.all((stars > 30) & (stars < 2018), axis=1)]  # off the NaN borders
    acc = error_stats(position_errors(sol.transform, pair.mapping, stars))
    assert acc["n"] >= 80
    assert acc["rms"] <= 0.02, acc  # issue 11's target; measured 0.0097 (40 matches)


def _tiles(axis: int, width: int = 385, offset: int = 335):
    """A J tile and the Ks tile ``offset`` px further along ``axis`` (13% overlap)."""
    j = fits.getdata(DATA / "gc_2mass_j.fits").astype(np.float32)
    k = fits.getdata(DATA / "gc_2mass_k.fits").astype(np.float32)
    cut = [slice(None), slice(None)]
    cut[1 - axis] = slice(0, width)
    a = j[tuple(cut)].copy()
    cut[1 - axis] = slice(offset, offset + width)
    b = k[tuple(cut)].copy()
    for tile in (a, b):  # NaN borders, as a survey tile's
        tile[:8], tile[-8:], tile[:, :8], tile[:, -8:] = np.nan, np.nan, np.nan, np.nan
    shift = np.zeros(2)
    shift[axis] = offset
    return a, b, shift


@pytest.mark.parametrize("axis", [0, 1])
def test_adjacent_real_tiles(axis, caplog):
    """2MASS J and Ks tiles of the Galactic Centre overlapping by 13% (50 x 700 px).

    The field is crowded (a source every ~7 px): the default crowding filter (2 x the
    5 px match tolerance) leaves no common star in the overlap, so blind matching fails
    and is tried again with a filter adapted to the density (~5 px: the 25th percentile
    of the nearest-neighbour distances). Defaults throughout. Landing errors on a grid
    over the overlap, against the true offset.
    """
    template, source, shift = _tiles(axis)
    with caplog.at_level("INFO", logger="gpualign"):
        sol = gpualign.find_transform(source, template, backend="numpy")
    assert "crowded field: matching again" in caplog.text
    n_long, n_across = np.linspace(20, 700, 35), np.linspace(345, 375, 4)
    a, c = np.meshgrid(n_long, n_across)
    grid = np.column_stack([c.ravel(), a.ravel()] if axis == 0 else [a.ravel(), c.ravel()])
    fx, fy = sol.transform(grid[:, 0], grid[:, 1])
    err = np.hypot(fx - (grid[:, 0] - shift[0]), fy - (grid[:, 1] - shift[1]))
    rms = float(np.sqrt(np.mean(err**2)))
    # measured 0.14 (x) and 0.08 (y) px (the fit's residual RMS ~0.3-0.6 px: J and Ks
    # centroids of the blends of this crowded field differ); a wrong match is pixels off
    assert rms <= 0.25, rms
    assert sol.stats["n_match"] >= 15


@pytest.mark.parametrize("axis", [0, 1])
def test_crowded_tiles_that_do_not_overlap_do_not_match(axis, caplog):
    """The same crowded 2MASS sky, J and Ks tiles 60 px apart: the retry finds nothing."""
    j = fits.getdata(DATA / "gc_2mass_j.fits").astype(np.float32)
    k = fits.getdata(DATA / "gc_2mass_k.fits").astype(np.float32)
    for first, second in ((0, 390), (390, 0)):
        cut = [slice(None), slice(None)]
        cut[1 - axis] = slice(first, first + 330)
        template = j[tuple(cut)].copy()
        cut[1 - axis] = slice(second, second + 330)
        source = k[tuple(cut)].copy()
        caplog.clear()
        with caplog.at_level("INFO", logger="gpualign"), \
                pytest.raises(gpualign.NoQuadMatch, match="multi-scale"):
            gpualign.find_transform(source, template, backend="numpy")
        assert "crowded field: matching again" in caplog.text


@pytest.mark.parametrize(("n_stars", "seed"), [(3000, 0), (3000, 1), (400, 0), (400, 1),
                                                (400, 2)])
def test_unrelated_fields_do_not_match(n_stars, seed):
    """Two different skies of the same density: NoQuadMatch both ways, never a solution."""
    one = sky_pair(similarity(SHAPE, SHAPE), n_template=n_stars, seed=100 + seed).template
    two = sky_pair(similarity(SHAPE, SHAPE), n_template=n_stars, seed=200 + seed).template
    for src, tmpl in ((one, two), (two, one)):
        with pytest.raises(gpualign.NoQuadMatch, match="multi-scale"):
            gpualign.find_transform(None, None, source_det=src, template_det=tmpl,
                                    backend="numpy")
