"""``quad_match`` on catalogues made from a known similarity, and ``cross_match``'s one-to-one rule.

The template is a random star field (brightest first); the source is the same stars
through a known template -> source similarity, with centroid noise, some template
stars missing from the source and some source stars absent from the template. The
matrix found (the initial mapping: the best candidate quad's similarity, refined by
one affine fit only when that gains matches; the fit refines it later) must land every
template position within 0.5 px of the truth over the whole field, and cross-match the
true pairs.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpualign
from gpualign.detect import Catalog
from gpualign.match import apply_matrix, cross_match, quad_match

SHAPE = (1000, 1000)


def catalog(xy: np.ndarray, shape=SHAPE) -> Catalog:
    """Brightest first: ``xy`` is taken to be in decreasing flux order."""
    n = len(xy)
    return Catalog(x=xy[:, 0].copy(), y=xy[:, 1].copy(), flux=np.linspace(1e5, 1e3, n),
                   fwhm=np.full(n, 3.0), flag=np.zeros(n, np.int64),
                   sigma=np.full(n, 0.05), shape=shape)


def similarity_matrix(rot_deg: float, scale: float, shift, mirror: bool = False) -> np.ndarray:
    t = np.deg2rad(rot_deg)
    lin = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0])
    centre = np.array([500.0, 500.0])
    off = centre + np.asarray(shift, float) - lin @ centre  # rotate about the centre
    return np.column_stack([lin, off])


def make_pair(matrix: np.ndarray, *, seed: int, n: int = 150, noise: float = 0.05,
              drop: float = 0.2, extra: int = 25):
    """(source, template) catalogues and, per source star, its template star (-1: none)."""
    rng = np.random.default_rng(seed)
    tmpl = rng.uniform(0, 1000, (n, 2))
    src = apply_matrix(matrix, tmpl) + rng.normal(0, noise, (n, 2))
    inside = np.all((src > 0) & (src < 1000), axis=1)
    kept = np.flatnonzero(inside & (rng.uniform(size=n) > drop))
    # unmatched source stars interleaved in brightness with the real ones
    src_xy = np.concatenate([src[kept], rng.uniform(0, 1000, (extra, 2))])
    ids = np.concatenate([kept, np.full(extra, -1)])
    order = np.argsort(np.concatenate([kept, rng.uniform(0, n, extra)]), kind="stable")
    return catalog(src_xy[order]), catalog(tmpl), ids[order]


def check_solution(sol, truth: np.ndarray, src: Catalog, tmpl: Catalog, ids: np.ndarray):
    # px, over the whole 1000 px field; measured 0.04-0.25 px (the quad's similarity,
    # before any refinement: its error depends on which 4 stars matched)
    assert max_error(sol.matrix, truth) < 0.5
    expected = sol.n_expected_chance
    assert sol.n_match >= expected + 6 * np.sqrt(expected) + 3  # significance rule
    n_true = int((ids >= 0).sum())
    assert sol.n_match >= 0.9 * n_true
    # the pairs it implies are the true ones
    i, j, _ = cross_match(apply_matrix(sol.matrix, tmpl.xy), src.xy, tol=1.0)
    assert len(i) >= 0.95 * n_true
    assert np.mean(ids[j] == i) >= 0.98


def max_error(found: np.ndarray, truth: np.ndarray) -> float:
    grid = np.stack(np.meshgrid(np.linspace(0, 1000, 11), np.linspace(0, 1000, 11)), -1)
    grid = grid.reshape(-1, 2)
    return float(np.max(np.hypot(*(apply_matrix(found, grid) - apply_matrix(truth, grid)).T)))


@pytest.mark.parametrize(("rot", "scale", "shift"), [
    (0.0, 1.0, (12.3, -40.5)), (33.0, 1.0, (5.0, 0.0)), (-120.0, 1.1, (0.0, 20.0)),
    (180.0, 0.9, (-15.0, 8.0)),
])
def test_recovers_the_similarity(rot, scale, shift):
    truth = similarity_matrix(rot, scale, shift)
    src, tmpl, ids = make_pair(truth, seed=int(abs(rot)) + 1)
    sol = quad_match(src, tmpl, allow_mirror=False)
    assert not sol.mirrored
    check_solution(sol, truth, src, tmpl, ids)
    assert 1 <= sol.n_candidates <= 50


def test_mirrored_source_needs_allow_mirror():
    truth = similarity_matrix(20.0, 1.05, (10.0, -10.0), mirror=True)
    assert np.linalg.det(truth[:, :2]) < 0
    src, tmpl, ids = make_pair(truth, seed=11)
    sol = quad_match(src, tmpl, allow_mirror=True)
    assert sol.mirrored
    assert np.linalg.det(sol.matrix[:, :2]) < 0
    check_solution(sol, truth, src, tmpl, ids)
    with pytest.raises(gpualign.NoQuadMatch):
        quad_match(src, tmpl, allow_mirror=False)


def test_unmirrored_source_is_not_called_mirrored():
    truth = similarity_matrix(75.0, 1.0, (0.0, 0.0))
    src, tmpl, ids = make_pair(truth, seed=5)
    sol = quad_match(src, tmpl, allow_mirror=True)
    assert not sol.mirrored
    check_solution(sol, truth, src, tmpl, ids)


def test_unrelated_fields_raise_no_quad_match():
    rng = np.random.default_rng(99)
    a, b = rng.uniform(0, 1000, (120, 2)), rng.uniform(0, 1000, (120, 2))
    with pytest.raises(gpualign.NoQuadMatch, match="no quad match"):
        quad_match(catalog(a), catalog(b))


def test_too_few_stars():
    xy = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    with pytest.raises(gpualign.TooFewStars, match="only 3 usable stars in the source"):
        quad_match(catalog(xy), catalog(np.vstack([xy, [[50.0, 50.0]]])))


def test_stars_too_close_for_any_quad():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 20, (30, 2))  # a 20 px clump, min_quad_sep 50 px
    with pytest.raises(gpualign.NoQuadMatch, match="no quads could be built"):
        quad_match(catalog(xy), catalog(xy))


# -- cross_match -------------------------------------------------------------------


def test_cross_match_each_target_goes_to_its_closest_claimant():
    targets = np.array([[0.0, 0.0], [100.0, 0.0]])
    predicted = np.array([[0.8, 0.0],     # claims target 0 at 0.8
                          [0.3, 0.0],     # claims target 0 at 0.3: wins it
                          [99.0, 0.0],    # target 1 at 1.0
                          [50.0, 50.0]])  # nothing within tol
    i, j, d = cross_match(predicted, targets, tol=2.0)
    assert i.tolist() == [1, 2] and j.tolist() == [0, 1]
    np.testing.assert_allclose(d, [0.3, 1.0])


def test_cross_match_loser_takes_its_free_second_choice():
    targets = np.array([[0.0, 0.0], [1.5, 0.0], [10.0, 0.0]])
    predicted = np.array([[0.2, 0.0],    # target 0 at 0.2
                          [0.5, 0.0],    # target 0 at 0.5 (lost) -> target 1 at 1.0
                          [9.0, 0.0]])   # target 2 at 1.0
    i, j, d = cross_match(predicted, targets, tol=2.0)
    assert i.tolist() == [0, 1, 2] and j.tolist() == [0, 1, 2]
    np.testing.assert_allclose(d, [0.2, 1.0, 1.0])
    # the second choice out of range: the loser stays unmatched
    i, j, _ = cross_match(predicted, targets, tol=0.9)
    assert i.tolist() == [0] and j.tolist() == [0]


def test_cross_match_second_choice_already_taken():
    targets = np.array([[0.0, 0.0], [1.0, 0.0]])
    predicted = np.array([[0.1, 0.0],    # target 0
                          [0.3, 0.0],    # target 0 (lost); second: target 1, taken below
                          [1.0, 0.0]])   # target 1 at 0
    i, j, _ = cross_match(predicted, targets, tol=2.0)
    assert i.tolist() == [0, 2] and j.tolist() == [0, 1]


def test_cross_match_is_one_to_one_on_a_crowded_field():
    rng = np.random.default_rng(4)
    targets = rng.uniform(0, 200, (400, 2))
    predicted = targets[rng.permutation(400)[:300]] + rng.normal(0, 0.8, (300, 2))
    i, j, d = cross_match(predicted, targets, tol=3.0)
    assert len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j)
    assert np.all(d <= 3.0) and np.all(np.diff(i) > 0)
    np.testing.assert_allclose(d, np.hypot(*(predicted[i] - targets[j]).T))


def test_cross_match_empty():
    i, j, d = cross_match(np.zeros((0, 2)), np.ones((3, 2)), tol=1.0)
    assert i.size == j.size == d.size == 0
