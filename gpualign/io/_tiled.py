"""Writing a big output FITS file tile by tile, atomically, without holding it in memory.

:class:`TiledFitsWriter` lays out the whole file up front (primary image, then the
``FOOTPRINT`` and, if any, ``MASK`` image extensions, each header followed by its
data section padded to the FITS block of 2880 bytes), in a temporary file of the
final size in the output's directory; :meth:`TiledFitsWriter.write_rows` then
writes rows of each section at their offset with ``os.pwrite`` (thread-safe, so the
warp's tile threads call it directly; the pages go to the page cache, not to this
process's memory), and on Linux a background thread starts their write to disk
(``sync_file_range``) while the warp goes on; :meth:`TiledFitsWriter.commit` makes
the file durable (``fsync``, which then has little left to wait for) and renames
it onto the output path. An interrupted write leaves no partial output. The file is the
one astropy writes for the same HDUs (same header cards, big-endian data).

:func:`warp_to_fits` is the warp streamed through such a writer: peak memory is the
source image and its spline coefficients plus a few tiles, whatever the output size.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError
from gpualign._system import publish, reporting_write_errors, temporary_beside
from gpualign.io._write import WEIGHT_HDU_NAMES
from gpualign.products import TileExtras
from gpualign.warp import warp

__all__ = ["TiledFitsWriter", "warp_to_fits", "STREAM_MIN_PIXELS"]

BLOCK = 2880

#: Outputs written to a file with at least this many pixels are streamed tile by tile.
STREAM_MIN_PIXELS = 4096 * 4096

_BITPIX = {np.dtype(np.float32): -32, np.dtype(np.float64): -64, np.dtype(np.uint8): 8}


#: sync_file_range flag: start writing the dirty pages of the range, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Any:
    """The C library's ``sync_file_range`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return fn


class _Writeback:
    """Starts the disk writes of written byte ranges in a thread, while the warp goes on.

    Only a head start for the final ``fsync`` (which still makes the file durable and
    reports any error): failures here are ignored.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.fn = _sync_file_range()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        if self.fn is not None:
            self.thread = threading.Thread(target=self._run, name="gpualign-writeback",
                                           daemon=True)
            self.thread.start()

    def add(self, pos: int, n: int) -> None:
        if self.thread is not None:
            self.queue.put((pos, n))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self.fn(self.fd, item[0], item[1], _SYNC_FILE_RANGE_WRITE)

    def stop(self) -> None:
        """Wait until the thread is done (before the file descriptor is closed)."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _image_header(base: fits.Header | None, shape: tuple[int, int], dtype: np.dtype,
                  extname: str | None) -> fits.Header:
    one = np.zeros((1, 1), dtype)
    if extname is None:
        hdr = fits.PrimaryHDU(one, header=base).header
    else:
        hdr = fits.ImageHDU(one, header=base, name=extname).header
    hdr["NAXIS1"], hdr["NAXIS2"] = int(shape[1]), int(shape[0])
    if extname is None and "EXTEND" not in hdr:  # extensions follow (as astropy writes it)
        hdr.set("EXTEND", True, after="NAXIS2")
    return hdr


