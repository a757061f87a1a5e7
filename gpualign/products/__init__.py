"""What an alignment produces: the solution, the aligned image and what it carries.

:class:`Solution` (the mapping and its evidence, and its JSON file),
:class:`AlignResult` (pixels, footprint, mask, weight, WCS, header), flux
conservation, weight resampling, the output WCS, the preserve-footprints canvas and
the diagnostic figures (:func:`plot_solution`, :func:`plot_batch`; matplotlib optional).
"""

from gpualign.products._canvas import grow_canvas, invert_points, source_outline
from gpualign.products._finish import (
    TileExtras,
    check_weight_type,
    finish_result,
    source_extras,
    source_variance,
    to_nddata,
)
from gpualign.products._plot import PlottingUnavailable, plot_batch, plot_solution
from gpualign.products._result import AlignResult
from gpualign.products._solution import (
    Solution,
    fit_statistics,
    load_solution,
    load_transform,
    save_solution,
    save_transform,
)
from gpualign.products._variance import WEIGHT_TYPES
from gpualign.products._wcs_cards import has_ctype, output_wcs_cards

__all__ = [
    "AlignResult",
    "PlottingUnavailable",
    "Solution",
    "TileExtras",
    "WEIGHT_TYPES",
    "check_weight_type",
    "finish_result",
    "fit_statistics",
    "grow_canvas",
    "has_ctype",
    "invert_points",
    "load_solution",
    "load_transform",
    "output_wcs_cards",
    "plot_batch",
    "plot_solution",
    "save_solution",
    "save_transform",
    "source_extras",
    "source_outline",
    "source_variance",
    "to_nddata",
]
