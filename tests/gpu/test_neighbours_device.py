"""Device neighbour queries at 10^5 stars: KD-tree answers, bounded memory.

On a GPU backend, :class:`gpualign.match._neighbours.NeighbourIndex` answers with chunked
distance matrices. Here it runs on the strict CuPy stand-in, whose every device array
is created through ``strict_cupy._core.ndarray._wrap``; wrapping that records the
largest array the queries allocate, which must stay within the index's budget.
"""

from __future__ import annotations

import numpy as np
import pytest
import strict_cupy
from strict_cupy import _core

import gpualign
from gpualign.match._neighbours import CHUNK_ELEMENTS, NeighbourIndex, chunk_elements_for
from gpualign.match._quad_match import cross_match

N = 100_000


@pytest.fixture
def gpu(monkeypatch):
    strict_cupy.install(monkeypatch)
    return gpualign.get_backend("cupy")


@pytest.fixture
def largest(monkeypatch):
    """Bytes of the largest device array created from now on (views excluded)."""
    seen = {"bytes": 0}
    original = _core.ndarray._wrap.__func__

    def wrap(cls, a):
        if a.base is None:
            seen["bytes"] = max(seen["bytes"], a.nbytes)
        return original(cls, a)

    monkeypatch.setattr(_core.ndarray, "_wrap", classmethod(wrap))
    return seen


@pytest.fixture(scope="module")
def field():
    """10^5 stars on a 10^4 px square and their re-measured positions (0.7 px scatter)."""
    rng = np.random.default_rng(12)
    targets = rng.uniform(0, 10_000, (N, 2))
    points = targets[rng.permutation(N)] + rng.normal(0, 0.7, (N, 2))
    return targets, points


def test_1e5_cross_match_neighbours_equal_kdtree(gpu, largest, field):
    targets, points = field
    budget = 1 << 20  # distances per chunk: 8 MB of float64
    d0, j0 = NeighbourIndex(targets).query(points, 2, 5.0)
    index = NeighbourIndex(targets, gpu, chunk_elements=budget)
    largest["bytes"] = 0  # the targets' own upload aside
    d1, j1 = index.query(points, 2, 5.0)
    np.testing.assert_array_equal(j1, j0)
    np.testing.assert_array_equal(np.isinf(d1), np.isinf(d0))
    fin = np.isfinite(d0)
    np.testing.assert_allclose(d1[fin], d0[fin], rtol=1e-12, atol=0)
    # Ground truth: each point's nearest target is the star it was measured from, for
    # all but the stars with a neighbour about as close as the scatter.
    rng = np.random.default_rng(12)
    rng.uniform(0, 10_000, (N, 2))
    truth = rng.permutation(N)
    assert np.mean(j1[:, 0] == truth) > 0.99  # measured 0.997
    # Memory: the largest device temporary is one chunk of float64 distances.
    _, chunks = index.chunks(points, 5.0)
    assert len(chunks) > 10  # really chunked
    assert all((b - a) * (hi - lo) <= budget for a, b, lo, hi in chunks)
    assert 0 < largest["bytes"] <= 8 * budget
    assert largest["bytes"] > 8 * budget // 4  # the chunks use their budget


def test_1e5_one_to_one_cross_match_same_on_device(gpu, field):
    targets, points = field
    ref = cross_match(points, targets, 2.0)
    got = cross_match(points, targets, 2.0, NeighbourIndex(targets, gpu, chunk_elements=2**20))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    i, j, _ = got
    assert len(np.unique(j)) == len(j) > 0.97 * N  # 1.7% scatter beyond 2 px (Rayleigh)
    rng = np.random.default_rng(12)
    rng.uniform(0, 10_000, (N, 2))
    truth = rng.permutation(N)
    assert np.mean(j == truth[i]) > 0.99  # matched to the star they came from


@pytest.mark.parametrize("max_dist", [np.inf, 0.02])
def test_hash_codes_4d_unbounded_and_bounded(gpu, largest, max_dist):
    """Quad hash codes (4-D, in [0, 1]): no radius means full rows, still chunked."""
    rng = np.random.default_rng(3)
    targets, points = rng.random((6000, 4)), rng.random((5000, 4))
    budget = 60_000
    d0, j0 = NeighbourIndex(targets).query(points, 2, max_dist)
    index = NeighbourIndex(targets, gpu, chunk_elements=budget)
    largest["bytes"] = 0
    d1, j1 = index.query(points, 2, max_dist)
    np.testing.assert_array_equal(j1, j0)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)
    assert largest["bytes"] <= 8 * budget
    _, chunks = index.chunks(points, max_dist)
    if np.isinf(max_dist):
        assert all(hi - lo == 6000 and b - a == budget // 6000 for a, b, lo, hi in chunks[:-1])
    else:
        assert np.isinf(d0).any() and np.isfinite(d0).any()


def test_chunk_budget_follows_free_device_memory(gpu):
    cp = gpu.xp
    assert chunk_elements_for(gpu) == CHUNK_ELEMENTS  # 15 GiB free: the fixed cap
    with cp.configure(free_memory=64 * 2**20):
        assert chunk_elements_for(gpu) == 2**20  # 16 B per distance, a quarter of free
        assert NeighbourIndex(np.zeros((10, 2)), gpu).chunk_elements == 2**20
    with cp.configure(free_memory=0):
        assert chunk_elements_for(gpu) == CHUNK_ELEMENTS  # the device cannot say
