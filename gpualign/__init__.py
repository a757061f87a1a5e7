"""gpualign: detection-based registration of astronomical images, on GPU or CPU.

The public names are imported on first use (PEP 562), so that ``import gpualign`` and
the command line's ``--version`` and ``--help`` do not pay for NumPy, SciPy, astropy
and sep until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gpualign._version import __version__

#: Public name -> the module that defines it.
_EXPORTS = {
    "BackendUnavailable": "gpualign._errors",
    "GpuAlignError": "gpualign._errors",
    "GpuAlignWarning": "gpualign._errors",
    "InputError": "gpualign._errors",
    "NoOverlap": "gpualign._errors",
    "NoQuadMatch": "gpualign._errors",
    "OutputError": "gpualign._errors",
    "TooFewStars": "gpualign._errors",
    "Backend": "gpualign.backend",
    "get_backend": "gpualign.backend",
    "FrameResult": "gpualign.batch",
    "align_batch": "gpualign.batch",
    "Catalog": "gpualign.detect",
    "DetectSettings": "gpualign.detect",
    "FitSettings": "gpualign.fit",
    "MatchSettings": "gpualign.match",
    "align": "gpualign.pipeline",
    "apply_transform": "gpualign.pipeline",
    "find_transform": "gpualign.pipeline",
    "AlignResult": "gpualign.products",
    "Solution": "gpualign.products",
    "DistortionModel": "gpualign.transform",
    "Transform": "gpualign.transform",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a subpackage or module: gpualign.detect, gpualign.simulate, ...
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static tools see
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
    from gpualign.backend import Backend, get_backend
    from gpualign.batch import FrameResult, align_batch
    from gpualign.detect import Catalog, DetectSettings
    from gpualign.fit import FitSettings
    from gpualign.match import MatchSettings
    from gpualign.pipeline import align, apply_transform, find_transform
    from gpualign.products import AlignResult, Solution
    from gpualign.transform import DistortionModel, Transform
