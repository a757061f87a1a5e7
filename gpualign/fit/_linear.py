"""Linear models under the distortion surfaces: similarity or full affine, and the choice.

A *similarity* has a rotation, one scale and a shift (4 parameters; with a mirror
parity when the source is flipped); an *affine* map adds shear and anisotropic
scale (6 parameters). Either can carry the polynomial distortion surfaces of
:class:`~gpualign._transform.Transform` on top. ``"auto"`` keeps the similarity
unless the matched stars say that the affine model predicts held-out stars
significantly better (the same paired k-fold test that picks the distortion degree
in :func:`gpualign._fit.choose_degree`).

The fit of a similarity with surfaces is one weighted least-squares problem over
both axes at once: unknowns ``(c0x, c0y, a, b)`` and the surfaces' coefficients of
degree >= 2, in coordinates normalised by one common half-size (a similarity has a
single scale, so both axes must share it).
"""

from __future__ import annotations

import logging

import numpy as np

from gpualign._errors import InputError
from gpualign.fit._robust import robust_fit
from gpualign.transform._transform import Transform, _design, _exponents, _weighted_lstsq, n_terms

log = logging.getLogger("gpualign")

__all__ = ["MODELS", "check_model", "fit_model", "robust_fit_model", "choose_model",
           "linear_parameters"]

#: The ``transform`` option's values.
MODELS = ("similarity", "affine", "auto")


def check_model(model: object) -> str:
    """Validate the ``transform`` option; return it lower-cased."""
    if not isinstance(model, str) or model.lower() not in MODELS:
        raise InputError(f"transform must be one of {', '.join(MODELS)}, got {model!r}",
                         hint="similarity: rotation + one scale + shift; affine: adds shear "
                         "and anisotropic scale; auto: the simpler unless the data need more")
    return model.lower()


def _similarity_design(
    tmpl_xy: np.ndarray, degree: int, norm: tuple[float, float, float, float], parity: float
) -> tuple[np.ndarray, list[tuple[int, int]], float]:
    """Design matrix (2N, 4 + 2 K) of a similarity (+ surfaces), rows x then y."""
    cx, cy, hx, hy = norm
    h = float(np.sqrt(hx * hy))
    dx = (tmpl_xy[:, 0] - cx) / h
    dy = (tmpl_xy[:, 1] - cy) / h
    n = len(tmpl_xy)
    high = [e for e in _exponents(max(degree, 1)) if sum(e) >= 2]
    k = len(high)
    a = np.zeros((2 * n, 4 + 2 * k))
    # sx = c0x + a * (p dx) - b * dy ; sy = c0y + b * (p dx) + a * dy
    a[:n, 0] = 1.0
    a[n:, 1] = 1.0
    a[:n, 2] = parity * dx
    a[:n, 3] = -dy
    a[n:, 2] = dy
    a[n:, 3] = parity * dx
    if k:
        full = _design((tmpl_xy[:, 0] - cx) / hx, (tmpl_xy[:, 1] - cy) / hy, degree)
        cols = [_exponents(degree).index(e) for e in high]
        a[:n, 4:4 + k] = full[:, cols]
        a[n:, 4 + k:] = full[:, cols]
    return a, high, h


