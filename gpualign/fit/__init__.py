"""Fitting the mapping: robust weighted fits and the choice of model by held-out error."""

from gpualign.fit._linear import MODELS, check_model, fit_model, linear_parameters, robust_fit_model
from gpualign.fit._robust import robust_fit
from gpualign.fit._selection import MAX_DEGREE, choose_degree, choose_model, select_model
from gpualign.fit._settings import DISTORTION_CHOICES, LINEAR_MODELS, FitSettings

__all__ = [
    "DISTORTION_CHOICES",
    "FitSettings",
    "LINEAR_MODELS",
    "MAX_DEGREE",
    "MODELS",
    "check_model",
    "choose_degree",
    "choose_model",
    "fit_model",
    "linear_parameters",
    "robust_fit",
    "robust_fit_model",
    "select_model",
]
