"""Quad hash codes of star positions (Lang et al. 2010, AJ 139, 1782).

A quad is four stars. Its two most distant stars A and B define a frame in which
A = (0, 0) and B = (1, 1); the positions of the other two, C and D, in that frame
are the 4-number hash, invariant to shift, rotation and scale. The frame is
computed with complex division by (B - A), which is never zero for distinct
stars: two stars sharing an x coordinate cannot produce a NaN hash (spalipy
divides by dx). Symmetry is broken as in the paper: x_C <= x_D and
x_C + x_D <= 1. A mirror image changes the hash, so flipped frames are matched by
hashing the mirrored positions too (see ``_match``).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["quad_hashes", "build_quads"]

_ROT = 1.0 + 1.0j  # maps the unit segment A->B onto (0,0)->(1,1)


def quad_hashes(xy: np.ndarray, quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hash code of each quad, with its stars reordered as (A, B, C, D).

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Star positions.
    quads : ndarray of int, shape (M, 4)
        Indices into ``xy`` of the four stars of each quad.

    Returns
    -------
    hashes : ndarray, shape (M, 4)
        ``(x_C, y_C, x_D, y_D)`` in the A-B frame.
    ordered : ndarray of int, shape (M, 4)
        The star indices ordered A, B, C, D consistently with the hash.
    """
    quads = np.asarray(quads, dtype=np.int64)
    if quads.size == 0:
        return np.zeros((0, 4)), np.zeros((0, 4), np.int64)
    z = (xy[:, 0] + 1j * xy[:, 1])[quads]  # (M, 4) complex
    pairs = np.array(list(combinations(range(4), 2)))  # (6, 2)
    dist = np.abs(z[:, pairs[:, 0]] - z[:, pairs[:, 1]])
    best = np.argmax(dist, axis=1)
    ia, ib = pairs[best, 0], pairs[best, 1]
    rows = np.arange(len(quads))
    others = np.array([[k for k in range(4) if k not in p] for p in pairs])[best]  # (M, 2)
    order = np.column_stack([ia, ib, others])
    zo = z[rows[:, None], order]
    za, zb = zo[:, 0], zo[:, 1]
    w = (zo[:, 2:] - za[:, None]) / (zb - za)[:, None] * _ROT
    # Swap A and B where x_C + x_D > 1: the frame becomes (1+1j) - w.
    swap_ab = (w.real.sum(axis=1)) > 1.0
    w[swap_ab] = _ROT - w[swap_ab]
    order[swap_ab, 0], order[swap_ab, 1] = order[swap_ab, 1], order[swap_ab, 0].copy()
    # Order C and D by x.
    swap_cd = w[:, 0].real > w[:, 1].real
    w[swap_cd] = w[swap_cd][:, ::-1]
    order[swap_cd, 2], order[swap_cd, 3] = order[swap_cd, 3], order[swap_cd, 2].copy()
    hashes = np.column_stack([w[:, 0].real, w[:, 0].imag, w[:, 1].real, w[:, 1].imag])
    return hashes, quads[rows[:, None], order]


ALL_COMBINATIONS_MAX = 12  # C(12, 4) = 495 quads


def _local_quads(xy: np.ndarray, members: np.ndarray, n_neigh: int) -> list[tuple[int, ...]]:
    """Quads made of each star and three of its ``n_neigh`` nearest neighbours.

    A set of at most 12 stars gives all its quads instead: with few stars, the stars
    seen in one image only make the neighbourhoods differ between the images.
    """
    if members.size < 4:
        return []
    if members.size <= ALL_COMBINATIONS_MAX:
        return [tuple(sorted(c)) for c in combinations(members.tolist(), 4)]
    pts = xy[members]
    k = min(n_neigh + 1, members.size)
    _, nn = cKDTree(pts).query(pts, k=k)
    out = []
    for row in nn:
        for trio in combinations(row[1:], 3):
            out.append(tuple(sorted((members[row[0]], *members[list(trio)]))))
    return out


def build_quads(
    xy: np.ndarray,
    shape: tuple[int, int] | None,
    *,
    n_quad_det: int = 20,
    min_quad_sep: float = 50.0,
    sub_tile: int = 2,
    n_neigh: int = 5,
    levels: tuple[int, ...] = (1, 2, 4),
) -> tuple[np.ndarray, np.ndarray]:
    """Build quads from the brightest stars and hash them.

    Quads come from several star sets, so that the same quads appear in both images
    whatever their scale ratio and overlap: the brightest ``n_quad_det * L`` stars
    for each ``L`` in ``levels`` (density levels: an image at twice the scale sees a
    quarter of the sky, where the other image's ``4 * n_quad_det`` brightest are
    its ``n_quad_det`` brightest), and the ``n_quad_det`` brightest in each cell of
    a ``sub_tile`` x ``sub_tile`` grid (spalipy's sub-tiles). Within each set, each
    star forms quads with three of its ``n_neigh`` nearest neighbours.

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Positions, brightest first.
    shape : tuple of int or None
        ``(ny, nx)`` of the image, for the sub-tiles.
    n_quad_det : int
        Stars per set.
    min_quad_sep : float
        Minimum size (A-B distance) of a quad in pixels; smaller quads have hashes
        dominated by centroid noise.
    sub_tile : int
        Grid size for per-cell star sets (1 = none).
    n_neigh : int
        Neighbours considered per star.
    levels : tuple of int
        Multiples of ``n_quad_det`` for the global density levels.

    Returns
    -------
    hashes : ndarray, shape (M, 4)
    quads : ndarray of int, shape (M, 4)
        Star indices ordered A, B, C, D.
    """
    n = len(xy)
    sets = [np.arange(min(n, n_quad_det * lev)) for lev in levels]
    if sub_tile > 1 and shape is not None:
        ny, nx = shape
        cx = np.clip((xy[:, 0] / nx * sub_tile).astype(int), 0, sub_tile - 1)
        cy = np.clip((xy[:, 1] / ny * sub_tile).astype(int), 0, sub_tile - 1)
        cell = cy * sub_tile + cx
        for c in range(sub_tile * sub_tile):
            sets.append(np.flatnonzero(cell == c)[:n_quad_det])
    quads: set[tuple[int, ...]] = set()
    for members in sets:
        quads.update(_local_quads(xy, members, n_neigh))
    if not quads:
        return np.zeros((0, 4)), np.zeros((0, 4), np.int64)
    arr = np.array(sorted(quads), dtype=np.int64)
    hashes, ordered = quad_hashes(xy, arr)
    size = np.hypot(*(xy[ordered[:, 0]] - xy[ordered[:, 1]]).T)
    keep = size >= min_quad_sep
    return hashes[keep], ordered[keep]
