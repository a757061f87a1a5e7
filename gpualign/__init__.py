"""gpualign: detection-based registration of astronomical images, on GPU or CPU."""

from gpualign._errors import (
    BackendUnavailable,
    GpuAlignError,
    GpuAlignWarning,
    InputError,
    NoOverlap,
    NoQuadMatch,
    OutputError,
    TooFewStars,
)
from gpualign._version import __version__
from gpualign.backend import Backend, get_backend
from gpualign.batch import FrameResult, align_batch
from gpualign.detect import Catalog, DetectSettings
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings
from gpualign.pipeline import align, apply_transform, find_transform
from gpualign.products import AlignResult, Solution
from gpualign.transform import DistortionModel, Transform

__all__ = [
    "AlignResult",
    "Backend",
    "BackendUnavailable",
    "Catalog",
    "DetectSettings",
    "DistortionModel",
    "FitSettings",
    "FrameResult",
    "GpuAlignError",
    "GpuAlignWarning",
    "InputError",
    "MatchSettings",
    "NoOverlap",
    "NoQuadMatch",
    "OutputError",
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
