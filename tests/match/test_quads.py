"""Quad hash codes (``quad_hashes``) and quad building (``build_quads``), known answers.

A quad's hash is the position of its stars C and D in the frame where A = (0, 0) and
B = (1, 1), A-B being the most distant pair; it is invariant under shift, rotation
and scale, and a mirror image swaps each star's two frame coordinates (then the
symmetry conventions are applied again), so mirrored sources need their own hashes.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from gpualign.match import build_quads, quad_hashes


def similarity(xy: np.ndarray, rot_deg: float, scale: float, shift) -> np.ndarray:
    t = np.deg2rad(rot_deg)
    r = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return xy @ r.T + np.asarray(shift, float)


def canonical(c: complex, d: complex) -> np.ndarray:
    """Hash of frame positions C, D with the paper's conventions, written out here."""
    if c.real + d.real > 1.0:
        c, d = (1 + 1j) - c, (1 + 1j) - d
    if c.real > d.real:
        c, d = d, c
    return np.array([c.real, c.imag, d.real, d.imag])


@pytest.fixture(scope="module")
def quads_xy():
    """30 random quads of stars in a 1000 px field, all four stars in one array."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, (120, 2))
    return xy, np.arange(120).reshape(30, 4)


@pytest.mark.parametrize(("rot", "scale", "shift"), [
    (0.0, 1.0, (123.4, -56.7)), (37.0, 1.0, (0.0, 0.0)), (0.0, 2.5, (0.0, 0.0)),
    (-143.0, 0.37, (-1e4, 3e3)), (90.0, 1.0, (5.0, 5.0)), (180.0, 1.7, (0.0, 0.0)),
])
def test_hash_invariant_under_similarity(quads_xy, rot, scale, shift):
    xy, quads = quads_xy
    h0, o0 = quad_hashes(xy, quads)
    h1, o1 = quad_hashes(similarity(xy, rot, scale, shift), quads)
    np.testing.assert_allclose(h1, h0, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(o1, o0)  # the same stars get the same roles


def test_mirror_swaps_frame_coordinates(quads_xy):
    """x -> -x conjugates the frame: each of C, D goes from (x, y) to (y, x), re-canonicalised."""
    xy, quads = quads_xy
    h, order = quad_hashes(xy, quads)
    hm, order_m = quad_hashes(xy * [-1.0, 1.0], quads)
    expected = np.array([canonical(complex(r[1], r[0]), complex(r[3], r[2])) for r in h])
    np.testing.assert_allclose(hm, expected, rtol=0, atol=1e-12)
    # A mirror image is not a similarity: the hash moves far beyond any matching tolerance
    # (max_quad_hash_dist is 0.01) for every generic quad
    assert np.min(np.linalg.norm(hm - h, axis=1)) > 0.01
    # every mirror gives the same hash (two mirrors differ by a rotation)
    hd, _ = quad_hashes(xy[:, ::-1], quads)
    np.testing.assert_allclose(hd, hm, rtol=0, atol=1e-9)
    assert {frozenset(r) for r in order_m} == {frozenset(r) for r in order}


def test_ordering_conventions(quads_xy):
    xy, quads = quads_xy
    h, order = quad_hashes(xy, quads)
    for q, row, hh in zip(quads, order, h, strict=True):
        assert sorted(row) == sorted(q)
        a, b, c, d = (xy[i, 0] + 1j * xy[i, 1] for i in row)
        # A-B is the most distant pair of the four
        dmax = max(np.hypot(*(xy[i] - xy[j])) for i, j in combinations(row, 2))
        assert abs(b - a) == pytest.approx(dmax, rel=1e-12)
        # the hash is C and D in the frame A = 0, B = 1 + 1j
        w = (np.array([c, d]) - a) / (b - a) * (1 + 1j)
        np.testing.assert_allclose(hh, [w[0].real, w[0].imag, w[1].real, w[1].imag],
                                   rtol=0, atol=1e-12)
        assert hh[0] <= hh[2]  # x_C <= x_D
        assert hh[0] + hh[2] <= 1.0  # x_C + x_D <= 1
        # A-B is the longest side: C and D are no farther than |AB| (sqrt 2 in the frame)
        # from A and from B
        for x, y in (hh[:2], hh[2:]):
            assert np.hypot(x, y) <= np.sqrt(2) + 1e-12
            assert np.hypot(x - 1, y - 1) <= np.sqrt(2) + 1e-12


def test_known_hash_of_a_square_with_a_centre():
    """(0, 0)-(2, 2) is the longest pair; with A = (0, 0) the others sit at (1, 0) and
    (0.5, 0.5), x_C + x_D = 1.5 > 1, so A and B swap: (2, 0) -> (0, 1), (1, 1) stays."""
    xy = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    h, order = quad_hashes(xy, np.array([[0, 1, 2, 3]]))
    np.testing.assert_allclose(h[0], [0.0, 1.0, 0.5, 0.5], atol=1e-15)
    assert order[0].tolist() == [3, 2, 1, 0]  # A = (2, 2), B = (0, 0), C = (2, 0), D


def test_equal_x_gives_no_nan_hash():
    """spalipy divides by dx: stars sharing an x coordinate gave NaN or inf hashes."""
    cases = [
        [[100.0, 0.0], [100.0, 500.0], [300.0, 200.0], [150.0, 350.0]],  # A, B share x
        [[100.0, 0.0], [100.0, 500.0], [100.0, 200.0], [100.0, 350.0]],  # all on one column
        [[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]],  # square: ties everywhere
        [[5.0, 5.0], [5.0, 5.0 + 1e-9], [5.0, 400.0], [5.0, 800.0]],
    ]
    xy = np.concatenate([np.array(c) for c in cases])
    quads = np.arange(len(xy)).reshape(-1, 4)
    h, order = quad_hashes(xy, quads)
    assert np.isfinite(h).all(), h
    assert all(sorted(r) == sorted(q) for r, q in zip(order, quads, strict=True))
    # collinear stars along a column: C and D on the frame's diagonal, at 0.4 and 0.7 of
    # A-B, then A and B swap (0.4 + 0.7 > 1): 0.3 and 0.6
    np.testing.assert_allclose(h[1], [0.3, 0.3, 0.6, 0.6], atol=1e-12)


def test_empty_quads():
    h, order = quad_hashes(np.zeros((3, 2)), np.zeros((0, 4), int))
    assert h.shape == (0, 4) and order.shape == (0, 4)


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(7)
    return rng.uniform(0, 1000, (200, 2))


@pytest.mark.parametrize("min_sep", [0.0, 50.0, 200.0, 400.0])
def test_build_quads_respects_min_quad_sep(field, min_sep):
    h, quads = build_quads(field, (1000, 1000), min_quad_sep=min_sep)
    assert len(quads) > 0
    size = np.hypot(*(field[quads[:, 0]] - field[quads[:, 1]]).T)
    assert size.min() >= min_sep
    # the hashes are those of the returned quads in the returned order
    h2, o2 = quad_hashes(field, quads)
    np.testing.assert_array_equal(o2, quads)
    np.testing.assert_allclose(h2, h, atol=0)
    assert len(np.unique(np.sort(quads, axis=1), axis=0)) == len(quads)  # no duplicates


def test_build_quads_min_sep_drops_the_small_ones(field):
    _, all_q = build_quads(field, (1000, 1000), min_quad_sep=0.0)
    _, big = build_quads(field, (1000, 1000), min_quad_sep=200.0)
    size = np.hypot(*(field[all_q[:, 0]] - field[all_q[:, 1]]).T)
    assert (size < 200).any()
    assert len(big) == int((size >= 200).sum())
    _, none = build_quads(field, (1000, 1000), min_quad_sep=1500.0)  # > the diagonal
    assert none.shape == (0, 4)


def _four_per_cell_field() -> np.ndarray:
    """6 stars per 500x500 cell of a 1000x1000 image, brightest first: the 6 brightest
    of all are in the top-left cell, then the others' stars cell after cell."""
    rng = np.random.default_rng(3)
    cells = [(0, 0), (500, 0), (0, 500), (500, 500)]
    return np.concatenate([rng.uniform(20, 480, (6, 2)) + o for o in cells])