class TiledFitsWriter:
    """An output FITS file (data, FOOTPRINT, optional MASK and weight) filled by row blocks.

    Parameters
    ----------
    path : str or Path
        Final output path (written to a temporary name first).
    header : astropy.io.fits.Header or None
        Cards of the primary HDU (structural keywords are set here).
    shape : tuple of int
        ``(ny, nx)`` of every image.
    dtype : dtype
        Data type of the primary image (float32 or float64).
    mask : bool
        Whether a ``MASK`` extension (uint8) follows the footprint.
    weight : str, optional
        Extension name of a float32 weight plane after those (``VARIANCE``...).
    overwrite : bool
        Replace an existing ``path`` on commit (otherwise InputError now).
    """

    def __init__(self, path: str | Path, header: fits.Header | None,
                 shape: tuple[int, int], dtype: Any = np.float32, *, mask: bool = False,
                 weight: str | None = None, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise InputError(f"output {self.path} exists", hint="use --overwrite to replace it")
        dtype = np.dtype(dtype)
        if dtype not in _BITPIX:
            raise ValueError(f"cannot stream {dtype} pixels")
        planes = [(None, dtype, header), ("FOOTPRINT", np.dtype(np.uint8), None)]
        if mask:
            planes.append(("MASK", np.dtype(np.uint8), None))
        if weight is not None:
            planes.append((weight, np.dtype(np.float32), None))
        self.weight_section = weight
        self.sections: dict[str, tuple[int, np.dtype]] = {}
        blobs: list[tuple[int, bytes]] = []
        offset = 0
        ny, nx = self.shape
        for name, dt, base in planes:
            raw = _image_header(base, self.shape, dt, name).tostring().encode("ascii")
            blobs.append((offset, raw))
            offset += len(raw)
            self.sections[name or "DATA"] = (offset, dt.newbyteorder(">"))
            offset += _padded(ny * nx * dt.itemsize)
        self.size = offset
        fd, self.tmp = temporary_beside(self.path)
        self.fd: int | None = fd
        self.writeback: _Writeback | None = None
        try:
            os.ftruncate(fd, self.size)  # sparse: the padding reads as zeros
            for off, raw in blobs:
                os.pwrite(fd, raw, off)
            self.writeback = _Writeback(fd)
        except BaseException:
            self.abort()
            raise

    def write_rows(self, section: str, y0: int, rows: np.ndarray) -> None:
        """Write ``rows`` (shape ``(k, nx)``) as rows ``y0:y0+k`` of ``section``.

        ``section`` is ``"DATA"``, ``"FOOTPRINT"`` or ``"MASK"``; thread-safe.
        """
        offset, dt = self.sections[section]
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or y0 + len(rows) > self.shape[0]:
            raise ValueError(f"rows of shape {rows.shape} at {y0} do not fit {self.shape}")
        raw = np.ascontiguousarray(rows, dtype=dt)
        view = memoryview(raw).cast("B")
        pos = start = offset + y0 * self.shape[1] * dt.itemsize
        while view:  # pwrite may write less than asked
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n
        if self.writeback is not None:
            self.writeback.add(start, pos - start)

    def tile(self, y0: int, y1: int, data: np.ndarray, footprint: np.ndarray,
             mask: np.ndarray | None, weight: np.ndarray | None = None) -> None:
        """One finished tile of every section (rows ``y0:y1``)."""
        self.write_rows("DATA", y0, data)
        self.write_rows("FOOTPRINT", y0, footprint)
        if mask is not None and "MASK" in self.sections:
            self.write_rows("MASK", y0, mask)
        if weight is not None and self.weight_section is not None:
            self.write_rows(self.weight_section, y0, weight)

    def commit(self) -> None:
        """Make the file complete on disk and rename it onto the output path."""
        try:
            self._stop_writeback()
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            if self.path.exists() and not self.overwrite:
                raise InputError(f"output {self.path} exists",
                                 hint="use --overwrite to replace it")
            publish(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file (nothing is left at the output path)."""
        self._stop_writeback()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        Path(self.tmp).unlink(missing_ok=True)

    def _stop_writeback(self) -> None:
        if self.writeback is not None:
            self.writeback.stop()
            self.writeback = None

    def __enter__(self) -> TiledFitsWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def warp_to_fits(image: np.ndarray, transform: Any, shape: tuple[int, int], path: str | Path,
                 header: fits.Header | None, *, backend: Any, order: int = 3,
                 cval: float = float("nan"), mask: np.ndarray | None = None,
                 threads: int | None = None, dtype: Any = np.float32,
                 tile_rows: int | None = None, overwrite: bool = False,
                 overwrite_input: bool = False, extras: TileExtras | None = None) -> None:
    """Warp ``image`` onto ``shape`` straight into the FITS file ``path``, tile by tile.

    The file holds what :func:`gpualign.io.result_hdus` would write for the in-memory
    warp (primary data with ``header``, ``FOOTPRINT``, ``MASK`` as uint8 when a
    boolean or uint8 ``mask`` is given, the weight map when ``extras`` resample one),
    and each tile gets the extras (flux, weights) before it is written, so no plane
    is ever held whole.

    Parameters
    ----------
    image, transform, shape, backend, order, cval, mask, threads, dtype, tile_rows
        As for :func:`gpualign.warp.warp`.
    path : str or Path
        Output file, written atomically.
    header : astropy.io.fits.Header or None
        Primary header cards.
    overwrite : bool
        Replace an existing file.
    overwrite_input : bool
        Let the prefilter work in ``image``'s memory (see ``warp``).
    extras : TileExtras, optional
        Flux conservation and weight resampling, applied per tile.
    """
    if mask is not None and np.asarray(mask).dtype not in (np.dtype(bool), np.dtype(np.uint8)):
        raise ValueError("streamed outputs carry boolean or uint8 masks only")
    weight = (WEIGHT_HDU_NAMES[extras.weight_type]
              if extras is not None and extras.has_weight else None)
    with reporting_write_errors(Path(path)), \
            TiledFitsWriter(path, header, shape, dtype, mask=mask is not None, weight=weight,
                            overwrite=overwrite) as writer:
        def sink(y0: int, y1: int, data: np.ndarray, footprint: np.ndarray,
                 tile_mask: np.ndarray | None) -> None:
            w = None
            if extras is not None and extras.active:
                w = extras.rows(y0, data, footprint)
            writer.tile(y0, y1, data, footprint, tile_mask, w)

        warp(image, transform, shape, backend=backend, order=order, cval=cval, mask=mask,
             threads=threads, dtype=dtype, tile_rows=tile_rows, sink=sink,
             overwrite_input=overwrite_input)
