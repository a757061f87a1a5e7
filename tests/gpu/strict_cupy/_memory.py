"""Device memory of the stand-in: every allocation recorded, the pool bounded.

Every device array's buffer is an *allocation*: created by a CuPy function (views
are not), recorded with its dtype, shape, size and caller, live until the last array
using it is gone. CuPy's pool (``cupy.get_default_memory_pool()``) hands out blocks
rounded up to 512 bytes; the stand-in's pool does the same arithmetic, returns a
freed block to the device at once (CuPy caches it, and gpualign counts cached blocks
as free, so the two agree on what fits) and refuses an allocation that does not fit
the device's free memory or the pool's limit with CuPy's
``cupy.cuda.memory.OutOfMemoryError`` (after a garbage collection, as CuPy retries).

``strict_cupy.configure(free_memory=F)`` means: F bytes are free *now*; allocations
made afterwards take from them and frees give back (``Device().mem_info`` reports
it), whatever was allocated before (earlier tests' cached arrays) aside.
"""

from __future__ import annotations

import gc
import math
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._transfers import _caller  # file:line of the first frame outside the stand-in

__all__ = ["ALLOC_UNIT", "Allocation", "DeviceMemory", "MEMORY", "OutOfMemoryError"]

#: CuPy's pool rounds every request up to a multiple of this.
ALLOC_UNIT = 512
#: Allocations kept in :attr:`DeviceMemory.records` (the totals count all of them).
MAX_RECORDS = 200_000


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError`` (same message)."""

    def __init__(self, size: int, total: int, limit: int = 0) -> None:
        self._size, self._total, self._limit = size, total, limit
        if limit == 0:
            msg = (f"Out of memory allocating {size:,} bytes "
                   f"(allocated so far: {total:,} bytes).")
        else:
            msg = (f"Out of memory allocating {size:,} bytes (allocated so far: "
                   f"{total:,} bytes, limit set to: {limit:,} bytes).")
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, tuple[int, int, int]]:
        return type(self), (self._size, self._total, self._limit)


@dataclass(frozen=True)
class Allocation:
    """One device allocation.

    Attributes
    ----------
    nbytes : int
        Bytes of the array (the pool's block is this rounded up to 512).
    dtype : str
    shape : tuple of int
    where : str
        ``file:line`` of the first caller outside the stand-in.
    """

    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    where: str


def pool_size(nbytes: int) -> int:
    """The pool block serving ``nbytes`` (0 for an empty array)."""
    return ALLOC_UNIT * math.ceil(int(nbytes) / ALLOC_UNIT) if nbytes > 0 else 0


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class DeviceMemory:
    """The stand-in's device memory (``strict_cupy.allocations``).

    Live and peak figures are in pool bytes (rounded up to 512); per-dtype figures
    in bytes of the arrays. :meth:`reset` starts a new measurement (records, totals
    and peaks), arrays alive at that moment staying counted as live.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._live: dict[int, tuple[int, int, str]] = {}  # id(root) -> (pool, nbytes, dtype)
        self.used = 0  # pool bytes in use
        self.base = 0  # ``used`` when free_memory was last set
        self.limit = 0  # the pool's limit (0: none)
        self._records: deque[Allocation] = deque(maxlen=MAX_RECORDS)
        self._totals: dict[str, list[int]] = {}  # dtype -> [count, bytes] since reset
        self._live_dtype: dict[str, int] = {}
        self._peak_dtype: dict[str, int] = {}
        self._peak = 0

    # -- capacity ------------------------------------------------------------------
    def free(self, free_memory: int) -> int:
        """Bytes the device has free, given what it had when ``free_memory`` was set."""
        return int(free_memory) - (self.used - self.base)

    def _fits(self, size: int) -> tuple[bool, int]:
        from ._cuda import STATE

        if self.limit and self.used + size > self.limit:
            return False, self.limit
        return size <= self.free(STATE.free_memory), 0

    def reserve(self, nbytes: int) -> None:
        """Raise OutOfMemoryError if ``nbytes`` cannot be allocated now (checked first)."""
        size = pool_size(nbytes)
        if size and not self._fits(size)[0]:
            gc.collect()  # CuPy frees cached blocks and collects garbage, then retries
            ok, limit = self._fits(size)
            if not ok:
                raise OutOfMemoryError(size, self.used, limit)

    # -- allocation ----------------------------------------------------------------
    def track(self, a: np.ndarray) -> None:
        """Record ``a``'s buffer if it is a new allocation (raises when it does not fit)."""
        root = _root(a)
        key = id(root)
        if key in self._live:
            return
        nbytes = int(root.nbytes)
        size = pool_size(nbytes)
        if size == 0:
            return
        self.reserve(nbytes)
        dtype = str(root.dtype)
        with self._lock:
            if key in self._live:  # pragma: no cover - another thread got there
                return
            self._live[key] = (size, nbytes, dtype)
            self.used += size
            self._peak = max(self._peak, self.used)
            self._live_dtype[dtype] = self._live_dtype.get(dtype, 0) + nbytes
            self._peak_dtype[dtype] = max(self._peak_dtype.get(dtype, 0),
                                          self._live_dtype[dtype])
            count = self._totals.setdefault(dtype, [0, 0])
            count[0] += 1
            count[1] += nbytes
            self._records.append(Allocation(nbytes, dtype, tuple(root.shape), _caller()))
        weakref.finalize(root, self._release, key)

    def _release(self, key: int) -> None:
        with self._lock:
            entry = self._live.pop(key, None)
            if entry is None:  # pragma: no cover
                return
            size, nbytes, dtype = entry
            self.used -= size
            self._live_dtype[dtype] -= nbytes

    # -- queries -------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new measurement: forget records and totals.

        Peaks restart from the bytes live now (subtract :meth:`live_bytes` taken just
        before to get what the measured code added).
        """
        with self._lock:
            self._records.clear()
            self._totals.clear()
            self._peak = self.used
            self._peak_dtype = {d: v for d, v in self._live_dtype.items() if v}

    @property
    def records(self) -> list[Allocation]:
        """Allocations since the last reset (at most the last 200000), oldest first."""
        with self._lock:
            return list(self._records)

    def count(self, dtype: Any = None) -> int:
        """Allocations since the last reset (of ``dtype``, or all)."""
        with self._lock:
            if dtype is None:
                return sum(c for c, _ in self._totals.values())
            return self._totals.get(str(np.dtype(dtype)), [0, 0])[0]

    def allocated_bytes(self, dtype: Any = None) -> int:
        """Bytes allocated since the last reset (of ``dtype``, or all), freed or not."""
        with self._lock:
            if dtype is None:
                return sum(b for _, b in self._totals.values())
            return self._totals.get(str(np.dtype(dtype)), [0, 0])[1]

    def live_bytes(self, dtype: Any = None) -> int:
        """Bytes of the live arrays (of ``dtype``), or pool bytes in use (all)."""
        with self._lock:
            if dtype is None:
                return self.used
            return self._live_dtype.get(str(np.dtype(dtype)), 0)

    def peak_bytes(self, dtype: Any = None) -> int:
        """Highest :meth:`live_bytes` since the last reset."""
        with self._lock:
            if dtype is None:
                return self._peak
            return self._peak_dtype.get(str(np.dtype(dtype)), 0)

    def by_dtype(self) -> dict[str, tuple[int, int, int]]:
        """dtype -> (allocations, bytes allocated, peak live bytes) since the last reset."""
        with self._lock:
            return {d: (c, b, self._peak_dtype.get(d, 0)) for d, (c, b) in
                    sorted(self._totals.items())}

    def summary(self, dtype: Any = None, top: int = 12) -> str:
        """The callers that allocated most (of ``dtype``), for assertion messages."""
        want = None if dtype is None else str(np.dtype(dtype))
        per: dict[str, list[int]] = {}
        for r in self.records:
            if want is None or r.dtype == want:
                acc = per.setdefault(f"{r.dtype} at {r.where}", [0, 0])
                acc[0] += 1
                acc[1] += r.nbytes
        rows = sorted(per.items(), key=lambda kv: -kv[1][1])[:top]
        return "\n".join(f"{b:>12d} B in {n:>5d} allocations: {k}" for k, (n, b) in rows) \
            or "(no allocations)"

    def __repr__(self) -> str:
        return (f"DeviceMemory(used={self.used} B, peak={self._peak} B, "
                f"allocations={self.count()})")


#: The stand-in's device memory (``strict_cupy.allocations``).
MEMORY = DeviceMemory()
