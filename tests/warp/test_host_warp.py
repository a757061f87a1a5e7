"""The CPU warp's compiled primitives (libgpualign_host.so) against SciPy, bit for bit.

The library is kernels/host_warp.cpp built by the wheel's build hook; the warp uses it
on the NumPy backend and falls back to scipy.ndimage without it. Both paths must give
the same pixels exactly, so the choice is invisible in results.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import ndimage as ndi

from gpualign.backend import _host, get_backend
from gpualign.transform._transform import Transform
from gpualign.warp import _resample as _warp

HAVE_COMPILER = any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def _lib_or_skip():
    if _host._load()[0] is None:
        if HAVE_COMPILER:
            pytest.fail(f"a C++ compiler exists but the library is unusable: {_host.status()}")
        pytest.skip(f"no host library: {_host.status()}")


@pytest.fixture
def scipy_only(monkeypatch):
    """Make the warp take its SciPy path, as without the library."""
    monkeypatch.setattr(_host, "_load", lambda: (None, "SciPy map_coordinates (test)"))


def test_library_built_when_a_compiler_exists():
    if not HAVE_COMPILER:
        pytest.skip("no C++ compiler on this machine")
    assert _host.status().startswith("compiled ("), _host.status()


def _coords(rng, h, w, n):
    # Inside, near and on the edges (mirror taps), far outside (mirror folding), and
    # exact integers and half-integers (floor/rounding ties).
    inside = np.stack([rng.uniform(-0.5, h - 0.5, n), rng.uniform(-0.5, w - 0.5, n)])
    edges = np.stack([rng.uniform(-3, 3, n // 4), rng.uniform(w - 4, w + 2, n // 4)])
    far = np.stack([rng.uniform(-3 * h, 4 * h, n // 4), rng.uniform(-3 * w, 4 * w, n // 4)])
    ties = np.stack([rng.integers(-2, h + 2, n // 4) + 0.5 * rng.integers(0, 2, n // 4),
                     rng.integers(-2, w + 2, n // 4) * 1.0])
    return np.concatenate([inside, edges, far, ties], axis=1)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(57, 83), (1, 40), (40, 1), (2, 2)])
def test_sample_equals_map_coordinates(order, shape):
    _lib_or_skip()
    rng = np.random.default_rng(order * 100 + shape[0])
    img = (rng.normal(size=shape) * 50 + 10).astype(np.float32)
    coeffs = ndi.spline_filter(img, order, output=np.float32, mode="mirror") if order > 1 else img
    flat = _coords(rng, *shape, 4000)
    coords = np.ascontiguousarray(flat.reshape(2, 50, -1))
    ref = ndi.map_coordinates(coeffs, coords, order=order, mode="mirror", prefilter=False,
                              output=np.float32)
    out = np.full(coords.shape[1:], np.nan, np.float32)
    assert _host.sample(coeffs, coords, order, out)
    np.testing.assert_array_equal(out, ref)


def test_sample_into_a_column_block_and_refusals():
    _lib_or_skip()
    rng = np.random.default_rng(3)
    img = rng.normal(size=(64, 64)).astype(np.float32)
    coords = np.ascontiguousarray(rng.uniform(0, 63, size=(2, 10, 7)))
    big = np.zeros((10, 20), np.float32)
    block = big[:, 5:12]  # strided rows, as the warp's column blocks are
    assert _host.sample(img, coords, 3, block)
    ref = ndi.map_coordinates(img, coords, order=3, mode="mirror", prefilter=False,
                              output=np.float32)
    np.testing.assert_array_equal(big[:, 5:12], ref)
    assert not big[:, :5].any() and not big[:, 12:].any()  # nothing written beside it
    # Layouts it does not take are refused, untouched, for SciPy to handle.
    out = np.zeros((10, 7), np.float32)
    assert not _host.sample(img.astype(np.float64), coords, 3, out)
    assert not _host.sample(img, coords.astype(np.float32), 3, out)
    assert not _host.sample(img, coords, 3, np.zeros((10, 7), np.float64))
    assert not _host.sample(img, coords, 6, out)
    assert not _host.sample(img[:, ::2], coords, 3, out)
    assert not out.any()


@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (2, 2), (3, 700), (301, 37), (600, 900)])
def test_prefilter_equals_spline_filter1d(order, shape):
    _lib_or_skip()
    rng = np.random.default_rng(order + shape[1])
    img = (rng.normal(size=shape) * 1000).astype(np.float32)
    img[0, 0] = 3.0e4  # a bright pixel whose ringing runs into the mirror sum
    ref = ndi.spline_filter1d(img, order, axis=1, output=np.float32, mode="mirror")
    ref = ndi.spline_filter1d(ref, order, axis=0, output=np.float32, mode="mirror")
    for threads in (1, 3):
        out = img.copy()
        assert _host.prefilter(out, order, threads)
        np.testing.assert_array_equal(out, ref)


def test_prefilter_refusals():
    _lib_or_skip()
    img = np.ones((8, 8), np.float32)
    for bad in (img.astype(np.float64), img[:, ::2], np.ones((2, 2, 2), np.float32)):
        assert not _host.prefilter(bad, 3)
    assert not _host.prefilter(img, 1)  # orders 0-1 need no filter; the caller skips it
    assert (img == 1).all()


@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_warp_same_with_and_without_the_library(order, monkeypatch):
    _lib_or_skip()
    rng = np.random.default_rng(order)
    img = (rng.normal(size=(300, 340)) * 20 + 100).astype(np.float32)
    img[50:60, 100:103] = np.nan  # the fill-and-mask path too
    mask = np.zeros(img.shape, np.uint16)
    mask[200:205, 30:40] = 5
    th = np.deg2rad(17.0)
    m = np.array([[1.03 * np.cos(th), -1.03 * np.sin(th), 40.3],
                  [1.03 * np.sin(th), 1.03 * np.cos(th), -20.7]])
    c = np.zeros((2, 4, 4))
    c[0, 2, 0], c[1, 1, 1], c[0, 0, 3], c[1, 2, 1] = 1.5, -1.0, 0.6, 0.4
    transform = Transform(m, c, (150.0, 160.0, 155.0, 160.0))
    backend = get_backend("numpy")
    kw = dict(backend=backend, order=order, mask=mask, tile_rows=37, threads=2)
    fast = _warp.warp(img, transform, (320, 310), **kw)
    monkeypatch.setattr(_host, "_load", lambda: (None, "SciPy map_coordinates (test)"))
    slow = _warp.warp(img, transform, (320, 310), **kw)
    np.testing.assert_array_equal(fast.data, slow.data)
    np.testing.assert_array_equal(fast.footprint, slow.footprint)
    np.testing.assert_array_equal(fast.mask, slow.mask)
    assert fast.footprint.sum() > 0.5 * fast.footprint.size
    assert np.isfinite(fast.data[fast.footprint]).all()


def test_prefilter_entry_point_uses_scipy_without_library(scipy_only):
    rng = np.random.default_rng(9)
    img = rng.normal(size=(40, 50)).astype(np.float32)
    out = _warp.prefilter(get_backend("numpy"), img, 3, threads=2)
    ref = ndi.spline_filter1d(img, 3, axis=1, output=np.float32, mode="mirror")
    ref = ndi.spline_filter1d(ref, 3, axis=0, output=np.float32, mode="mirror")
    np.testing.assert_array_equal(out, ref)


def _cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def _smooth_coords(h, w, rows, cols, rng):
    """Row-coherent coordinates as a warp makes them: a rotation with a gentle bend.

    Most groups of four neighbouring pixels have all their taps inside the image (the
    vector path); the rows crossing the edges mix them with mirrored ones, and a few
    NaN and far-away coordinates are sprinkled in (the per-pixel path).
    """
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    a = np.deg2rad(7.0)
    sx = np.cos(a) * xx - np.sin(a) * yy + 0.37 + 1e-4 * xx * yy / 3
    sy = np.sin(a) * xx + np.cos(a) * yy - 4.21 - 2e-4 * xx**2 / 5
    sx *= (w + 6) / cols
    sy *= (h + 6) / rows
    coords = np.stack([sy, sx])
    flat = coords.reshape(2, -1)
    pick = rng.choice(flat.shape[1], 40, replace=False)
    flat[:, pick[:20]] = np.nan
    flat[:, pick[20:]] = rng.uniform(-5 * w, 5 * w, (2, 20))
    return np.ascontiguousarray(coords)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_vector_path_equals_map_coordinates(order):
    """The AVX2 path (whole rows of interior pixels) keeps SciPy's values bit for bit."""
    _lib_or_skip()
    rng = np.random.default_rng(500 + order)
    img = (rng.normal(size=(90, 131)) * 50 + 10).astype(np.float32)
    coeffs = ndi.spline_filter(img, order, output=np.float32, mode="mirror") if order > 1 else img
    coords = _smooth_coords(90, 131, 77, 123, rng)
    ref = ndi.map_coordinates(coeffs, coords, order=order, mode="mirror", prefilter=False,
                              output=np.float32)
    out = np.full(coords.shape[1:], np.nan, np.float32)
    assert _host.sample(coeffs, coords, order, out)
    np.testing.assert_array_equal(out, ref)


def test_vector_path_is_taken_where_the_cpu_has_avx2():
    """On an AVX2 CPU the status names the vector path; GA_HOST_SIMD=0 turns it off and
    changes no value."""
    _lib_or_skip()
    import subprocess
    import sys

    assert ("AVX2" in _host.status()) == _cpu_has_avx2(), _host.status()
    code = ("import numpy as np; from gpualign.backend import _host; "
            "rng = np.random.default_rng(3); img = rng.normal(size=(64, 64)).astype(np.float32); "
            "c = np.ascontiguousarray(np.stack(np.mgrid[0:40, 0:40] * 1.3 + 2.2)); "
            "o = np.zeros((40, 40), np.float32); assert _host.sample(img, c, 3, o); "
            "print(_host.status()); print(o.tobytes().hex())")
    runs = {}
    for flag in ("1", "0"):
        env = {**__import__("os").environ, "GA_HOST_SIMD": flag}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        runs[flag] = res.stdout.splitlines()
    assert "AVX2" not in runs["0"][0]
    assert runs["1"][1] == runs["0"][1]
