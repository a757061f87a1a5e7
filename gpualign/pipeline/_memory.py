"""How much memory a frame's warp will need, checked before it allocates anything.

The warp keeps the source (and its variance and mask) resident, prefilters it in
place, and resamples the output in row tiles on every thread. Its peak is therefore
what is resident, plus the tiles' temporaries, plus the output planes when the
output is built in memory; streamed into a file, the output costs only its tiles.
:func:`warp_memory` estimates both plans; :func:`check_memory` refuses, in one line
that gives the sizes, a run whose plan does not fit the memory available (or the
budget the user gives with ``max_memory``, e.g. on a machine with swap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpualign._errors import InputError
from gpualign._system import available_memory
from gpualign.warp import TILE_PIXELS

__all__ = ["WarpMemory", "warp_memory", "check_memory", "memory_budget", "GIB"]

GIB = float(1 << 30)
#: Bytes an output pixel of a tile needs while it is sampled: [sy, sx] in float64,
#: the inside masks and comparison temporaries.
_TILE_BYTES_PER_PIXEL = 24


@dataclass(frozen=True)
class WarpMemory:
    """Bytes of one frame's warp, as its two plans need them.

    ``resident``: already allocated; ``tiles``: the tiles' temporaries; ``output``:
    the whole output planes, when built in memory.
    """

    resident: int
    tiles: int
    output: int

    def new(self, streamed: bool) -> int:
        """Bytes still to allocate: the tiles, and the output unless it is streamed."""
        return self.tiles + (0 if streamed else self.output)


def warp_memory(shape: tuple[int, int], *, dtype: object, resident: int, threads: int,
                mask_itemsize: int = 0, mask_planes: int = 0, weight: bool = False,
                ) -> WarpMemory:
    """Estimate the warp's memory for an output of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the output.
    dtype : dtype
        Output data type.
    resident : int
        Bytes already held: the source pixels, mask and variance.
    threads : int
        Tiles sampled at once.
    mask_itemsize, mask_planes : int
        Bytes per pixel of the output mask (0: none) and its bit planes.
    weight : bool
        Whether a weight map is resampled too (float32 out, float64 per tile).

    Returns
    -------
    WarpMemory
    """
    pixels = int(shape[0]) * int(shape[1])
    itemsize = np.dtype(dtype).itemsize
    per_out = itemsize + 1 + mask_itemsize + (4 if weight else 0)  # data, footprint, ...
    per_tile = (_TILE_BYTES_PER_PIXEL + 2 * itemsize + mask_planes * (1 + mask_itemsize)
                + (16 if weight else 0))
    tile = min(pixels, TILE_PIXELS)
    return WarpMemory(int(resident), max(int(threads), 1) * tile * per_tile, pixels * per_out)


def memory_budget(max_memory: float | None, resident: int = 0) -> tuple[int, str]:
    """Bytes new allocations may take, and where the figure comes from."""
    if max_memory is not None:
        return max(int(max_memory * GIB) - int(resident), 0), "allowed by max_memory"
    return available_memory(), "available"


def check_memory(what: str, need: int, max_memory: float | None, resident: int = 0,
                 hint: str = "") -> None:
    """InputError when ``need`` more bytes do not fit the budget.

    Parameters
    ----------
    what : str
        What needs them, for the message ("the 200000x200000 output").
    need : int
        Bytes still to allocate.
    max_memory : float, optional
        The user's budget for the whole run, GiB (default: the memory available).
    resident : int
        Bytes already held, counted against ``max_memory``.
    hint : str
        What the user can change.
    """
    budget, source = memory_budget(max_memory, resident)
    if need > budget:
        hints = [hint] if hint else []
        if max_memory is None:
            hints.append("to run anyway (e.g. with swap) allow more with max_memory "
                         "(--max-memory GIB)")
        raise InputError(f"{what} needs {need / GIB:.3g} GiB, more than the "
                         f"{budget / GIB:.3g} GiB {source}", hint="; ".join(hints))
