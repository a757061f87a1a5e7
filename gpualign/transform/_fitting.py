"""Weighted least-squares fits that return a :class:`Transform`, for any registered model."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpualign.transform._model import Box, model_class
from gpualign.transform._polynomial import fit_affine_parts, fit_similarity_parts
from gpualign.transform._transform import Transform

__all__ = ["fit_transform", "fit_polynomial", "fit_similarity"]


def fit_transform(model: str, tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, *,
                  complexity: Any, norm: Box, linear: str = "affine",
                  mirrored: bool = False) -> Transform:
    """Fit the distortion model registered as ``model`` (see ``DistortionModel.fit_transform``)."""
    matrix, distortion = model_class(model).fit_transform(
        tmpl_xy, src_xy, weights, complexity=complexity, norm=norm, linear=linear,
        mirrored=mirrored)
    return Transform(matrix, distortion)


def fit_polynomial(tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, degree: int,
                   norm: Box, clip_margin: float = 0.02) -> Transform:
    """Affine + polynomial surfaces of ``degree`` (1 = affine only), weighted.

    Parameters
    ----------
    tmpl_xy, src_xy : ndarray, shape (N, 2)
        Matched positions (template -> source).
    weights : ndarray, shape (N,)
        Inverse variances.
    degree : int
        Total degree.
    norm : tuple
        ``(cx, cy, hx, hy)`` normalisation of the template coordinates.
    clip_margin : float
        Surfaces are clipped to the stars' box grown by this fraction.

    Returns
    -------
    Transform
    """
    return Transform(*fit_affine_parts(tmpl_xy, src_xy, weights, degree, norm, clip_margin))


def fit_similarity(tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, degree: int,
                   norm: Box, *, mirrored: bool = False,
                   clip_margin: float = 0.02) -> Transform:
    """Similarity (rotation, one scale, shift; parity) + polynomial surfaces, weighted."""
    return Transform(*fit_similarity_parts(tmpl_xy, src_xy, weights, degree, norm,
                                           mirrored=mirrored, clip_margin=clip_margin))
