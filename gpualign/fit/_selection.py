"""Choosing the model's complexity by held-out error: degree, linear part, distortion model.

Every choice is made the same way: k-fold cross-validation on the matched pairs,
each pair's held-out residual computed under every candidate (same folds), and the
simplest candidate kept unless a more complex one predicts held-out pairs
significantly better, pair by pair. The fit's own residuals always favour the more
complex model; held-out errors do not.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
import scipy.special

from gpualign.fit._linear import check_model, fit_model
from gpualign.fit._signed_rank import signed_rank_greater
from gpualign.transform import Transform, n_terms
from gpualign.transform._polynomial import design_matrix

log = logging.getLogger("gpualign")

__all__ = ["choose_degree", "choose_model", "select_model", "held_out_sq_errors", "MAX_DEGREE"]

MAX_DEGREE = 7
MIN_PAIRS_PER_TERM = 5
#: False-alarm probability of the F-test that picks the affine model over the similarity
#: when too few pairs are left for cross-validation.
AFFINE_F_TEST_ALPHA = 0.01
#: One-sided probability of the signed-rank test below which the affine's held-out errors
#: are better than the similarity's (2 sigma, as the paired mean test).
SIGNED_RANK_ALPHA = 0.0228
#: Standard errors of the paired held-out differences by which a higher degree must beat
#: a lower one to be chosen; or the one-sided signed-rank probability below which it
#: does (3 sigma: a degree brings several coefficients, and the test is only there for
#: the clear majority that a few pairs far off hide from the mean's test).
DEGREE_GAIN_SE, DEGREE_SIGNED_RANK_ALPHA = 2.0, 0.00135


def _held_out_sq_errors_all(
    tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, degrees: list[int],
    norm: tuple[float, float, float, float], folds: np.ndarray, k: int,
) -> dict[int, np.ndarray]:
    """Squared k-fold held-out residual of every pair, for every degree at once.

    The design of degree ``d`` is the first ``n_terms(d)`` columns of the design of the
    highest degree, and a fold's training normal matrix is the full one minus the
    fold's own: one pass over the pairs serves all degrees and folds.
    """
    cx, cy, hx, hy = norm
    top = max(degrees)
    design = design_matrix((tmpl_xy[:, 0] - cx) / hx, (tmpl_xy[:, 1] - cy) / hy, top)
    a = design * np.sqrt(w)[:, None]
    b = src_xy * np.sqrt(w)[:, None]
    scale = np.sqrt((a**2).sum(axis=0))
    scale[scale == 0] = 1.0
    a /= scale
    normal, rhs = a.T @ a, a.T @ b
    parts = [(folds == f, a[folds == f], b[folds == f]) for f in range(k)]
    fold_normal = [(m, af.T @ af, af.T @ bf) for m, af, bf in parts]
    out = {}
    for d in degrees:
        m = n_terms(d)
        e = np.full(len(tmpl_xy), np.nan)
        for mask, nf, rf in fold_normal:
            if not mask.any() or (~mask).sum() < m + 2:
                continue
            try:
                c = scipy.linalg.solve(normal[:m, :m] - nf[:m, :m], rhs[:m] - rf[:m],
                                       assume_a="pos", check_finite=False)
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
                continue
            pred = (a[mask, :m] @ c) / np.sqrt(w[mask])[:, None]
            e[mask] = ((pred - src_xy[mask]) ** 2).sum(axis=1)
        out[d] = e
    return out


def choose_degree(
    tmpl_xy: np.ndarray,
    src_xy: np.ndarray,
    sigma: np.ndarray,
    norm: tuple[float, float, float, float],
    *,
    max_degree: int = MAX_DEGREE,
    k: int = 5,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """Pick the polynomial degree by k-fold cross-validation on held-out pairs.

    Every pair's held-out residual is computed for each degree (same folds), and
    degrees are compared pair by pair: the simplest degree whose excess held-out
    error over the best degree is not significant is chosen (neither the mean of the
    paired differences above :data:`DEGREE_GAIN_SE` standard errors, nor a one-sided
    signed-rank test at 3 sigma; :func:`choose_model`'s rule, stricter). An
    undistorted field thus keeps the affine model, also where a few dozen pairs crowd
    into a thin strip or a corner (a degree fitted to their noise costs more than it
    gains; with a one-standard-error rule such fields took degree 2 on 1-4% of
    simulated ones), and a distorted one gets the degree its distortion needs even
    with few stars. A degree is only tried with at least 5 pairs per coefficient.

    Returns
    -------
    degree : int
    scores : dict
        Held-out weighted RMS (source px) per degree tried.
    """
    n = len(tmpl_xy)
    w = 1.0 / sigma**2
    folds = np.random.default_rng(seed).permutation(n) % k
    degrees = [d for d in range(1, max_degree + 1) if n >= MIN_PAIRS_PER_TERM * n_terms(d)]
    if not degrees:
        return 1, {}
    # Wrong matches are outliers whatever the degree; stars that only a higher degree
    # fits (corners of a distorted field) are not, and must keep their vote. Outliers
    # are dropped from the training folds too (a heavy one bends every fit near it and
    # makes the lower degrees look worse than they are), then the errors are redone.
    good = np.ones(n, bool)
    for attempt in range(4):
        errs: dict[int, np.ndarray] = {}
        for d, e in _held_out_sq_errors_all(tmpl_xy[good], src_xy[good], w[good], degrees,
                                            norm, folds[good], k).items():
            if not np.isfinite(e).all():
                break
            errs[d] = e
        if not errs:
            return 1, {}
        if attempt == 3:
            break
        z = np.array([w[good] * e for e in errs.values()])  # (degrees, pairs)
        zmin = z.min(axis=0)
        keep = zmin <= 25.0 * max(float(np.median(zmin)), 1e-300)
        if keep.all() or keep.sum() < max(8, MIN_PAIRS_PER_TERM * n_terms(min(errs))):
            break
        idx = np.flatnonzero(good)
        good[idx[~keep]] = False
    w, n = w[good], int(good.sum())
    mean = {d: float(np.sum(w * e) / np.sum(w)) for d, e in errs.items()}
    best = min(mean, key=mean.__getitem__)
    chosen = best
    for d in sorted(errs):
        if d >= best:
            break
        diff = w * (errs[d] - errs[best]) / np.mean(w)
        if not _significantly_positive(diff):
            chosen = d
            break
    return chosen, {d: float(np.sqrt(v)) for d, v in mean.items()}


def _significantly_positive(diff: np.ndarray) -> bool:
    """Whether paired differences are significantly above zero.

    Their mean above :data:`DEGREE_GAIN_SE` standard errors, or, as a few pairs far off
    (the corners a distortion moves most) inflate the spread and hide a clear majority,
    a one-sided Wilcoxon signed-rank probability below :data:`DEGREE_SIGNED_RANK_ALPHA`.
    """
    n = len(diff)
    if diff.mean() > DEGREE_GAIN_SE * diff.std(ddof=1) / np.sqrt(n):
        return True
    if not np.any(diff != 0):
        return False
    return bool(signed_rank_greater(diff) < DEGREE_SIGNED_RANK_ALPHA)


def held_out_sq_errors(
    model: str, tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, degree: int,
    norm: tuple[float, float, float, float], mirrored: bool, folds: np.ndarray, k: int,
) -> np.ndarray:
    """Each pair's squared k-fold held-out residual under a linear model plus surfaces.

    ``folds`` assigns every pair to one of ``k`` folds; each fold is predicted by a fit
    (:func:`gpualign.fit.fit_model`) to the others.
    """
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
    real one wins as soon as it shows. As heavy tails (a few pairs far off) inflate
    ``std(diff)``, the affine also wins when a one-sided Wilcoxon signed-rank test of
    ``diff`` gives a probability below :data:`SIGNED_RANK_ALPHA` (about 2 sigma).

    With fewer than ``2 * (n_terms(degree) + 4)`` pairs the folds would be too thin:
    the two nested least-squares fits are compared by an F-test instead (the affine's
    two extra parameters kept only at a false-alarm probability below
    :data:`AFFINE_F_TEST_ALPHA`), so that a handful of stars are not spent on a shear
    they cannot measure.

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
    w = 1.0 / sigma**2
    if n < 2 * (n_terms(max(degree, 1)) + 4):
        return _f_test_model(tmpl_xy, src_xy, w, degree, norm, mirrored), {}
    folds = np.random.default_rng(seed).permutation(n) % k
    errs = {m: held_out_sq_errors(m, tmpl_xy, src_xy, w, degree, norm, mirrored, folds, k)
            for m in ("similarity", "affine")}
    if not all(np.isfinite(e).all() for e in errs.values()):
        return "affine", {}
    scores = {m: float(np.sqrt(np.sum(w * e) / np.sum(w))) for m, e in errs.items()}
    diff = w * (errs["similarity"] - errs["affine"]) / np.mean(w)
    better = diff.mean() > 2.0 * diff.std(ddof=1) / np.sqrt(n)
    if not better and np.any(diff != 0):
        # One pair far off (an edge pair of a partial field) inflates the spread and
        # hides a clear majority; the signed-rank test is not fooled by it.
        better = signed_rank_greater(diff) < SIGNED_RANK_ALPHA
    chosen = "affine" if better else "similarity"
    log.debug("model choice: held-out rms similarity %.4f, affine %.4f -> %s",
              scores["similarity"], scores["affine"], chosen)
    return chosen, scores


def _f_test_model(tmpl_xy: np.ndarray, src_xy: np.ndarray, w: np.ndarray, degree: int,
                  norm: tuple[float, float, float, float], mirrored: bool) -> str:
    """Similarity or affine by an F-test of the two nested weighted fits (few pairs).

    ``F = ((chi2_sim - chi2_aff) / 2) / (chi2_aff / dof)`` with ``dof`` the affine's
    degrees of freedom (two coordinates per pair); the affine is chosen when the
    probability of so large an ``F`` under the similarity is below
    :data:`AFFINE_F_TEST_ALPHA`. Without a degree of freedom to spare: the similarity.
    """
    n_aff = 2 * n_terms(max(degree, 1))
    dof = 2 * len(tmpl_xy) - n_aff
    if dof < 1:
        return "similarity"
    chi2 = {}
    for m in ("similarity", "affine"):
        t = fit_model(m, tmpl_xy, src_xy, w, degree, norm, mirrored=mirrored)
        chi2[m] = float(np.sum(w * ((t.map_points(tmpl_xy) - src_xy) ** 2).sum(axis=1)))
    if not all(np.isfinite(v) for v in chi2.values()):
        return "affine"
    if chi2["affine"] <= 0.0:
        return "affine" if chi2["similarity"] > 0.0 else "similarity"
    f = max(chi2["similarity"] - chi2["affine"], 0.0) / 2.0 / (chi2["affine"] / dof)
    p = float(scipy.special.fdtrc(2, dof, f))  # scipy.stats.f.sf(f, 2, dof)
    chosen = "affine" if p < AFFINE_F_TEST_ALPHA else "similarity"
    log.debug("model choice (%d pairs, F-test): F = %.3g, p = %.3g -> %s", len(tmpl_xy),
              f, p, chosen)
    return chosen


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
