"""Resampling the source onto the template grid, in row tiles, on any backend.

The same code runs on NumPy/SciPy and CuPy/cupyx: it only uses ``backend.xp`` and
``backend.ndimage``. The image goes to the device once; per tile, the source
coordinates of the output pixels are computed (affine + separable surfaces), the
prefiltered image sampled, and the footprint and masks filled; nothing of full-frame
coordinate size ever exists. On the CPU, tiles run in threads (SciPy releases the
GIL in its interpolation code). The per-pixel maths is independent of the tiling,
so tiled and untiled results are identical.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpualign._errors import GpuAlignError
from gpualign._system import single_threaded_blas, usable_cores
from gpualign.backend import (
    Backend,
    DeviceOutOfMemory,
    _host,
    is_out_of_memory,
    release_device_memory,
)
from gpualign.transform import Transform
from gpualign.warp._invalid import PackedMask, fill_invalid, grow_invalid
from gpualign.warp._sampler import TileSampler, empty_like_tile

log = logging.getLogger("gpualign")

__all__ = ["bits_present", "WarpResult", "warp", "kernel_reach", "default_threads",
           "tile_rows_for", "tile_bytes_per_pixel"]

TILE_PIXELS = 1 << 20  # output pixels per tile
PREFILTER_COLS = 256  # columns per block of the prefilter's axis-0 pass (CPU)


def default_threads() -> int:
    """Threads for CPU tiles: the usable cores, at most 8."""
    return max(1, min(8, usable_cores()))


def kernel_reach(order: int) -> int:
    """Half-width, in pixels around the nearest pixel, of the interpolation kernel.

    A sample at ``s`` with a B-spline of ``order`` uses the source pixels within
    ``ceil(order / 2)`` of ``round(s)`` (orders 0-5).
    """
    return int(math.ceil(order / 2))


@dataclass
class WarpResult:
    """Output of :func:`warp`, as host NumPy arrays.

    Attributes
    ----------
    data : ndarray
        Resampled image (float32 unless asked otherwise), ``cval`` outside the footprint.
    footprint : ndarray of bool
        True where the output pixel came from valid source data.
    mask : ndarray or None
        The source mask resampled: each output pixel has the OR of the bits of the
        source pixels within the kernel's reach.
    """

    data: np.ndarray
    footprint: np.ndarray
    mask: np.ndarray | None = None


def _row_blocks(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // parts))
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def prefilter(
    backend: Backend, image: Any, order: int, threads: int = 1, *, overwrite: bool = False
) -> Any:
    """B-spline prefilter (mirror boundary) into float32, axis 1 then axis 0.

    On NumPy the rows (then the columns) are split between threads; each line is
    filtered whole, so the result does not depend on the number of threads. The
    compiled host filter (:mod:`gpualign._backend._host`) does it when installed,
    with SciPy's values bit for bit; else SciPy's ``spline_filter1d``. With
    ``overwrite`` a writeable C-contiguous float32 ``image`` is filtered in place
    (no second full-frame array).
    """
    xp, ndi = backend.xp, backend.ndimage
    reuse = (overwrite and image.dtype == xp.float32 and image.flags.c_contiguous
             and getattr(image.flags, "writeable", True))
    out = image if reuse else xp.array(image, dtype=xp.float32, copy=True)
    if order <= 1:
        return out
    if backend.name != "numpy":
        for axis in (1, 0):
            out = ndi.spline_filter1d(out, order, axis=axis, output=xp.float32, mode="mirror")
        return out
    if _host.prefilter(out, order, threads):  # compiled: same values, ~5x faster
        return out

    def rows(block: tuple[int, int]) -> None:
        a, b = block
        ndi.spline_filter1d(out[a:b], order, axis=1, output=out[a:b], mode="mirror")

    def cols(block: tuple[int, int]) -> None:
        # Columns filtered as the rows of a transposed copy of a narrow block: the
        # same 1-D filter on the same values (identical results), read contiguously
        # (filtering along axis 0 in place reads one page per pixel: 3x slower at 16k).
        a, b = block
        t = np.ascontiguousarray(out[:, a:b].T)
        ndi.spline_filter1d(t, order, axis=1, output=t, mode="mirror")
        out[:, a:b] = t.T

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(rows, _row_blocks(out.shape[0], 4 * threads)))
        list(pool.map(cols, [(a, min(a + PREFILTER_COLS, out.shape[1]))
                             for a in range(0, out.shape[1], PREFILTER_COLS)]))
    return out


def bits_present(m: np.ndarray) -> int:
    """OR of all values of an integer or bool mask, as the bits of its uint64 cast."""
    if m.size == 0:
        return 0
    if m.dtype == bool:
        return int(bool(m.any()))
    # Negative values of signed masks sign-extend, as astype(uint64) does.
    return int(np.bitwise_or.reduce(m, axis=None)) & (2**64 - 1)


def _bit_plane(xp: Any, m: Any, bit: int) -> Any:
    """Bit ``bit`` of the uint64 cast of device mask ``m``, as uint8 0/1."""
    if m.dtype == xp.bool_:
        return m.astype(xp.uint8)
    if bit >= m.dtype.itemsize * 8:  # only sign-extended bits of negative values
        return (m < 0).astype(xp.uint8)
    return ((m >> bit) & 1).astype(xp.uint8)


#: Most output pixels per tile on a GPU (when its free memory allows).
GPU_TILE_PIXELS = 1 << 24
#: Fraction of the free device memory that one tile's temporaries may use.
GPU_TILE_MEMORY_FRACTION = 0.25


def tile_rows_for(
    backend: Backend, ny: int, nx: int, *, dtype: Any = np.float32, n_planes: int = 0,
    has_bad: bool = False, mask_itemsize: int = 0, fused: bool = False,
    streamed: bool = False,
) -> int:
    """Output rows per warp tile.

    On NumPy, about :data:`TILE_PIXELS` pixels (tiles feed the CPU threads). On a
    GPU, as many rows as fit in :data:`GPU_TILE_MEMORY_FRACTION` of the free device
    memory (``backend.free_memory()``, read after the resident arrays and the
    output exist), at most :data:`GPU_TILE_PIXELS` pixels. What one output pixel of
    a tile holds on the device (:func:`tile_bytes_per_pixel`) depends on the path:
    the fused kernel writes straight into the output and needs coordinates only for
    the invalid-pixel and mask lookups; ``cupyx.scipy.ndimage`` needs them always.
    The tiling never changes the pixels.

    Parameters
    ----------
    backend : Backend
        Where the warp runs.
    ny, nx : int
        Output shape.
    dtype : dtype
        Output data type.
    n_planes : int
        Mask bit planes resampled alongside.
    has_bad : bool
        Whether the source has invalid pixels (their grown mask is looked up).
    mask_itemsize : int
        Bytes per pixel of the output mask.
    fused : bool
        Whether the fused kernel samples.
    streamed : bool
        Whether each tile has its own output buffers (a sink), not rows of the output.

    Returns
    -------
    int
        Rows per tile, at least 1.
    """
    nx = max(int(nx), 1)
    if not backend.is_gpu:
        return max(8, TILE_PIXELS // nx)
    per_pixel = tile_bytes_per_pixel(dtype=dtype, n_planes=n_planes, has_bad=has_bad,
                                     mask_itemsize=mask_itemsize, fused=fused,
                                     streamed=streamed)
    try:
        free = int(backend.free_memory())
    except Exception:  # a device that cannot say: the CPU tile size
        free = 0
    if free <= 0:
        return max(8, TILE_PIXELS // nx)
    fit = int(free * GPU_TILE_MEMORY_FRACTION) // (per_pixel * nx)
    rows = max(1, min(fit, GPU_TILE_PIXELS // nx, max(int(ny), 1)))
    log.debug("warp tiles on %s: %d rows of %d px (%.0f MB free, %d B/px)",
              backend.name, rows, nx, free / 2**20, per_pixel)
    return rows


def tile_bytes_per_pixel(*, dtype: Any = np.float32, n_planes: int = 0,
                         has_bad: bool = False, mask_itemsize: int = 0,
                         fused: bool = False, streamed: bool = False) -> int:
    """Device bytes one output pixel of a GPU tile holds at most, output rows aside.

    * ``cupyx.scipy.ndimage``: the [sy, sx] coordinates (16 bytes, float64: positions
      in a 30000-pixel source need it), the inside masks and their temporary (2), the
      sampled values and their ``where`` copy (2 x itemsize);
    * fused kernel: nothing (it writes the output rows), the coordinates (16) only
      when invalid pixels or a mask must be looked up;
    * invalid pixels: the nearest-pixel lookup's rounding (8, float64), its row and
      column indices and the column's byte index (3 x 4), the bytes read and the
      lookup's complement (2);
    * per mask bit plane: its sample (1), the shifted bits (2 x mask itemsize), and
      the accumulated bits (mask itemsize, + 1 for the plane's cast);
    * streamed: the tile's own data, footprint and mask buffers.
    """
    itemsize = np.dtype(dtype).itemsize
    per_pixel = 0 if fused else 16 + 2 + 2 * itemsize
    if fused and (has_bad or n_planes):
        per_pixel += 16
    if has_bad:
        per_pixel += 8 + 12 + 2
    if n_planes:
        per_pixel += 2 + 3 * max(int(mask_itemsize), 1)
    if streamed:
        per_pixel += itemsize + 1 + int(mask_itemsize)
    return max(per_pixel, 1)


_FUSED_STATUS: dict[int, bool] = {}


def _use_fused(backend: Backend, method: str) -> bool:
    """Whether to sample with the fused CUDA kernel (compiled once per array module)."""
    if method not in ("auto", "ndimage", "fused"):
        raise ValueError(f"method must be auto, ndimage or fused, got {method!r}")
    if backend.name != "cupy" or method == "ndimage":
        if method == "fused" and backend.name != "cupy":
            raise ValueError("the fused kernel needs the cupy backend")
        return False
    key = id(backend.xp)
    # "fused" asked for explicitly re-raises why it cannot run, even when "auto" has
    # already found out and fallen back.
    if key not in _FUSED_STATUS or (method == "fused" and not _FUSED_STATUS[key]):
        from gpualign.backend import _kernels

        try:
            # CuPy compiles a RawModule on first use, not when it is made: getting a
            # kernel compiles the module now, so a failure falls back here and not in
            # the middle of the warp.
            _kernels.get_module(backend.xp).get_function("gpualign_warp_fused_o0")
            _FUSED_STATUS[key] = True
        except Exception as exc:  # no NVRTC, or a stand-in without kernels
            if method == "fused":
                raise
            log.info("fused kernel unavailable (%s); warping with cupyx.scipy.ndimage",
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            _FUSED_STATUS[key] = False
    return _FUSED_STATUS[key]


def warp(
    image: np.ndarray,
    transform: Transform,
    output_shape: tuple[int, int],
    *,
    backend: Backend,
    order: int = 3,
    cval: float = np.nan,
    mask: np.ndarray | None = None,
    dtype: Any = np.float32,
    tile_rows: int | None = None,
    threads: int | None = None,
    method: str = "auto",
    overwrite_input: bool = False,
    sink: Any = None,
) -> WarpResult:
    """Resample ``image`` onto a grid of ``output_shape`` through ``transform``.

    Parameters
    ----------
    image : ndarray
        Source image (host); non-finite pixels are treated as missing.
    transform : Transform
        Output (template) pixel -> source pixel mapping.
    output_shape : tuple of int
        ``(ny, nx)`` of the output.
    backend : Backend
        Where to compute.
    order : int
        Spline interpolation order, 0-5.
    cval : float
        Value outside the footprint.
    mask : ndarray of bool or unsigned int, optional
        Source bad-pixel mask or bitmask, resampled alongside.
    dtype : dtype
        Output data type (float32 by default).
    tile_rows : int, optional
        Output rows per tile (default: about a million pixels per tile).
    threads : int, optional
        CPU threads over tiles (NumPy backend only; default: the usable cores).
    method : {"auto", "ndimage", "fused"}
        On a GPU, ``"fused"`` samples with gpualign's own kernel (source position and
        spline sample in one pass, no coordinate arrays) and ``"ndimage"`` with
        ``cupyx.scipy.ndimage.map_coordinates``; ``"auto"`` uses the fused kernel
        when it compiles. On the CPU, always ndimage.
    overwrite_input : bool
        Let the spline prefilter work in ``image``'s memory when it is a writeable
        float32 C-contiguous array (saves one full-frame array; ``image`` is then
        garbage).
    sink : callable, optional
        ``sink(y0, y1, data, footprint, mask)``, called with each finished tile of
        output rows ``y0:y1`` as host arrays (``mask`` None without a mask), from
        the tile threads (it must be thread-safe); the output is then never held
        whole (e.g. written tile by tile into a file, :mod:`gpualign._fitsout`) and
        the returned WarpResult holds None. The tiles' pixels are exactly those of
        the in-memory output.

    Returns
    -------
    WarpResult

    Raises
    ------
    DeviceOutOfMemory
        On a GPU, when the source, its masks and the output do not fit in the device's
        memory, or not even one row of tile temporaries does beside them (a tile that
        does not fit is first retried in halves).
    """
    if not 0 <= int(order) <= 5:
        raise ValueError(f"interp_order must be 0-5, got {order}")
    try:
        return _warp(image, transform, output_shape, backend=backend, order=order,
                     cval=cval, mask=mask, dtype=dtype, tile_rows=tile_rows,
                     threads=threads, method=method, overwrite_input=overwrite_input,
                     sink=sink)
    except GpuAlignError:
        raise
    except Exception as exc:
        if not (backend.is_gpu and is_out_of_memory(exc)):
            raise
        try:
            free = f"{int(backend.free_memory()) / 2**20:.0f} MiB free"
        except Exception:  # pragma: no cover - a device that cannot say
            free = "free memory unknown"
        raise DeviceOutOfMemory(
            f"the GPU ran out of memory warping a {np.shape(image)[0]}x"
            f"{np.shape(image)[1]} source onto {int(output_shape[0])}x"
            f"{int(output_shape[1])} pixels ({free}): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="free GPU memory (other processes on the device), or use "
                 "--backend numpy") from exc


def _warp(image: np.ndarray, transform: Transform, output_shape: tuple[int, int], *,
          backend: Backend, order: int, cval: float, mask: np.ndarray | None, dtype: Any,
          tile_rows: int | None, threads: int | None, method: str, overwrite_input: bool,
          sink: Any) -> WarpResult:
    """:func:`warp` without the conversion of a device out-of-memory error."""
    xp = backend.xp
    ny, nx = (int(output_shape[0]), int(output_shape[1]))
    threads = default_threads() if threads is None else max(1, int(threads))
    if backend.name != "numpy":
        threads = 1
    host = np.ascontiguousarray(image, dtype=np.float32)
    coeffs, bad_grown = _prepare_source(backend, host, order, threads, overwrite_input)
    planes, mask_dtype = _mask_planes(backend, mask, host.shape, order)
    # The fused kernel evaluates the polynomial model; other models' coordinates are
    # computed on the backend and sampled by the generic path.
    fused = _use_fused(backend, method) and transform.is_polynomial
    whole = (0, 0) if sink is not None else (ny, nx)  # with a sink: per-tile buffers
    # The output exists before the tiles are sized from what memory is left.
    out, foot, out_mask = empty_like_tile(xp, whole[0], whole[1], dtype, mask_dtype)
    rows = tile_rows or tile_rows_for(
        backend, ny, nx, dtype=dtype, n_planes=len(planes), has_bad=bad_grown is not None,
        mask_itemsize=np.dtype(mask_dtype).itemsize if mask_dtype is not None else 0,
        fused=fused, streamed=sink is not None)
    sampler = TileSampler(backend, transform, coeffs, host.shape, (ny, nx), int(order), dtype,
                          cval, bad_grown, planes, mask_dtype, fused)

    def do_tile(y0: int, y1: int) -> None:
        if sink is None:
            o, f = out[y0:y1], foot[y0:y1]
            m = out_mask[y0:y1] if out_mask is not None else None
        else:
            o, f, m = empty_like_tile(xp, y1 - y0, nx, dtype, mask_dtype)
        sampler.tile(y0, y1, o, f, m)
        if sink is not None:
            sink(y0, y1, backend.to_host(o), backend.to_host(f),
                 None if m is None else backend.to_host(m))

    if backend.is_gpu:
        _run_device_tiles(backend, do_tile, ny, rows)
    else:
        _run_tiles(lambda y0: do_tile(y0, min(y0 + rows, ny)), list(range(0, ny, rows)),
                   threads)
    if sink is not None:
        return WarpResult(None, None, None)  # type: ignore[arg-type]
    host_mask = None
    if out_mask is not None:
        host_mask = backend.to_host(out_mask)
        if np.asarray(mask).dtype == bool:
            host_mask = host_mask.astype(bool)
    return WarpResult(backend.to_host(out), backend.to_host(foot), host_mask)


def _prepare_source(backend: Backend, host: np.ndarray, order: int, threads: int,
                    overwrite_input: bool) -> tuple[Any, PackedMask | None]:
    """The source on the device, invalid pixels filled, prefiltered; and the grown mask.

    The image crosses to the device once, nothing else. Invalid pixels are found in
    row blocks and kept at one bit per pixel, so a clean mosaic never gets a
    full-frame mask and a NaN-bordered one gets 1/8 of a byte per pixel.
    """
    src = backend.to_device(host)
    bad = PackedMask.of_invalid(backend.xp, src)
    bad_grown = None
    if bad is not None:
        src = fill_invalid(backend, src, bad, in_place=overwrite_input)
        bad_grown = grow_invalid(backend, bad, kernel_reach(order))
    del bad
    # After fill_invalid, src is a private array: filter it in place.
    coeffs = prefilter(backend, src, order, threads,
                       overwrite=overwrite_input or bad_grown is not None)
    return coeffs, bad_grown


def _mask_planes(backend: Backend, mask: Any, shape: tuple[int, ...],
                 order: int) -> tuple[list[tuple[int, Any]], Any]:
    """Each set bit of the source mask as a 0/1 plane grown by the kernel's reach."""
    if mask is None:
        return [], None
    xp, ndi = backend.xp, backend.ndimage
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"mask shape {m.shape} differs from image shape {tuple(shape)}")
    mask_dtype = np.uint8 if m.dtype == bool else m.dtype
    if m.dtype.kind not in "biu":
        m = m.astype(np.uint64)
    planes: list[tuple[int, Any]] = []
    present = bits_present(m)
    if present:
        size = 2 * kernel_reach(order) + 1
        m_dev = backend.to_device(np.ascontiguousarray(m))  # once; planes on the device
        for bit in range(64):
            if present >> bit & 1:
                plane = _bit_plane(xp, m_dev, bit)
                planes.append((bit, ndi.maximum_filter(plane, size=size, mode="nearest")))
    return planes, mask_dtype


