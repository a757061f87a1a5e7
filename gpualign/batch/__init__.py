"""Many frames against one template: this process, a local process pool, or Dask."""

from gpualign.batch._batch import align_batch, output_directory, run_batch, run_frames
from gpualign.batch._types import (
    BatchContext,
    FrameResult,
    FrameTask,
    failed_result,
    make_tasks,
    output_name,
    summary_table,
    template_fingerprint,
)
from gpualign.batch._worker import process_frame

__all__ = [
    "BatchContext",
    "FrameResult",
    "FrameTask",
    "align_batch",
    "failed_result",
    "make_tasks",
    "output_directory",
    "output_name",
    "process_frame",
    "run_batch",
    "run_frames",
    "summary_table",
    "template_fingerprint",
]
