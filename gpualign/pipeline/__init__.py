"""Registration end to end: solve, the public API, and the ONE frame runner."""

from gpualign.pipeline._api import (
    align,
    apply_transform,
    bare_solution,
    check_output_shape,
    find_transform,
)
from gpualign.pipeline._runner import (
    FrameOptions,
    FrameOutput,
    TemplateSide,
    batch_retry,
    check_image_memory,
    detect_template,
    log_stats,
    prepare_template,
    run_frame,
    solve_frame,
    warp_frame,
)
from gpualign.pipeline._solve import solve

__all__ = [
    "FrameOptions",
    "FrameOutput",
    "TemplateSide",
    "align",
    "apply_transform",
    "bare_solution",
    "batch_retry",
    "check_image_memory",
    "check_output_shape",
    "detect_template",
    "find_transform",
    "log_stats",
    "prepare_template",
    "run_frame",
    "solve",
    "solve_frame",
    "warp_frame",
]
