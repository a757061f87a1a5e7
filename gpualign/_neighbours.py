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

from ._backend import Backend

__all__ = ["NeighbourIndex"]

CHUNK_ELEMENTS = 1 << 24  # query x target distances per chunk (128 MB of float64)


class NeighbourIndex:
    """Index over target points answering k-nearest queries within a radius.

    Parameters
    ----------
    targets : ndarray, shape (M, D)
        Host points (positions, or quad hash codes).
    backend : Backend, optional
        ``None`` or the NumPy backend: KD-tree. Any other: dense chunked distances
        with that backend's array module (the targets go to the device once).
    """

    def __init__(self, targets: np.ndarray, backend: Backend | None = None) -> None:
        self.targets = np.ascontiguousarray(targets, dtype=np.float64)
        self.n = len(self.targets)
        self.backend = backend if backend is not None and backend.name != "numpy" else None
        if self.backend is None:
            self._tree = cKDTree(self.targets) if self.n else None
        else:
            self._dev = self.backend.to_device(self.targets)

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

    def _dense_query(self, points: np.ndarray, k: int, max_dist: float
                     ) -> tuple[np.ndarray, np.ndarray]:
        xp = self.backend.xp
        dist = np.full((len(points), k), np.inf)
        idx = np.full((len(points), k), self.n, np.int64)
        step = max(1, CHUNK_ELEMENTS // max(self.n, 1))
        kk = min(k, self.n)
        for a in range(0, len(points), step):
            q = self.backend.to_device(points[a:a + step])
            diff = q[:, None, :] - self._dev[None, :, :]
            d2 = (diff * diff).sum(axis=2)
            del diff
            rows = xp.arange(d2.shape[0])
            best_d, best_j = [], []
            for _ in range(kk):  # k passes of argmin: top-k without a full sort
                j = xp.argmin(d2, axis=1)
                best_j.append(j)
                best_d.append(d2[rows, j])
                d2[rows, j] = xp.inf
            dd = np.sqrt(self.backend.to_host(xp.stack(best_d, axis=1)))
            jj = self.backend.to_host(xp.stack(best_j, axis=1)).astype(np.int64)
            out = dd > max_dist
            dd[out], jj[out] = np.inf, self.n
            dist[a:a + step, :kk], idx[a:a + step, :kk] = dd, jj
        return dist, idx
