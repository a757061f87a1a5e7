"""Linear models under the distortion surfaces: similarity or full affine.

A *similarity* has a rotation, one scale and a shift (4 parameters; with a mirror
parity when the source is flipped); an *affine* map adds shear and anisotropic
scale (6 parameters). Either can carry the polynomial distortion surfaces of
:class:`~gpualign.transform.Transform` on top; the least-squares fits themselves
live in the transform layer (:func:`gpualign.transform.fit_similarity`), the choice
between the two in :mod:`gpualign.fit._selection`.
"""

from __future__ import annotations

import logging

import numpy as np

from gpualign._errors import InputError
from gpualign.fit._robust import robust_fit
from gpualign.fit._settings import LINEAR_MODELS
from gpualign.transform import Transform, fit_transform

log = logging.getLogger("gpualign")

__all__ = ["MODELS", "check_model", "fit_model", "robust_fit_model", "linear_parameters"]

#: The ``transform`` option's values (defined with the setting).
MODELS = LINEAR_MODELS


def check_model(model: object) -> str:
    """Validate the ``transform`` option; return it lower-cased."""
    if not isinstance(model, str) or model.lower() not in MODELS:
        raise InputError(f"transform must be one of {', '.join(MODELS)}, got {model!r}",
                         hint="similarity: rotation + one scale + shift; affine: adds shear "
                         "and anisotropic scale; auto: the simpler unless the data need more")
    return model.lower()


def fit_model(
    model: str,
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    weights: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    *,
    mirrored: bool = False,
    distortion: str = "poly",
) -> Transform:
    """Weighted least-squares fit of a similarity or affine map with distortion surfaces.

    Goes through the distortion-model interface (:func:`gpualign.transform.fit_transform`),
    so the same selection code serves every registered model.

    Parameters
    ----------
    model : {"similarity", "affine"}
        Linear part.
    tmpl_xy, src_xy : ndarray, shape (N, 2)
        Matched positions (template -> source).
    weights : ndarray, shape (N,)
        Inverse variances.
    degree : int
        The distortion model's complexity (the polynomial's total degree; <= 1: none).
    norm : tuple
        ``(cx, cy, hx, hy)`` normalisation of the template coordinates.
    mirrored : bool
        Parity of a similarity (a flipped source: negative determinant).
    distortion : str
        Registered distortion model.

    Returns
    -------
    Transform
    """
    if model not in ("affine", "similarity"):
        raise ValueError(f"unknown model {model!r}")
    return fit_transform(distortion, tmpl_xy, src_xy, weights, complexity=degree, norm=norm,
                         linear=model, mirrored=mirrored)


def robust_fit_model(
    model: str,
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    *,
    mirrored: bool = False,
    clip_sigma: float = 4.0,
    max_iter: int = 8,
) -> tuple[Transform, np.ndarray]:
    """:func:`fit_model` with iterative outlier rejection (as :func:`robust_fit`).

    Returns
    -------
    transform : Transform
    inliers : ndarray of bool
    """
    return robust_fit(
        tmpl_xy, src_xy, sigma, degree, norm, clip_sigma=clip_sigma, max_iter=max_iter,
        fit=lambda t_xy, s_xy, w: fit_model(model, t_xy, s_xy, w, degree, norm,
                                            mirrored=mirrored),
    )


def linear_parameters(t: Transform) -> dict[str, float]:
    """Rotation (deg), x/y scales, shear and parity of a transform's linear part.

    Decomposes ``L = R(theta) @ [[sx, sh * sy], [0, sy]] @ diag(p, 1)`` with
    ``p = -1`` for a mirror image.
    """
    lin = t.matrix[:, :2]
    parity = -1.0 if np.linalg.det(lin) < 0 else 1.0
    m = lin @ np.diag([parity, 1.0])
    q, r = np.linalg.qr(m)
    sign = np.sign(np.diag(r))
    q, r = q * sign, (r.T * sign).T
    return {
        "rotation_deg": float(np.degrees(np.arctan2(q[1, 0], q[0, 0]))),
        "scale_x": float(r[0, 0]),
        "scale_y": float(r[1, 1]),
        "shear": float(r[0, 1] / r[1, 1]),
        "parity": parity,
    }
