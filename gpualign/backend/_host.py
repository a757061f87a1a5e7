"""The CPU warp's compiled primitives: the kernels' per-pixel maths built for the host.

``libgpualign_host.so`` is ``kernels/host_warp.cpp``, compiled when the wheel is
built (``kernels/hatch_build.py``):

* :func:`sample`: the ``sample_mirror`` spline sampling of ``gpualign_warp.cuh`` (the
  code the CUDA kernels run); its values equal ``scipy.ndimage.map_coordinates(...,
  mode="mirror", prefilter=False)`` into float32 bit for bit, about twice as fast
  (it does only the 2-D float32 case);
* :func:`prefilter`: the B-spline prefilter, equal to ``spline_filter1d(...,
  mode="mirror")`` along both axes bit for bit, about 5 times as fast (16 lines
  are filtered at once as AVX2 vector lanes, in blocks that stay in the L2 cache);
* :func:`add_linear`: a transform's linear part added to its surfaces' offsets in
  one pass that also finds their range (NumPy's values bit for bit).

ctypes releases the GIL during each call, so the warp's threads run in parallel.
When the library is missing (no compiler at install time) or
``GPUALIGN_HOST_SAMPLER=0`` is set, both return False and the warp calls SciPy.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LIB_NAME", "add_linear", "prefilter", "sample", "status"]

LIB_NAME = "libgpualign_host.so"
#: Interface version the library must report (``ga_host_abi``).
ABI = 4
#: Lines per block of the compiled prefilter (its vector lanes): thread tasks hold
#: whole blocks.
_LINE_BLOCK = 16
_ENV = "GPUALIGN_HOST_SAMPLER"


@functools.cache
def _load() -> tuple[Any, str]:
    """(the loaded library or None, a line saying which and why)."""
    if os.environ.get(_ENV, "1") == "0":
        return None, f"SciPy map_coordinates ({_ENV}=0)"
    path = Path(__file__).resolve().parent.parent / LIB_NAME
    if not path.is_file():
        return None, f"SciPy map_coordinates ({LIB_NAME} was not built at install time)"
    try:
        lib = ctypes.CDLL(str(path))
        if lib.ga_host_abi() != ABI:
            return None, f"SciPy map_coordinates ({path.name} has another interface)"
        ll, vp, i = ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int
        lib.ga_host_sample.argtypes = [vp, ll, ll, vp, ll, ll, i, vp, ll]
        for name in ("ga_host_prefilter_rows", "ga_host_prefilter_cols"):
            getattr(lib, name).argtypes = [vp, ll, ll, ll, ll, i]
        lib.ga_host_simd.restype = ctypes.c_int
        lib.ga_host_add_linear.argtypes = [vp, ll, ll, vp, vp, i, vp]
    except (OSError, AttributeError) as exc:
        return None, f"SciPy map_coordinates ({path.name} cannot be loaded: {exc})"
    simd = ", AVX2 sampling and prefilter" if lib.ga_host_simd() == 1 else ""
    return lib, f"compiled ({path}{simd})"


def status() -> str:
    """Which sampler the CPU warp uses, and why."""
    return _load()[1]


def sample(image: np.ndarray, coords: np.ndarray, order: int, out: np.ndarray) -> bool:
    """Sample ``image`` at ``coords`` into ``out`` with the compiled sampler.

    Parameters
    ----------
    image : ndarray, float32, C-contiguous, 2-D
        Prefiltered spline coefficients (mirror boundary).
    coords : ndarray, float64, C-contiguous, shape (2, rows, cols)
        ``[sy, sx]`` of each output pixel.
    order : int
        Spline order, 0-5.
    out : ndarray, float32, shape (rows, cols)
        Written in place; its rows may be strided (a column block of a larger array).

    Returns
    -------
    bool
        False (nothing written) when the library is unavailable or the arrays are
        not of the layout it takes; the caller then uses SciPy.
    """
    lib = _load()[0]
    if lib is None or not 0 <= order <= 5:
        return False
    if (image.ndim != 2 or image.dtype != np.float32 or not image.flags.c_contiguous
            or coords.dtype != np.float64 or not coords.flags.c_contiguous
            or coords.ndim != 3 or coords.shape[0] != 2 or out.dtype != np.float32
            or out.shape != coords.shape[1:] or not out.flags.writeable):
        return False
    rows, cols = out.shape
    if rows == 0 or cols == 0:
        return True
    if out.strides[1] != 4 or out.strides[0] % 4 or out.strides[0] < 4 * cols:
        return False
    h, w = image.shape
    rc = lib.ga_host_sample(image.ctypes.data, h, w, coords.ctypes.data, rows, cols,
                            int(order), out.ctypes.data, out.strides[0] // 4)
    return rc == 0


def add_linear(out: np.ndarray, ax: np.ndarray, by: np.ndarray, has_surface: bool
               ) -> tuple[float, float] | None:
    """``out = (out + ax[None, :]) + by[:, None]`` in place (``ax + by`` without surface).

    The linear part of a transform added to the surfaces' offsets with NumPy's
    operations in NumPy's order (so the same values, bit for bit), in one pass that
    also finds their range.

    Parameters
    ----------
    out : ndarray, float64, C-contiguous, shape (rows, cols)
        The surfaces' offsets (read only when ``has_surface``); overwritten.
    ax : ndarray, float64, shape (cols,)
        The per-column term.
    by : ndarray, float64, shape (rows,)
        The per-row term.
    has_surface : bool
        Whether ``out`` holds offsets to add to.

    Returns
    -------
    (min, max) or None
        The range of the results (both NaN when any is NaN); None (nothing written)
        when the library is unavailable or the arrays are not of the layout it takes.
    """
    lib = _load()[0]
    if (lib is None or out.ndim != 2 or out.dtype != np.float64
            or not out.flags.c_contiguous or not out.flags.writeable):
        return None
    rows, cols = out.shape
    ax = np.ascontiguousarray(ax, dtype=np.float64)
    by = np.ascontiguousarray(by, dtype=np.float64)
    if ax.shape != (cols,) or by.shape != (rows,) or rows == 0 or cols == 0:
        return None
    bounds = np.empty(2, np.float64)
    lib.ga_host_add_linear(out.ctypes.data, rows, cols, ax.ctypes.data, by.ctypes.data,
                           int(bool(has_surface)), bounds.ctypes.data)
    return float(bounds[0]), float(bounds[1])


def prefilter(image: np.ndarray, order: int, threads: int = 1) -> bool:
    """B-spline prefilter ``image`` in place along axis 1, then axis 0 (mirror).

    Equals ``spline_filter1d`` along axis 1 then axis 0 with ``mode="mirror"`` and
    float32 output, bit for bit, whatever ``threads``.

    Parameters
    ----------
    image : ndarray, float32, C-contiguous, writeable, 2-D
        Filtered in place.
    order : int
        Spline order, 2-5.
    threads : int
        Row blocks, then column blocks, are shared among this many threads.

    Returns
    -------
    bool
        False (nothing done) when the library is unavailable or ``image`` is not of
        the layout it takes; the caller then uses SciPy.
    """
    from concurrent.futures import ThreadPoolExecutor

    lib = _load()[0]
    if (lib is None or not 2 <= order <= 5 or image.ndim != 2
            or image.dtype != np.float32 or not image.flags.c_contiguous
            or not image.flags.writeable):
        return False
    h, w = image.shape
    if h == 0 or w == 0:
        return True
    ptr, order = image.ctypes.data, int(order)
    threads = max(1, int(threads))
    rows_fn, cols_fn = lib.ga_host_prefilter_rows, lib.ga_host_prefilter_cols
    if threads == 1:
        if rows_fn(ptr, h, w, 0, h, order):  # nothing written by a failed call
            raise MemoryError("host prefilter could not allocate its row buffer")
        if cols_fn(ptr, h, w, 0, w, order):
            raise MemoryError("host prefilter could not allocate its column buffer")
        return True
    # About four tasks per thread (balance), each whole blocks of lines.
    rows = _line_blocks(h, threads)
    cols = _line_blocks(w, threads)
    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(lambda b: rows_fn(ptr, h, w, *b, order), rows))
        if any(codes):  # nothing was written by a failed block: no half-filtered rows
            raise MemoryError("host prefilter could not allocate its row buffer")
        codes = list(pool.map(lambda b: cols_fn(ptr, h, w, *b, order), cols))
        if any(codes):
            raise MemoryError("host prefilter could not allocate its column buffer")
    return True


def _line_blocks(n: int, threads: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of ``n`` lines for ``threads``: about four each, whole blocks."""
    per = -(-n // (4 * threads))
    per = max(_LINE_BLOCK, -(-per // _LINE_BLOCK) * _LINE_BLOCK)
    return [(a, min(a + per, n)) for a in range(0, n, per)]
