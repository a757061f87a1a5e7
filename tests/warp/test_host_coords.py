"""Source coordinates with the compiled linear-part pass: NumPy's values, bit for bit.

``Transform.source_coords_bounds`` adds the linear part to the surfaces' offsets in
one compiled pass (``ga_host_add_linear``) that also returns the range the warp's
inside test needs. The values must be those of NumPy's two additions exactly, the
range their true min and max (NaN when a coordinate is NaN), and the warp's output
the same as with NumPy's coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpualign.backend import _host, get_backend
from gpualign.transform import Transform
from gpualign.transform._polynomial import PolynomialDistortion
from gpualign.warp import _resample


def _lib_or_skip():
    if _host._load()[0] is None:
        pytest.skip(f"no host library: {_host.status()}")


def _transforms():
    th = np.deg2rad(23.0)
    m = np.array([[1.02 * np.cos(th), -1.02 * np.sin(th), 17.25],
                  [1.02 * np.sin(th), 1.02 * np.cos(th), -40.5]])
    rng = np.random.default_rng(9100)
    c = rng.normal(0, 0.7, (2, 5, 5))
    clipped = PolynomialDistortion(c, (300.0, 200.0, 310.0, 220.0), (-0.8, 0.7, -0.9, 0.6))
    return {"linear": Transform(m), "poly": Transform(m, c[:, :4, :4], (250.0, 180.0, 260.0,
                                                                           190.0)),
            "clipped": Transform(m, clipped)}


def _numpy_coords(monkeypatch, t, block):
    with monkeypatch.context() as mp:
        mp.setattr(_host, "_load", lambda: (None, "SciPy map_coordinates (test)"))
        coords, bounds = t.source_coords_bounds(np, *block)
    assert bounds is None
    return coords


@pytest.mark.parametrize("name", ["linear", "poly", "clipped"])
@pytest.mark.parametrize("block", [(0, 700, 0, 500), (3, 4, 9, 10), (511, 516, 37, 38),
                                   (0, 513, 250, 253)])
def test_compiled_pass_equals_numpy(monkeypatch, name, block):
    """Same bits as NumPy's additions; the range is the coordinates' min and max."""
    _lib_or_skip()
    t = _transforms()[name]
    x0, x1, y0, y1 = block
    coords, bounds = t.source_coords_bounds(np, x0, x1, y0, y1)
    ref = _numpy_coords(monkeypatch, t, block)
    np.testing.assert_array_equal(coords.view(np.uint64), ref.view(np.uint64))
    assert bounds == (ref[0].min(), ref[0].max(), ref[1].min(), ref[1].max())
    np.testing.assert_array_equal(t.source_coords(np, x0, x1, y0, y1), coords)
    # Against the per-point definition of the mapping.
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    sx, sy = t(xx, yy)
    np.testing.assert_allclose(coords[1], sx, rtol=0, atol=1e-9)
    np.testing.assert_allclose(coords[0], sy, rtol=0, atol=1e-9)


def test_range_is_nan_when_a_coordinate_is():
    _lib_or_skip()
    out = np.arange(35.0).reshape(5, 7)
    out[2, 5] = np.nan
    ax, by = np.linspace(-3, 3, 7), np.linspace(10, 20, 5)
    ref = (out + ax[None, :]) + by[:, None]
    lo, hi = _host.add_linear(out, ax, by, True)
    assert np.isnan(lo) and np.isnan(hi)
    np.testing.assert_array_equal(out, ref)
    fresh = np.full((5, 7), 99.0)
    assert _host.add_linear(fresh, ax, by, False) == (ax[0] + by[0], ax[-1] + by[-1])
    np.testing.assert_array_equal(fresh, ax[None, :] + by[:, None])
    # Layouts it does not take: nothing written, the caller adds with NumPy.
    assert _host.add_linear(np.zeros((5, 7), np.float32), ax, by, True) is None
    assert _host.add_linear(np.zeros((7, 5)).T, ax, by, True) is None
    assert _host.add_linear(np.zeros((5, 6)), ax, by, True) is None


@pytest.mark.parametrize("name", ["poly", "clipped"])
def test_warp_same_with_numpy_coordinates(monkeypatch, name):
    """Tiles partly outside the source (masks) and wholly inside (bounds): same output."""
    _lib_or_skip()
    rng = np.random.default_rng(9200)
    img = (rng.normal(size=(420, 380)) * 30 + 200).astype(np.float32)
    t = _transforms()[name]
    kw = dict(backend=get_backend("numpy"), order=3, tile_rows=41, threads=2)
    fast = _resample.warp(img, t, (400, 450), **kw)
    original = Transform.source_coords_bounds

    def numpy_only(self, xp, *block):
        return original(self, xp, *block)[0], None

    monkeypatch.setattr(_host, "add_linear", lambda *a: None)
    monkeypatch.setattr(Transform, "source_coords_bounds", numpy_only)
    slow = _resample.warp(img, t, (400, 450), **kw)
    np.testing.assert_array_equal(fast.data.view(np.uint32), slow.data.view(np.uint32))
    np.testing.assert_array_equal(fast.footprint, slow.footprint)
    assert 0.2 < fast.footprint.mean() < 0.95