def fit_model(
    model: str,
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    weights: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    *,
    mirrored: bool = False,
    clip_margin: float = 0.02,
) -> Transform:
    """Weighted least-squares fit of a similarity or affine map with surfaces on top.

    Parameters
    ----------
    model : {"similarity", "affine"}
        Linear part.
    tmpl_xy, src_xy : ndarray, shape (N, 2)
        Matched positions (template -> source).
    weights : ndarray, shape (N,)
        Inverse variances.
    degree : int
        Total degree of the surfaces (<= 1: none).
    norm : tuple
        ``(cx, cy, hx, hy)`` normalisation of the template coordinates.
    mirrored : bool
        Parity of a similarity (a flipped source: negative determinant).
    clip_margin : float
        Surfaces are clipped to the stars' box grown by this fraction.

    Returns
    -------
    Transform
    """
    from gpualign.transform._transform import fit_polynomial

    if model == "affine":
        return fit_polynomial(tmpl_xy, src_xy, weights, degree, norm, clip_margin)
    if model != "similarity":
        raise ValueError(f"unknown model {model!r}")
    parity = -1.0 if mirrored else 1.0
    a, high, h = _similarity_design(tmpl_xy, degree, norm, parity)
    target = np.concatenate([src_xy[:, 0], src_xy[:, 1]])[:, None]
    w = np.concatenate([weights, weights])
    sol = _weighted_lstsq(a, target, w)[:, 0]
    c0x, c0y, sa, sb = sol[:4]
    cx, cy, hx, hy = norm
    lin = np.array([[parity * sa, -sb], [parity * sb, sa]]) / h
    matrix = np.empty((2, 3))
    matrix[:, :2] = lin
    matrix[:, 2] = np.array([c0x, c0y]) - lin @ np.array([cx, cy])
    k = len(high)
    if degree < 2 or k == 0:
        return Transform(matrix, np.zeros((2, 0, 0)), norm)
    coeffs = np.zeros((2, degree + 1, degree + 1))
    for t, (i, j) in enumerate(high):
        coeffs[0, i, j] = sol[4 + t]
        coeffs[1, i, j] = sol[4 + k + t]
    u = (tmpl_xy[:, 0] - cx) / hx
    v = (tmpl_xy[:, 1] - cy) / hy
    pad_u = clip_margin * max(np.ptp(u), 1e-9)
    pad_v = clip_margin * max(np.ptp(v), 1e-9)
    clip = (u.min() - pad_u, u.max() + pad_u, v.min() - pad_v, v.max() + pad_v)
    return Transform(matrix, coeffs, norm, tuple(float(c) for c in clip))


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
    """:func:`fit_model` with iterative outlier rejection (as :func:`gpualign._fit.robust_fit`).

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


def _held_out_sq(
    model: str, tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, degree: int,
    norm: tuple[float, float, float, float], mirrored: bool, folds: np.ndarray, k: int,
) -> np.ndarray:
    e = np.full(len(tmpl_xy), np.nan)
    for f in range(k):
        test = folds == f
        if not test.any():
            continue
        t = fit_model(model, tmpl_xy[~test], src_xy[~test], w[~test], degree, norm,
                      mirrored=mirrored)
        e[test] = ((t.map_points(tmpl_xy[test]) - src_xy[test]) ** 2).sum(axis=1)
    return e


def choose_model(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
    *,
    mirrored: bool = False,
    k: int = 5,
    seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """Similarity unless the affine model predicts held-out pairs significantly better.

    Every pair's k-fold held-out residual is computed under both models (same folds,
    same surfaces' degree). With ``diff`` the per-pair weighted excess of the
    similarity's squared error over the affine's, the similarity is kept when
    ``mean(diff) <= 2 * std(diff) / sqrt(N)``: a shear or anisotropic scale that the
    stars cannot tell from noise is not fitted (two free parameters fewer), and a
    real one wins as soon as it shows.

    Parameters
    ----------
    tmpl_xy, src_xy : ndarray, shape (N, 2)
        Matched (inlier) pairs.
    sigma : ndarray, shape (N,)
        Expected residual of each pair.
    degree : int
        Degree of the surfaces on top of either model.
    norm : tuple
        Normalisation of the template coordinates.
    mirrored : bool
        Parity of the similarity.
    k : int
        Folds.
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    model : str
        ``"similarity"`` or ``"affine"``.
    scores : dict
        Held-out weighted RMS (source px) per model.
    """
    n = len(tmpl_xy)
    if n < 2 * (n_terms(max(degree, 1)) + 4):
        return "affine", {}
    w = 1.0 / sigma**2
    folds = np.random.default_rng(seed).permutation(n) % k
    errs = {m: _held_out_sq(m, tmpl_xy, src_xy, w, degree, norm, mirrored, folds, k)
            for m in ("similarity", "affine")}
    if not all(np.isfinite(e).all() for e in errs.values()):
        return "affine", {}
    scores = {m: float(np.sqrt(np.sum(w * e) / np.sum(w))) for m, e in errs.items()}
    diff = w * (errs["similarity"] - errs["affine"]) / np.mean(w)
    chosen = "similarity" if diff.mean() <= 2.0 * diff.std(ddof=1) / np.sqrt(n) else "affine"
    log.debug("model choice: held-out rms similarity %.4f, affine %.4f -> %s",
              scores["similarity"], scores["affine"], chosen)
    return chosen, scores


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


def select_model(
    option: str,
    affine_fit: Transform,
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    degree: int,
    norm: tuple[float, float, float, float],
) -> tuple[Transform, str, dict[str, float]]:
    """Apply the ``transform`` option to the final inlier pairs of an affine fit.

    Parameters
    ----------
    option : {"similarity", "affine", "auto"}
        The user's choice.
    affine_fit : Transform
        The affine (+ surfaces) fit of these pairs; its determinant gives the parity.
    tmpl_xy, src_xy, sigma : ndarray
        Inlier pairs and their expected residuals.
    degree : int
        Degree of the surfaces.
    norm : tuple
        Normalisation of the template coordinates.

    Returns
    -------
    transform : Transform
    model : str
        The model used.
    scores : dict
        Held-out RMS per model (``"auto"`` only).
    """
    option = check_model(option)
    mirrored = bool(np.linalg.det(affine_fit.matrix[:, :2]) < 0)
    scores: dict[str, float] = {}
    model = option
    if option == "auto":
        model, scores = choose_model(tmpl_xy, src_xy, sigma, degree, norm, mirrored=mirrored)
    if model == "affine":
        return affine_fit, model, scores
    t = fit_model("similarity", tmpl_xy, src_xy, 1.0 / sigma**2, degree, norm,
                  mirrored=mirrored)
    return t, model, scores
