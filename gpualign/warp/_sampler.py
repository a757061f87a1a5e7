"""Sampling one block of output pixels: coordinates, spline sample, footprint, mask bits.

:class:`TileSampler` holds what every tile of a warp shares (the prefiltered source
on the device, its grown invalid-pixel mask, the source mask's bit planes) and
fills the rows of one output tile, in column blocks on the CPU. The per-pixel maths
does not depend on the tiling, so tiled, threaded and whole outputs are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpualign.backend import Backend, _host
from gpualign.transform import Transform
from gpualign.warp._invalid import PackedMask

__all__ = ["TileSampler", "COL_BLOCK", "empty_like_tile"]

COL_BLOCK = 512  # output columns sampled at a time within a row tile (CPU)


def _mask_at(xp: Any, mask: PackedMask, coords: Any) -> Any:
    """``mask`` at the nearest pixel of each ``[sy, sx]``, edges extended ('nearest').

    What ``map_coordinates(mask, coords, order=0, mode="nearest")`` gives (index
    ``floor(s + 0.5)`` clipped to the image), read bit by bit from the packed rows:
    nothing is unpacked (a tile of a rotated frame reaches a box of source pixels far
    larger than itself) and nothing is synchronised. The rounding is done in float64
    (exact at any source size) in one temporary per axis; the indices are int32 (a
    row or column index always fits).
    """
    idx = []
    for axis, n in enumerate(mask.shape):
        t = coords[axis] + 0.5
        xp.floor(t, out=t)
        xp.clip(t, 0, n - 1, out=t)
        idx.append(t.astype(xp.int32 if n <= 2**31 else xp.int64))
        del t
    iy, ix = idx
    byte = mask.bits[iy, ix >> 3]  # packbits order: column c is bit 7 - c % 8 of byte c // 8
    del iy
    ix &= 7
    byte &= mask.bit_values[ix]
    return byte.astype(xp.bool_)


@dataclass
class TileSampler:
    """Everything a tile of the warp needs, and the code that fills one.

    Attributes
    ----------
    backend : Backend
        Where the arrays live.
    transform : Transform
        Output pixel -> source pixel.
    coeffs : array
        Spline coefficients of the source (prefiltered) on the device.
    source_shape, output_shape : tuple of int
    order : int
        Spline order.
    dtype : dtype
        Output data type.
    cval : float
        Value outside the footprint.
    bad_grown : PackedMask or None
        Source pixels whose kernel reaches an invalid pixel.
    planes : list of (bit, array)
        Each source mask bit, grown by the kernel's reach, on the device.
    mask_dtype : dtype or None
        Type of the output mask (None: no mask).
    fused : bool
        Sample with the fused CUDA kernel (polynomial transforms on a GPU).
    """

    backend: Backend
    transform: Transform
    coeffs: Any
    source_shape: tuple[int, int]
    output_shape: tuple[int, int]
    order: int
    dtype: Any
    cval: float
    bad_grown: PackedMask | None
    planes: list[tuple[int, Any]]
    mask_dtype: Any
    fused: bool

    def __post_init__(self) -> None:
        xp = self.backend.xp
        self.fill = xp.asarray(self.cval, dtype=self.dtype)
        # On the CPU a row tile is sampled in blocks of columns: the source pixels one
        # block reads then stay in the cache (whole 16k rows read ~40 MB per tile, and
        # the gather ran 3-4x slower per pixel than on 8k rows). Same per-pixel maths.
        nx = self.output_shape[1]
        self.cols = nx if self.fused or self.backend.name != "numpy" else max(1, COL_BLOCK)

    def coords(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> tuple[Any, Any]:
        """``[sy, sx]`` of a block and where it is inside the source (None: everywhere)."""
        xp = self.backend.xp
        x1 = self.output_shape[1] if x1 is None else x1
        # [sy, sx], and on the host their range from the pass that made them.
        coords, bounds = self.transform.source_coords_bounds(xp, x0, x1, y0, y1)
        sy, sx = coords[0], coords[1]
        sh, sw = self.source_shape
        lo, hi = -0.5, (sh - 0.5, sw - 0.5)
        if bounds is None:  # four reductions
            bounds = (float(sy.min()), float(sy.max()), float(sx.min()), float(sx.max()))
        # Most tiles lie wholly inside the source: no masks (a NaN fails the test).
        if (bounds[0] >= lo and bounds[1] <= hi[0]
                and bounds[2] >= lo and bounds[3] <= hi[1]):
            return coords, None
        inside = sx >= lo
        inside &= sx <= hi[1]
        inside &= sy >= lo
        inside &= sy <= hi[0]
        return coords, inside

    def tile(self, y0: int, y1: int, o: Any, f: Any, m: Any) -> None:
        """Fill output rows ``y0:y1`` (``o`` data, ``f`` footprint, ``m`` mask or None)."""
        nx = self.output_shape[1]
        for x0 in range(0, nx, self.cols):
            x1 = min(x0 + self.cols, nx)
            whole = x0 == 0 and x1 == nx
            self.block(y0, y1, x0, x1, o if whole else o[:, x0:x1],
                       f if whole else f[:, x0:x1],
                       m if whole or m is None else m[:, x0:x1])

    def _sample(self, y0: int, y1: int, x0: int, x1: int, o: Any, f: Any
                ) -> tuple[Any, Any, Any, bool]:
        """Values, inside mask, coordinates (or None) and whether ``o`` already holds them.

        The fused kernel writes straight into float32 output rows (``cval`` outside,
        the footprint into ``f``): then the values are ``o`` and the inside mask ``f``.
        """
        xp, ndi = self.backend.xp, self.backend.ndimage
        if self.fused:
            # One kernel computes each pixel's source position and samples it.
            from gpualign.backend import _kernels

            direct = (o.dtype == xp.float32 and f.dtype == xp.bool_
                      and o.flags.c_contiguous and f.flags.c_contiguous)
            vals, inside = _kernels.fused_warp(
                xp, self.coeffs, self.transform, self.output_shape, y0, y1, self.order,
                self.cval if direct else float("nan"), out=o if direct else None,
                footprint=f if direct else None)
            coords = None
            if self.bad_grown is not None or self.planes:
                # Only the nearest-pixel lookups need positions (no footprint test).
                coords = self.transform.source_coords(xp, 0, self.output_shape[1], y0, y1)
            return vals, inside, coords, direct
        coords, inside = self.coords(y0, y1, x0, x1)
        # float32 output: sampled straight into the output rows, no temporary.
        direct = o.dtype == xp.float32
        vals = o if direct else xp.empty((y1 - y0, x1 - x0), dtype=xp.float32)
        # NumPy: the kernels' sampler built for the host when installed (SciPy's
        # values bit for bit, twice as fast), else SciPy itself.
        on_host = self.backend.name == "numpy"
        if not (on_host and _host.sample(self.coeffs, coords, self.order, vals)):
            ndi.map_coordinates(self.coeffs, coords, order=self.order, mode="mirror",
                                prefilter=False, output=vals)
        if inside is None:
            inside = xp.ones(vals.shape, dtype=bool)
        return vals, inside, coords, direct

    def block(self, y0: int, y1: int, x0: int, x1: int, o: Any, f: Any, m: Any) -> None:
        """Fill one block: data (``cval`` outside), footprint, and the mask's bits."""
        xp, ndi = self.backend.xp, self.backend.ndimage
        vals, inside, coords, direct = self._sample(y0, y1, x0, x1, o, f)
        if self.fused and direct:
            # The kernel wrote the values (cval outside) and the footprint in place:
            # only pixels reaching an invalid source pixel are left to blank.
            if self.bad_grown is not None:
                hit = _mask_at(xp, self.bad_grown, coords)
                inside &= ~hit
                xp.copyto(o, self.fill, where=hit)
                del hit
        else:
            if self.bad_grown is not None:
                inside &= ~_mask_at(xp, self.bad_grown, coords)
            if not direct:
                o[...] = xp.where(inside, vals.astype(self.dtype, copy=False), self.fill)
            elif not bool(inside.all()):
                o[...] = xp.where(inside, vals, self.fill)
            f[...] = inside
        if m is not None:
            mask_dtype = self.mask_dtype
            acc = xp.zeros(inside.shape, dtype=mask_dtype)
            for bit, plane in self.planes:
                hit = ndi.map_coordinates(plane, coords, order=0, mode="nearest")
                acc |= (hit.astype(mask_dtype) << bit) if bit else hit.astype(mask_dtype)
            m[...] = acc


def empty_like_tile(xp: Any, rows: int, nx: int, dtype: Any,
                    mask_dtype: Any) -> tuple[Any, Any, Any]:
    """Per-tile output buffers (data, footprint, mask or None) for a streamed warp."""
    o = xp.empty((rows, nx), dtype=dtype)
    f = xp.empty((rows, nx), dtype=bool)
    m = xp.zeros((rows, nx), dtype=mask_dtype) if mask_dtype is not None else None
    return o, f, m

