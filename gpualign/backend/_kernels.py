"""Loader of gpualign's CUDA kernels (``kernels/*.cu``) through ``cupy.RawModule``.

CuPy is never imported here: every function takes the array module ``cp`` that the
caller's backend provides (``backend.xp``). The CUDA sources are read from the
installed package (``gpualign/kernels/``, force-included by the wheel build) or, in a
source checkout, from ``<repo>/kernels/``.

The per-pixel maths (``gpualign_warp.cuh``) reproduces the reference warp of the
design contract: ``map_coordinates(prefiltered, [[sy], [sx]], order, mode="mirror",
prefilter=False)`` at ``(sx, sy) = T(x, y)``, ``cval`` outside the footprint
``-0.5 <= s <= N - 0.5``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "BLOCK",
    "MAX_DEGREE",
    "MAX_GRID_Y",
    "PARAMS_SIZE",
    "fused_warp",
    "get_module",
    "kernel_source",
    "kernel_source_dir",
    "launch_geometry",
    "pack_transform",
    "surface_eval",
]

#: Files that make up the kernel module, in the package's ``kernels`` directory.
KERNEL_FILE = "warp_fused.cu"
HEADER_FILE = "gpualign_warp.cuh"

#: Layout of the float64 parameter block; must match the GA_P_* macros of the header.
_P_MATRIX, _P_NORM, _P_CLIP, _P_NCOEF, _P_COEFFS = 0, 6, 10, 14, 16
_COEF_STRIDE = 8
#: Highest polynomial degree the kernels evaluate.
MAX_DEGREE = 7
#: Number of float64 values in the packed parameter block.
PARAMS_SIZE = _P_COEFFS + 2 * _COEF_STRIDE * _COEF_STRIDE
#: Thread block used for every launch (x along columns, y along rows).
BLOCK = (32, 8, 1)
#: Largest grid.y used; the kernels stride over the remaining rows.
MAX_GRID_Y = 65535
#: Spline orders with a compiled specialisation.
ORDERS = (0, 1, 2, 3, 4, 5)

_INCLUDE_RE = re.compile(
    r'^[ \t]*#[ \t]*include[ \t]*"' + re.escape(HEADER_FILE) + r'"[^\n]*$', re.MULTILINE
)


def kernel_source_dir() -> Path:
    """Return the directory holding the CUDA sources.

    Returns
    -------
    pathlib.Path
        ``gpualign/kernels`` inside an installed wheel, else ``<repo>/kernels`` of a
        source checkout (editable installs included).

    Raises
    ------
    FileNotFoundError
        When neither location holds ``warp_fused.cu`` (a broken installation).

    """
    package_dir = Path(__file__).resolve().parent.parent
    candidates = (package_dir / "kernels", package_dir.parent / "kernels")
    for candidate in candidates:
        if (candidate / KERNEL_FILE).is_file() and (candidate / HEADER_FILE).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"gpualign CUDA kernel sources ({KERNEL_FILE}, {HEADER_FILE}) not found in: {tried}; "
        "reinstall gpualign (the wheel ships them as gpualign/kernels/)"
    )


@functools.cache
def kernel_source(directory: str | None = None) -> str:
    """Return the kernel module's source with the header inlined.

    The ``#include "gpualign_warp.cuh"`` line is replaced by the header text so that the
    code string handed to ``cupy.RawModule`` covers every line that is compiled (CuPy
    keys its on-disk cache on that string, not on included files).

    Parameters
    ----------
    directory : str, optional
        Directory to read from; defaults to :func:`kernel_source_dir`.

    Returns
    -------
    str
        CUDA C++ source.

    """
    base = Path(directory) if directory is not None else kernel_source_dir()
    header = (base / HEADER_FILE).read_text(encoding="utf-8")
    code = (base / KERNEL_FILE).read_text(encoding="utf-8")
    code, count = _INCLUDE_RE.subn(lambda _m: header, code, count=1)
    if count != 1:
        raise RuntimeError(f"{KERNEL_FILE} does not include {HEADER_FILE}")
    return code


def compile_options(directory: Path | None = None) -> tuple[str, ...]:
    """Return the NVRTC options used for the kernel module.

    Parameters
    ----------
    directory : pathlib.Path, optional
        Include directory; defaults to :func:`kernel_source_dir`.

    Returns
    -------
    tuple of str
        ``("-std=c++17", "-I<kernel dir>")``.

    """
    base = directory if directory is not None else kernel_source_dir()
    return ("-std=c++17", f"-I{base}")


@functools.cache
def _raw_module(cp: ModuleType, device_id: int) -> Any:
    return cp.RawModule(code=kernel_source(), options=compile_options())


def get_module(cp: ModuleType) -> Any:
    """Return the compiled kernel module for the current CUDA device.

    Parameters
    ----------
    cp : module
        The CuPy module (``backend.xp``).

    Returns
    -------
    cupy.RawModule
        Memoized per (module, device id); NVRTC compiles it on first use.

    """
    return _raw_module(cp, int(cp.cuda.Device().id))


def pack_transform(transform: Any) -> np.ndarray:
    """Pack a Transform into the kernels' float64 parameter block.

    Parameters
    ----------
    transform : Transform or mapping
        Object with ``matrix`` (2, 3), ``coeffs`` (2, d+1, d+1) or empty, ``norm``
        ``(cx, cy, hx, hy)`` and ``clip`` ``(umin, umax, vmin, vmax)``, as attributes or
        mapping keys (``Transform.to_dict()``).

    Returns
    -------
    numpy.ndarray
        Shape ``(PARAMS_SIZE,)`` float64. Slot ``14`` holds ``d + 1``, or ``0`` when all
        coefficients are zero (no distortion; u, v are then not computed).

    Raises
    ------
    ValueError
        On malformed shapes, a degree above ``MAX_DEGREE``, or non-finite values.

    """

    def get(name: str) -> Any:
        if isinstance(transform, Mapping):
            return transform[name]
        return getattr(transform, name)

    matrix = np.asarray(get("matrix"), dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"transform matrix must have shape (2, 3), got {matrix.shape}")
    coeffs = np.asarray(get("coeffs"), dtype=np.float64)
    if coeffs.size == 0:
        coeffs = np.zeros((2, 0, 0))
    if coeffs.ndim != 3 or coeffs.shape[0] != 2 or coeffs.shape[1] != coeffs.shape[2]:
        raise ValueError(f"transform coeffs must have shape (2, d+1, d+1), got {coeffs.shape}")
    n = coeffs.shape[1]
    if not np.any(coeffs):
        n = 0
    if n > MAX_DEGREE + 1:
        raise ValueError(f"polynomial degree {n - 1} exceeds the kernels' maximum {MAX_DEGREE}")
    norm = np.asarray(get("norm"), dtype=np.float64).reshape(-1)
    clip = np.asarray(get("clip"), dtype=np.float64).reshape(-1)
    if norm.shape != (4,) or clip.shape != (4,):
        raise ValueError("transform norm and clip must hold 4 values each")
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(coeffs))):
        raise ValueError("transform has non-finite matrix or coefficients")

    params = np.zeros(PARAMS_SIZE, dtype=np.float64)
    params[_P_MATRIX : _P_MATRIX + 6] = matrix.reshape(-1)
    params[_P_NORM : _P_NORM + 4] = norm
    params[_P_CLIP : _P_CLIP + 4] = clip
    params[_P_NCOEF] = n
    if n:
        block = np.zeros((2, _COEF_STRIDE, _COEF_STRIDE))
        block[:, :n, :n] = coeffs
        params[_P_COEFFS:] = block.reshape(-1)
    return params


def launch_geometry(ncols: int, nrows: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Return ``(grid, block)`` for a block of ``nrows`` x ``ncols`` output pixels.

    Parameters
    ----------
    ncols, nrows : int
        Output block size (both > 0).

    Returns
    -------
    tuple
        ``grid`` (x covers the columns; y at most ``MAX_GRID_Y``, the kernels stride
        over further rows) and ``block`` (:data:`BLOCK`).

    """
    bx, by, _ = BLOCK
    grid = (-(-ncols // bx), min(-(-nrows // by), MAX_GRID_Y), 1)
    return grid, BLOCK


def _check_block(arr: Any, shape: tuple[int, int], dtypes: Sequence[Any], name: str) -> None:
    if tuple(arr.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(arr.shape)}")
    if arr.dtype not in [np.dtype(d) for d in dtypes]:
        raise ValueError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def fused_warp(
    cp: ModuleType,
    prefiltered: Any,
    transform: Any,
    out_shape: tuple[int, int],
    row0: int,
    row1: int,
    order: int,
    cval: float,
    out: Any = None,
    footprint: Any = None,
    jacobian: Any = None,
) -> tuple[Any, Any]:
    """Warp rows ``[row0, row1)`` of the output in one fused kernel launch.

    For each output pixel ``(x, y)``, ``y`` in ``[row0, row1)``, computes
    ``(sx, sy) = transform(x, y)`` and samples ``prefiltered`` there with the order-``order``
    B-spline in mirror mode (exactly ``map_coordinates(..., mode="mirror",
    prefilter=False)``), writing ``cval`` where the footprint test fails. No coordinate
    arrays are materialised.

    Parameters
    ----------
    cp : module
        The CuPy module (``backend.xp``).
    prefiltered : cupy.ndarray
        2-D source image, already spline-filtered for ``order > 1`` (mode="mirror").
        Converted to C-contiguous float32 if it is not (a copy).
    transform : Transform or mapping
        Template pixel -> source pixel mapping; see :func:`pack_transform`.
    out_shape : tuple of int
        ``(H, W)`` of the full output (template) image.
    row0, row1 : int
        Output rows to compute, ``0 <= row0 <= row1 <= H``.
    order : int
        Spline order, 0 to 5.
    cval : float
        Value outside the footprint.
    out : cupy.ndarray, optional
        float32 C-contiguous ``(row1 - row0, W)`` block to write into, e.g.
        ``full[row0:row1]`` of a C-contiguous full image. Allocated when omitted.
    footprint : cupy.ndarray, optional
        bool or uint8 C-contiguous ``(row1 - row0, W)`` block (1 = inside). Allocated as
        bool when omitted.
    jacobian : cupy.ndarray, optional
        float32 C-contiguous ``(row1 - row0, W)`` block receiving the determinant of
        ``d(sx, sy) / d(x, y)`` (for flux conservation); not computed when omitted.

    Returns
    -------
    out, footprint : cupy.ndarray
        The written blocks. The launch is asynchronous on the current stream.

    Raises
    ------
    ValueError
        On an unsupported order, bad row range, or output arrays of wrong shape/dtype.

    """
    order = int(order)
    if order not in ORDERS:
        raise ValueError(f"spline order must be one of {ORDERS}, got {order}")
    if prefiltered.ndim != 2:
        raise ValueError(f"prefiltered image must be 2-D, got {prefiltered.ndim} dimensions")
    height, width = (int(s) for s in out_shape)
    row0, row1 = int(row0), int(row1)
    if not 0 <= row0 <= row1 <= height:
        raise ValueError(f"row range [{row0}, {row1}) outside the output's {height} rows")
    block_shape = (row1 - row0, width)
    if out is None:
        out = cp.empty(block_shape, dtype=cp.float32)
    else:
        _check_block(out, block_shape, [np.float32], "out")
    if footprint is None:
        footprint = cp.empty(block_shape, dtype=cp.bool_)
    else:
        _check_block(footprint, block_shape, [np.bool_, np.uint8], "footprint")
    if jacobian is not None:
        _check_block(jacobian, block_shape, [np.float32], "jacobian")
    if block_shape[0] == 0 or block_shape[1] == 0:
        return out, footprint

    src = cp.ascontiguousarray(prefiltered, dtype=cp.float32)
    params = cp.asarray(pack_transform(transform))
    kernel = get_module(cp).get_function(f"gpualign_warp_fused_o{order}")
    grid, block = launch_geometry(width, block_shape[0])
    kernel(
        grid,
        block,
        (
            src,
            np.int64(src.shape[0]),
            np.int64(src.shape[1]),
            params,
            out,
            footprint,
            jacobian,
            np.int64(width),
            np.int64(row0),
            np.int64(row1),
            np.float64(cval),
        ),
    )
    return out, footprint


def surface_eval(
    cp: ModuleType,
    transform: Any,
    x0: int,
    x1: int,
    y0: int,
    y1: int,
    distortion_only: bool = False,
) -> tuple[Any, Any]:
    """Evaluate the mapping (or only its distortion surfaces) on a pixel block.

    Parameters
    ----------
    cp : module
        The CuPy module (``backend.xp``).
    transform : Transform or mapping
        See :func:`pack_transform`.
    x0, x1, y0, y1 : int
        Template pixel block, columns ``[x0, x1)`` and rows ``[y0, y1)``.
    distortion_only : bool, optional
        Return ``(Dx, Dy)`` instead of ``(sx, sy)``.

    Returns
    -------
    sx, sy : cupy.ndarray
        float64 arrays of shape ``(y1 - y0, x1 - x0)``, the same quantities as
        ``Transform.evaluate_grid(cp, x0, x1, y0, y1)`` when ``distortion_only`` is false.

    """
    x0, x1, y0, y1 = int(x0), int(x1), int(y0), int(y1)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"empty or reversed block x[{x0}, {x1}) y[{y0}, {y1})")
    shape = (y1 - y0, x1 - x0)
    sx = cp.empty(shape, dtype=cp.float64)
    sy = cp.empty(shape, dtype=cp.float64)
    if shape[0] == 0 or shape[1] == 0:
        return sx, sy
    params = cp.asarray(pack_transform(transform))
    kernel = get_module(cp).get_function("gpualign_surface_eval")
    grid, block = launch_geometry(shape[1], shape[0])
    kernel(
        grid,
        block,
        (
            params,
            np.int64(x0),
            np.int64(x1),
            np.int64(y0),
            np.int64(y1),
            np.int32(1 if distortion_only else 0),
            sx,
            sy,
        ),
    )
    return sx, sy