def test_sub_tile_adds_each_cells_brightest():
    xy = _four_per_cell_field()
    kw = dict(n_quad_det=4, min_quad_sep=0.0, levels=(1,))
    _, q1 = build_quads(xy, (1000, 1000), sub_tile=1, **kw)
    # one set: the 4 brightest stars, all in the first cell -> their one quad
    assert sorted(map(sorted, q1.tolist())) == [[0, 1, 2, 3]]
    _, q2 = build_quads(xy, (1000, 1000), sub_tile=2, **kw)
    # plus each cell's 4 brightest: one quad per cell
    expected = [[0, 1, 2, 3], [6, 7, 8, 9], [12, 13, 14, 15], [18, 19, 20, 21]]
    assert sorted(map(sorted, q2.tolist())) == expected
    # without a shape there are no cells
    _, q0 = build_quads(xy, None, sub_tile=2, **kw)
    assert sorted(map(sorted, q0.tolist())) == [[0, 1, 2, 3]]


def test_sub_tile_cells_follow_x_and_y():
    """Cells split x by nx and y by ny (a 300x100 image: 150 px columns, 50 px rows);
    a star on the far edge (x = nx) belongs to the last column."""
    xy = np.array([[10.0, 10.0], [40.0, 20.0], [100.0, 40.0], [20.0, 45.0],  # col 0, row 0
                   [160.0, 5.0], [200.0, 30.0], [300.0, 0.0], [250.0, 49.0],  # col 1, row 0
                   [10.0, 60.0], [50.0, 99.0], [149.0, 80.0], [100.0, 70.0]])  # col 0, row 1
    kw = dict(n_quad_det=4, min_quad_sep=0.0, levels=(1,))
    _, q = build_quads(xy, (100, 300), sub_tile=2, **kw)
    assert sorted(map(sorted, q.tolist())) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    _, q = build_quads(xy, (100, 300), sub_tile=1, n_quad_det=12, levels=(1,),
                       min_quad_sep=0.0)
    assert len(q) == 495  # 12 stars: every C(12, 4) quad
