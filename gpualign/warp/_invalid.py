"""Invalid (NaN/inf) source pixels: where they are, filling them, growing them.

The warp must never spread invalid pixels beyond the interpolation kernel's reach,
and must stay within its memory bound at mosaic scale, where a NaN border touches
every row. So:

* :class:`PackedMask` holds a 2-D boolean mask at one bit per pixel (8 times less
  than a bool array: 112 MB instead of 900 MB for a 30000^2 source), built and read
  by row blocks, on any backend (``xp.packbits``/``xp.unpackbits``, NumPy or CuPy).
* :func:`fill_invalid` replaces invalid pixels by local means of valid ones before the
  spline prefilter, and :func:`grow_invalid` grows the invalid mask by the kernel's
  reach (the output pixels that must stay empty); both work only on windows around
  invalid pixels (:func:`_bad_windows`): the row blocks holding them and, within a
  block, the column ranges holding them, with the reach of context on every side.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpualign.backend import Backend

__all__ = ["FILL_BLOCK_PIXELS", "FILL_MEDIAN_SAMPLE", "PackedMask", "fill_invalid",
           "grow_invalid"]

#: Pixels per row block (the temporaries of the fill and growth scale with this).
FILL_BLOCK_PIXELS = 1 << 22
#: Largest sample of the image whose median fills pixels far from any valid one.
FILL_MEDIAN_SAMPLE = 1 << 20


class PackedMask:
    """A 2-D boolean mask stored at one bit per pixel (rows of ``ceil(nx / 8)`` bytes).

    Parameters
    ----------
    xp : module
        Array module holding the bits (NumPy or CuPy).
    bits : array of uint8, shape (ny, ceil(nx / 8))
        ``xp.packbits(mask, axis=1)``.
    shape : tuple of int
        ``(ny, nx)`` of the mask.
    """

    def __init__(self, xp: Any, bits: Any, shape: tuple[int, int]) -> None:
        self.xp, self.bits, self.shape = xp, bits, (int(shape[0]), int(shape[1]))

    @classmethod
    def zeros(cls, xp: Any, shape: tuple[int, int]) -> PackedMask:
        """An all-False mask."""
        return cls(xp, xp.zeros((int(shape[0]), -(-int(shape[1]) // 8)), dtype=xp.uint8),
                   shape)

    @classmethod
    def of_invalid(cls, xp: Any, image: Any, block_rows: int | None = None
                   ) -> PackedMask | None:
        """The non-finite pixels of ``image``, or None when there is none.

        Checked and packed in row blocks: no full-frame boolean array exists.
        """
        ny, nx = int(image.shape[0]), int(image.shape[1])
        rows = block_rows or max(1, FILL_BLOCK_PIXELS // max(nx, 1))
        out = None
        for a in range(0, ny, rows):
            block = ~xp.isfinite(image[a:a + rows])
            if out is None:
                if not bool(block.any()):
                    continue
                out = cls.zeros(xp, (ny, nx))
            out.bits[a:a + rows] = xp.packbits(block, axis=1)
        return out

    @functools.cached_property
    def bit_values(self) -> Any:
        """``[128, 64, ..., 1]`` (uint8) on the mask's backend.

        The bit of column ``c`` in its byte is ``bit_values[c % 8]`` (``packbits``
        order).
        """
        return self.xp.asarray(np.array([128, 64, 32, 16, 8, 4, 2, 1], np.uint8))

    def rows(self, lo: int, hi: int, c0: int = 0, c1: int | None = None) -> Any:
        """The mask's rows ``lo:hi`` and columns ``c0:c1`` as a boolean array."""
        c1 = self.shape[1] if c1 is None else c1
        b0 = c0 // 8
        part = self.xp.unpackbits(self.bits[lo:hi, b0:-(-c1 // 8)], axis=1)
        return part[:, c0 - 8 * b0:c1 - 8 * b0].astype(self.xp.bool_)

    def set_or(self, lo: int, c0: int, part: Any) -> None:
        """OR ``part`` (rows from ``lo``, columns from ``c0``, a multiple of 8) in."""
        if c0 % 8:
            raise ValueError("set_or needs a column start on a byte boundary")
        packed = self.xp.packbits(part.astype(self.xp.bool_), axis=1)
        b0 = c0 // 8
        view = self.bits[lo:lo + part.shape[0], b0:b0 + packed.shape[1]]
        view |= packed[:, :view.shape[1]]

    def nbytes(self) -> int:
        """Bytes of the packed bits."""
        return int(self.bits.nbytes)


def _fill_window(xp: Any, ndi: Any, image: Any, bad: Any, max_reach: int) -> tuple[Any, Any]:
    """Fill the invalid pixels of one window by growing-window means; (filled, left)."""
    valid = (~bad).astype(xp.float32)
    data = xp.where(bad, xp.float32(0), image).astype(xp.float32)
    out = data.copy()
    todo = bad.copy()
    size = 3
    while bool(todo.any()) and size <= 2 * max_reach + 1:
        num = ndi.uniform_filter(data, size=size, mode="constant")
        den = ndi.uniform_filter(valid, size=size, mode="constant")
        ok = todo & (den > 1e-6)
        out = xp.where(ok, num / xp.maximum(den, xp.float32(1e-6)), out)
        todo = todo & ~ok
        size = 2 * size - 1
    return out, todo


def _median_of_valid(xp: Any, image: Any, bad: PackedMask) -> Any:
    """Median of the valid pixels of a strided sample of at most FILL_MEDIAN_SAMPLE."""
    ny, nx = bad.shape
    step = max(1, int(math.ceil(math.sqrt(ny * nx / FILL_MEDIAN_SAMPLE))))
    invalid = xp.unpackbits(bad.bits[::step], axis=1)[:, :nx:step].astype(xp.bool_)
    sample = image[::step, ::step][~invalid]
    if sample.size == 0:  # valid pixels too sparse for the sample: all of them
        rows = max(1, FILL_BLOCK_PIXELS // max(nx, 1))
        sample = xp.concatenate([image[a:a + rows][~bad.rows(a, min(a + rows, ny))]
                                 for a in range(0, ny, rows)])
    return xp.median(sample).astype(xp.float32)


def fill_invalid(backend: Backend, image: Any, bad: PackedMask, max_reach: int = 32,
                 block_rows: int | None = None, in_place: bool = False) -> Any:
    """Replace invalid pixels by the mean of valid neighbours (growing windows).

    Each invalid pixel gets the mean of the valid pixels in the smallest window of
    3, 5, 9, 17, 33 or 65 pixels around it (up to ``2 * max_reach + 1``) that holds
    any. Only the pixels near valid data matter (the prefilter's influence decays by
    0.27 per pixel); anything farther than ``max_reach`` gets the median of the valid
    pixels (of a strided sample of at most :data:`FILL_MEDIAN_SAMPLE` pixels: it does
    not reach any output pixel, 0.27**32 ~ 1e-18).

    Computed per window around the invalid pixels (:func:`_bad_windows`) with
    ``max_reach`` pixels of context on every side, so every window lies inside it as
    in a whole-frame computation: clean blocks and columns are skipped, temporaries
    stay a few blocks in size (a whole 16384^2 frame needed ~6 GB of them), and a NaN
    border costs a strip per block (an 8192^2 source with 256 px NaN borders: 24 s ->
    2.5 s). With ``in_place`` a writeable C-contiguous float32 ``image`` is filled in
    its own memory (one full frame less); the result is the same, because each
    window reads only the valid pixels, which are never written.

    Parameters
    ----------
    backend : Backend
        Where ``image`` lives.
    image : array
        2-D image.
    bad : PackedMask
        Its invalid pixels.
    max_reach : int
        Half-width of the largest window.
    block_rows : int, optional
        Rows per block (default: about :data:`FILL_BLOCK_PIXELS` pixels).
    in_place : bool
        Fill ``image`` itself when its layout allows.

    Returns
    -------
    array
        ``image`` with its invalid pixels filled: ``image`` itself with ``in_place``
        (when its layout allows), else a new float32 array.
    """
    xp, ndi = backend.xp, backend.ndimage
    ny = int(image.shape[0])
    reuse = (in_place and image.dtype == xp.float32 and image.flags.c_contiguous
             and getattr(image.flags, "writeable", True))
    # Before anything is filled in place.
    median = _median_of_valid(xp, image, bad)
    out = image if reuse else image.astype(xp.float32, copy=True)
    halo = int(max_reach)
    for ra, rb, c0, c1 in _bad_windows(backend, bad, halo, block_rows):
        lo, hi = max(0, ra - halo), min(ny, rb + halo)
        filled, left = _fill_window(xp, ndi, image[lo:hi, c0:c1], bad.rows(lo, hi, c0, c1),
                                    max_reach)
        part, left = filled[ra - lo:rb - lo], left[ra - lo:rb - lo]
        if bool(left.any()):
            part = xp.where(left, median, part)
        out[ra:rb, c0:c1] = part
    return out


def grow_invalid(backend: Backend, bad: PackedMask, reach: int,
                 block_rows: int | None = None) -> PackedMask:
    """Invalid pixels grown by ``reach`` (Chebyshev distance), as a packed mask.

    Equals ``maximum_filter(bad, size=2 * reach + 1, mode="nearest")`` exactly, but
    is computed only on windows around invalid pixels (:func:`_bad_windows`, widened
    to whole bytes) and OR-ed together: a NaN border costs a strip per row block
    instead of a whole-frame filter (1.1 s at 8192^2), and no full-frame array exists.
    """
    ndi = backend.ndimage
    ny, nx = bad.shape
    out = PackedMask.zeros(backend.xp, bad.shape)
    size = 2 * int(reach) + 1
    for ra, rb, c0, c1 in _bad_windows(backend, bad, int(reach), block_rows):
        # Rows within reach of the invalid ones, columns widened to whole bytes: a
        # window's filter adds no value it lacks ('nearest'), so OR-ing windows that
        # overlap or miss some context never marks a pixel wrongly.
        lo, hi = max(0, ra - reach), min(ny, rb + reach)
        c0, c1 = c0 - c0 % 8, min(nx, -(-c1 // 8) * 8)
        part = ndi.maximum_filter(bad.rows(lo, hi, c0, c1).view(backend.xp.uint8),
                                  size=size, mode="nearest")
        out.set_or(lo, c0, part)
    return out


def _bad_windows(backend: Backend, bad: PackedMask, halo: int,
                 block_rows: int | None) -> Iterator[tuple[int, int, int, int]]:
    """Windows around the invalid pixels, as ``(ra, rb, c0, c1)``.

    Per row block, each range of columns holding invalid pixels (grown by ``halo``,
    see :func:`_runs`) and the rows ``ra:rb`` of the block that hold them in those
    columns. Only small vectors come to the host.
    """
    ny, nx = bad.shape
    rows = block_rows or max(1, FILL_BLOCK_PIXELS // max(nx, 1))
    for a in range(0, ny, rows):
        b = min(a + rows, ny)
        if not bool(bad.bits[a:b].any()):
            continue
        block_bad = bad.rows(a, b)
        for c0, c1 in _runs(backend.to_host(block_bad.any(axis=0)), halo):
            hit = np.flatnonzero(backend.to_host(block_bad[:, c0:c1].any(axis=1)))
            yield a + int(hit[0]), a + int(hit[-1]) + 1, c0, c1


def _runs(flags: np.ndarray, halo: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering the True entries of ``flags`` grown by ``halo``.

    Entries closer than ``2 * halo + 1`` share a range (their windows overlap).
    """
    idx = np.flatnonzero(np.asarray(flags))
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) > 2 * halo + 1)
    starts = np.concatenate([idx[:1], idx[cut + 1]])
    stops = np.concatenate([idx[cut], idx[-1:]])
    n = len(flags)
    return [(max(0, int(s) - halo), min(n, int(e) + halo + 1))
            for s, e in zip(starts, stops, strict=True)]
