"""gpualign: detection-based registration of astronomical images, on GPU or CPU."""

from ._backend import Backend, get_backend
from ._batch import FrameResult, align_batch
from ._catalog import Catalog
from ._errors import (
    BackendUnavailable,
    GpuAlignError,
    InputError,
    NoOverlap,
    NoQuadMatch,
    TooFewStars,
)
from ._pipeline import AlignResult, Solution, align, apply_transform, find_transform
from ._transform import Transform

__version__ = "0.1.0"

__all__ = [
    "AlignResult",
    "Backend",
    "BackendUnavailable",
    "Catalog",
    "FrameResult",
    "GpuAlignError",
    "InputError",
    "NoOverlap",
    "NoQuadMatch",
    "Solution",
    "TooFewStars",
    "Transform",
    "align",
    "align_batch",
    "apply_transform",
    "find_transform",
    "get_backend",
    "__version__",
]
