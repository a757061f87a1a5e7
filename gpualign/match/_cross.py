"""Cross-matching star lists under a mapping, and the small matrix fits it needs."""

from __future__ import annotations

import numpy as np

from gpualign.match._neighbours import NeighbourIndex

__all__ = ["cross_match", "similarity_matrix", "affine_matrix", "apply_matrix"]


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to ``(N, 2)`` points."""
    return xy @ matrix[:, :2].T + matrix[:, 2]


def similarity_matrix(frm: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, one scale, shift) mapping ``frm`` onto ``to``.

    Solved in complex numbers, ``z_to = a * z_frm + b``; returns a 2x3 matrix.
    """
    zf = frm[:, 0] + 1j * frm[:, 1]
    zt = to[:, 0] + 1j * to[:, 1]
    mf, mt = zf.mean(), zt.mean()
    df = zf - mf
    a = np.vdot(df, zt - mt) / max(np.vdot(df, df).real, 1e-300)
    b = mt - a * mf
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def affine_matrix(frm: np.ndarray, to: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares 6-parameter affine matrix mapping ``frm`` onto ``to``."""
    design = np.column_stack([frm, np.ones(len(frm))])
    w = np.ones(len(frm)) if weights is None else weights
    sw = np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(design * sw, to * sw, rcond=None)
    return sol.T


def cross_match(
    predicted: np.ndarray, targets: np.ndarray, tol: float,
    index: NeighbourIndex | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest-neighbour matches within ``tol``.

    Each predicted point asks for its two nearest targets. A target claimed by
    several points goes to the closest; a point that lost its first choice takes
    its second one if that is in range and unclaimed (crowded fields).

    Parameters
    ----------
    predicted : ndarray, shape (N, 2)
        Positions of the first list, mapped into the frame of ``targets``.
    targets : ndarray, shape (M, 2)
        Positions of the second list.
    tol : float
        Maximum distance.
    index : NeighbourIndex, optional
        An index built on ``targets`` (KD-tree on the CPU, distance matrices on a GPU).

    Returns
    -------
    i, j : ndarray of int
        Matched indices into ``predicted`` and ``targets``, each used at most once.
    dist : ndarray
        Distances of the matches.
    """
    if len(predicted) == 0 or len(targets) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    index = NeighbourIndex(targets) if index is None else index
    d, j = index.query(predicted, k=2, max_dist=tol)
    i, jj, dd = _resolve(d[:, 0], j[:, 0])
    # Losers of a contested target try their second neighbour.
    lost = np.setdiff1d(np.flatnonzero(np.isfinite(d[:, 0])), i)
    if lost.size:
        taken = np.zeros(len(targets) + 1, bool)
        taken[jj] = True
        second = lost[np.isfinite(d[lost, 1]) & ~taken[j[lost, 1]]]
        i2, j2, d2 = _resolve(d[second, 1], j[second, 1], second)
        i, jj, dd = np.concatenate([i, i2]), np.concatenate([jj, j2]), np.concatenate([dd, d2])
    order = np.argsort(i, kind="stable")
    return i[order], jj[order], dd[order]


def _resolve(d: np.ndarray, j: np.ndarray, rows: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep, for each target, only its closest claimant (ties: lowest row)."""
    rows = np.arange(len(d)) if rows is None else rows
    ok = np.isfinite(d)
    i, j, d = rows[ok], j[ok], d[ok]
    order = np.lexsort((i, d, j))
    i, j, d = i[order], j[order], d[order]
    first = np.ones(len(j), bool)
    first[1:] = j[1:] != j[:-1]
    return i[first], j[first], d[first]
