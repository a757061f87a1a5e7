"""The mapping template pixel -> source pixel: a linear part plus a distortion model.

:class:`Transform` holds the 2x3 linear part and a :class:`DistortionModel`; models
are registered by name (``"poly"``, ``"tps"``) and share one interface (evaluation
at points and on grids on any array module, Jacobian, weighted fit, parameter
count, JSON round trip).
"""

from gpualign.transform import _tps  # noqa: F401  (registers the "tps" model)
from gpualign.transform._fitting import fit_polynomial, fit_similarity, fit_transform
from gpualign.transform._model import (
    DistortionModel,
    model_class,
    model_from_dict,
    model_names,
    register_model,
)
from gpualign.transform._polynomial import PolynomialDistortion, n_terms
from gpualign.transform._transform import Transform

__all__ = [
    "DistortionModel",
    "PolynomialDistortion",
    "Transform",
    "fit_polynomial",
    "fit_similarity",
    "fit_transform",
    "model_class",
    "model_from_dict",
    "model_names",
    "n_terms",
    "register_model",
]
