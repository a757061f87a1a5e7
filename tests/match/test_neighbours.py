"""The dense (GPU-style) neighbour path gives exactly the KD-tree's answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpualign._simulate import make_mapping, simulate_pair
from gpualign.backend import numpy_backend
from gpualign.detect._sep import detect
from gpualign.match import _neighbours
from gpualign.match._neighbours import NeighbourIndex
from gpualign.match._quad_match import cross_match
from gpualign.pipeline import solve

# The dense code path, run with NumPy as its array module (the strict CuPy stand-in
# runs the same code in test_backend_parity).
DENSE = dataclasses.replace(numpy_backend(), name="dense-numpy")


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("max_dist", [np.inf, 4.0])
def test_dense_query_equals_kdtree(k, max_dist, monkeypatch):
    monkeypatch.setattr(_neighbours, "CHUNK_ELEMENTS", 5000)  # many chunks
    rng = np.random.default_rng(k)
    targets = rng.uniform(0, 200, (700, 2))
    points = rng.uniform(-10, 210, (450, 2))
    d0, j0 = NeighbourIndex(targets).query(points, k, max_dist)
    d1, j1 = NeighbourIndex(targets, DENSE).query(points, k, max_dist)
    np.testing.assert_array_equal(j1, j0)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)
    assert np.isinf(d0).any() == (max_dist < np.inf)


def test_cross_match_one_to_one_and_same_on_both_paths():
    rng = np.random.default_rng(3)
    targets = rng.uniform(0, 100, (400, 2))
    pred = targets[rng.permutation(400)[:300]] + rng.normal(0, 0.3, (300, 2))
    pred = np.vstack([pred, pred[:20] + 0.5])  # contested targets
    i0, j0, d0 = cross_match(pred, targets, 2.0)
    i1, j1, d1 = cross_match(pred, targets, 2.0, NeighbourIndex(targets, DENSE))
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(j0, j1)
    assert len(np.unique(i0)) == len(i0) and len(np.unique(j0)) == len(j0)
    assert np.all(d0 <= 2.0)


def test_solve_identical_with_dense_neighbours():
    shape = (768, 768)
    m = make_mapping(source_shape=shape, template_shape=shape, shift=(9.1, -4.4),
                     rotation_deg=145.0, corner_distortion_px=4.0)
    p = simulate_pair(shape, mapping=m, n_stars=1500, seed=8)
    src, tmpl = detect(p.source), detect(p.template)
    a = solve(src, tmpl, backend=numpy_backend())
    b = solve(src, tmpl, backend=DENSE)
    np.testing.assert_array_equal(a.template_xy, b.template_xy)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert a.degree == b.degree
