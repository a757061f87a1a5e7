"""Resampling the source onto the template grid: tiled, any backend, invalid pixels safe."""

from gpualign.warp._resample import (
    TILE_PIXELS,
    WarpResult,
    bits_present,
    default_threads,
    kernel_reach,
    prefilter,
    tile_rows_for,
    warp,
)

__all__ = ["TILE_PIXELS", "WarpResult", "bits_present", "default_threads", "kernel_reach",
           "prefilter", "tile_rows_for", "warp"]
