"""Nearest-neighbour queries for matching, on the host (KD-tree) or a device.

On NumPy a KD-tree answers; on CuPy the same queries run as chunked distance
matrices on the GPU (each chunk of query points against all targets, so memory
stays bounded for 10^5 stars), and only the k nearest indices and distances come
back to the host. Both return identical results, in the KD-tree's conventions:
missing neighbours have distance ``inf`` and index ``len(targets)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from gpualign.backend import Backend

__all__ = ["NeighbourIndex"]

CHUNK_ELEMENTS = 1 << 24  # query x target distances per chunk (128 MB of float64)


def chunk_elements_for(backend: Backend, limit: int | None = None) -> int:
    """Distances per chunk: ``limit``, or less where the device has little free memory.

    A chunk holds two float64 arrays of its size (the squared distances and one
    coordinate difference), so a chunk of ``e`` elements needs ``16 e`` bytes; at
    most a quarter of the free device memory is used (``limit`` defaults to
    :data:`CHUNK_ELEMENTS`).
    """
    limit = CHUNK_ELEMENTS if limit is None else int(limit)
    try:
        free = int(backend.free_memory())
    except Exception:  # a device that cannot say: the fixed limit
        free = 0
    if free <= 0:
        return int(limit)
    return int(max(1024, min(limit, free // 64)))


class NeighbourIndex:
    """Index over target points answering k-nearest queries within a radius.

    Parameters
    ----------
    targets : ndarray, shape (M, D)
        Host points (positions, or quad hash codes).
    backend : Backend, optional
        ``None`` or the NumPy backend: KD-tree. Any other: dense chunked distances
        with that backend's array module (the targets go to the device once).
    chunk_elements : int, optional
        Memory budget of the dense path: the most query x target distances held at
        once (default :func:`chunk_elements_for` the backend). The largest device
        temporary is ``8 * max(chunk_elements, M)`` bytes.

    Notes
    -----
    The dense path keeps the targets sorted by their first coordinate. Queries
    with a finite ``max_dist`` are sorted the same way and cut into chunks whose
    rows only meet the band of targets within ``max_dist`` of them in that
    coordinate (the chunk's rows times the band's width stays within the budget),
    so 10^5 x 10^5 cross-matches cost a few bands, not 10^10 distances.
    """

    def __init__(self, targets: np.ndarray, backend: Backend | None = None,
                 chunk_elements: int | None = None) -> None:
        self.targets = np.ascontiguousarray(targets, dtype=np.float64)
        self.n = len(self.targets)
        self.backend = backend if backend is not None and backend.name != "numpy" else None
        if self.backend is None:
            self._tree = cKDTree(self.targets) if self.n else None
            self.chunk_elements = 0
        else:
            self.chunk_elements = int(chunk_elements or chunk_elements_for(self.backend))
            self._order = np.argsort(self.targets[:, 0], kind="stable") if self.n else \
                np.zeros(0, np.int64)
            self._sorted_x = self.targets[self._order, 0] if self.n else np.zeros(0)
            self._dev = self.backend.to_device(np.ascontiguousarray(self.targets[self._order]))

    def query(self, points: np.ndarray, k: int = 1, max_dist: float = np.inf
              ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest targets of each point within ``max_dist``.

        Returns
        -------
        dist, idx : ndarray, shape (N, k)
            Sorted by distance; ``inf`` and ``n`` where fewer than k are in range.
        """
        points = np.ascontiguousarray(points, dtype=np.float64)
        n_pts = len(points)
        if n_pts == 0 or self.n == 0:
            return np.full((n_pts, k), np.inf), np.full((n_pts, k), self.n, np.int64)
        if self.backend is None:
            d, j = self._tree.query(points, k=k, distance_upper_bound=max_dist)
            return d.reshape(n_pts, k), j.reshape(n_pts, k).astype(np.int64)
        return self._dense_query(points, k, max_dist)

    def chunks(self, points: np.ndarray, max_dist: float
               ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """How :meth:`query` cuts its work: query order and ``(a, b, lo, hi)`` chunks.

        Sorted query rows ``a:b`` are compared with sorted targets ``lo:hi``; every
        chunk has ``(b - a) * (hi - lo) <= chunk_elements`` unless one row alone
        meets more targets than that.
        """
        n_pts = len(points)
        budget = max(1, self.chunk_elements)
        if not np.isfinite(max_dist):  # no band: every row meets every target
            step = max(1, budget // self.n)
            order = np.arange(n_pts)
            return order, [(a, min(a + step, n_pts), 0, self.n)
                           for a in range(0, n_pts, step)]
        order = np.argsort(points[:, 0], kind="stable")
        qx = points[order, 0]
        # A hair wider than max_dist: rounding of qx -/+ r must not drop a target that
        # the distance test (on the exact differences) would keep.
        r = max_dist * (1 + 1e-9) + 1e-9 * np.abs(qx)
        lo = np.searchsorted(self._sorted_x, qx - r, side="left")
        hi = np.searchsorted(self._sorted_x, qx + r, side="right")
        hi = np.maximum.accumulate(hi)  # NaN rows sort last and keep the band whole
        out, a = [], 0
        while a < n_pts:
            # Rows a..b-1 meet targets lo[a]..hi[b-1]; the cost grows with b.
            w = min(n_pts - a, budget)  # a chunk never has more rows than the budget
            cost = np.arange(1, w + 1) * (hi[a:a + w] - lo[a])
            b = a + max(1, int(np.searchsorted(cost, budget, side="right")))
            if hi[b - 1] > lo[a]:
                out.append((a, b, int(lo[a]), int(hi[b - 1])))
            a = b
        return order, out

    def _dense_query(self, points: np.ndarray, k: int, max_dist: float
                     ) -> tuple[np.ndarray, np.ndarray]:
        xp, be = self.backend.xp, self.backend
        dist = np.full((len(points), k), np.inf)
        idx = np.full((len(points), k), self.n, np.int64)
        order, chunks = self.chunks(points, max_dist)
        for a, b, lo, hi in chunks:
            rows_q = order[a:b]
            q = be.to_device(np.ascontiguousarray(points[rows_q]))
            tgt = self._dev[lo:hi]
            d2 = None
            for c in range(points.shape[1]):  # one (rows x band) array at a time
                diff = q[:, c:c + 1] - tgt[:, c][None, :]
                diff *= diff
                if d2 is None:
                    d2 = diff
                else:
                    d2 += diff
                del diff
            kk = min(k, hi - lo)
            rows = xp.arange(d2.shape[0])
            best_d, best_j = [], []
            for _ in range(kk):  # k passes of argmin: top-k without a full sort
                j = xp.argmin(d2, axis=1)
                best_j.append(j)
                best_d.append(d2[rows, j])
                d2[rows, j] = xp.inf
            del d2
            dd = np.sqrt(be.to_host(xp.stack(best_d, axis=1)))
            jj = self._order[be.to_host(xp.stack(best_j, axis=1)).astype(np.int64) + lo]
            out = ~(dd <= max_dist)
            dd[out], jj[out] = np.inf, self.n
            dist[rows_q, :kk], idx[rows_q, :kk] = dd, jj
        return dist, idx