def _run_device_tiles(backend: Backend, do_tile: Any, ny: int, rows: int) -> None:
    """``do_tile(y0, y1)`` over the output rows on a GPU, halving the tiles on out-of-memory.

    A tile whose temporaries do not fit (another process took device memory, or the
    estimate fell short) is retried in halves, after the pool's cached blocks are
    returned, down to one row; the later tiles keep the smaller size. A tile's
    pixels do not depend on its size, and its output is written (or sunk) only once
    it is complete. One row that does not fit raises the device's error.
    """
    from gpualign._progress import progress

    step = rows
    with progress(-(-ny // rows), "warp", unit="tiles", min_total=64) as advance:
        for a in range(0, ny, rows):
            b = min(a + rows, ny)
            y0 = a
            while y0 < b:
                y1 = min(y0 + step, b)
                try:
                    do_tile(y0, y1)
                except Exception as exc:
                    if step == 1 or not is_out_of_memory(exc):
                        raise
                    step = max(1, step // 2)
                    release_device_memory(backend)
                    log.info("out of device memory in a warp tile of %d rows; retrying "
                             "with %d rows", y1 - y0, step)
                    continue
                y0 = y1
            advance()


def _run_tiles(do_tile: Any, starts: list[int], threads: int) -> None:
    """``do_tile(y0)`` for every tile, in threads on the CPU, with a progress display."""
    from gpualign._progress import progress

    with progress(len(starts), "warp", unit="tiles", min_total=64) as advance:
        if threads > 1 and len(starts) > 1:
            # One thread per core already: BLAS threads on top would contend for them.
            with single_threaded_blas(), ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(do_tile, starts):
                    advance()
        else:
            for y0 in starts:
                do_tile(y0)
                advance()
