"""Fitting settings: the distortion surfaces, the linear part and the distortion model."""

from __future__ import annotations

from dataclasses import dataclass

from gpualign._settings import Settings, setting

__all__ = ["FitSettings", "LINEAR_MODELS", "DISTORTION_CHOICES"]

#: The ``transform`` option's values.
LINEAR_MODELS = ("similarity", "affine", "auto")
#: The ``distortion`` option's values.
DISTORTION_CHOICES = ("poly", "tps", "auto")


@dataclass(frozen=True)
class FitSettings(Settings):
    """Model of the mapping and how its complexity is chosen.

    Attributes
    ----------
    spline_order : int or None
        Degree of the polynomial distortion surfaces; 0 = affine only; None chooses
        it by cross-validation on held-out matches.
    transform : {"auto", "similarity", "affine"}
        Linear part: rotation + one scale + shift, or the full affine; ``"auto"``
        keeps the similarity unless held-out stars need the affine.
    distortion : {"poly", "tps", "auto"}
        Distortion model: polynomial surfaces, a smoothing thin-plate spline, or
        whichever predicts held-out stars better.
    """

    spline_order: int | None = setting(
        None, "Distortion degree; 0 = affine only; default: cross-validated.", kind=int,
        minimum=0, maximum=9, optional=True)
    transform: str = setting(
        "auto", "Linear model: similarity, affine or auto (simpler unless the stars need "
        "more).", kind=str, choices=LINEAR_MODELS)
    distortion: str = setting(
        "poly", "Distortion model: poly, tps or auto (by held-out error).", kind=str,
        choices=DISTORTION_CHOICES)
