"""gpualign: detection-based registration of astronomical images, on GPU or CPU."""

from gpualign.backend import Backend, get_backend
from gpualign.batch._batch import FrameResult, align_batch
from gpualign.detect._catalog import Catalog
from ._errors import (
    BackendUnavailable,
    GpuAlignError,
    InputError,
    NoOverlap,
    NoQuadMatch,
    TooFewStars,
)
from gpualign.pipeline._api import AlignResult, Solution, align, apply_transform, find_transform
from gpualign.transform._transform import Transform

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
