"""Record of every host <-> "device" copy the stand-in makes."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Transfer", "TransferLog", "TransferForbidden"]


class TransferForbidden(RuntimeError):
    """A transfer happened inside :meth:`TransferLog.forbid`."""


@dataclass(frozen=True)
class Transfer:
    """One copy between host and device.

    Attributes
    ----------
    direction : str
        ``"h2d"`` (host to device) or ``"d2h"`` (device to host).
    nbytes : int
        Bytes copied.
    shape : tuple of int
        Shape of the array copied.
    dtype : str
        Its dtype.
    via : str
        What caused it: ``"asarray"``, ``"get"``, ``"asnumpy"``, ``"scalar"`` (a
        ``float()``/``int()``/``bool()``/``item()`` sync), ``"index"`` (a NumPy index
        array), ``"setitem"`` (NumPy values assigned), ``"repr"``...
    where : str
        ``file:line`` of the first caller outside the stand-in.
    """

    direction: str
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    via: str
    where: str = ""


def _caller() -> str:
    """``file:line`` of the innermost frame outside the strict_cupy package."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(here + os.sep):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class TransferLog:
    """Thread-safe counter of host <-> device copies (``strict_cupy.transfers``).

    Examples
    --------
    >>> log = TransferLog()
    >>> log.record("h2d", 400, (10, 10), "float32", "asarray")
    >>> log.h2d, log.d2h, log.h2d_bytes
    (1, 0, 400)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Transfer] = []
        self._forbid = 0

    def record(self, direction: str, nbytes: int, shape: tuple[int, ...], dtype: str,
               via: str) -> None:
        """Add one transfer (raises :class:`TransferForbidden` inside :meth:`forbid`)."""
        if direction not in ("h2d", "d2h"):
            raise ValueError(f"direction must be h2d or d2h, got {direction!r}")
        item = Transfer(direction, int(nbytes), tuple(int(s) for s in shape), str(dtype), via,
                        _caller())
        with self._lock:
            self._records.append(item)
            forbidden = self._forbid > 0
        if forbidden:
            raise TransferForbidden(
                f"strict_cupy: {direction} transfer of {nbytes} bytes ({via}) at "
                f"{item.where} inside a transfer-free block"
            )

    @property
    def records(self) -> list[Transfer]:
        """A copy of all transfers so far, oldest first."""
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        """Forget all transfers (the object stays the same)."""
        with self._lock:
            self._records.clear()

    def count(self, direction: str | None = None, *, min_bytes: int = 0,
              via: str | None = None) -> int:
        """Number of transfers matching a direction, a size floor and a cause."""
        return len(self.select(direction, min_bytes=min_bytes, via=via))

    def select(self, direction: str | None = None, *, min_bytes: int = 0,
               via: str | None = None) -> list[Transfer]:
        """The transfers matching a direction, a size floor and a cause."""
        return [
            t for t in self.records
            if (direction is None or t.direction == direction)
            and t.nbytes >= min_bytes and (via is None or t.via == via)
        ]

    @property
    def h2d(self) -> int:
        """Host -> device copies."""
        return self.count("h2d")

    @property
    def d2h(self) -> int:
        """Device -> host copies (scalar syncs included)."""
        return self.count("d2h")

    @property
    def h2d_bytes(self) -> int:
        """Bytes copied host -> device."""
        return sum(t.nbytes for t in self.select("h2d"))

    @property
    def d2h_bytes(self) -> int:
        """Bytes copied device -> host."""
        return sum(t.nbytes for t in self.select("d2h"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @contextlib.contextmanager
    def forbid(self) -> Iterator[None]:
        """Raise :class:`TransferForbidden` on any transfer inside the block."""
        with self._lock:
            self._forbid += 1
        try:
            yield
        finally:
            with self._lock:
                self._forbid -= 1

    def summary(self, min_bytes: int = 0) -> str:
        """One line per transfer of at least ``min_bytes`` (for assertion messages)."""
        rows = [
            f"{t.direction} {t.nbytes:>10d} B {t.dtype}{list(t.shape)} via {t.via} at {t.where}"
            for t in self.records if t.nbytes >= min_bytes
        ]
        return "\n".join(rows) if rows else "(no transfers)"

    def __repr__(self) -> str:
        return (f"TransferLog(h2d={self.h2d} ({self.h2d_bytes} B), "
                f"d2h={self.d2h} ({self.d2h_bytes} B))")
