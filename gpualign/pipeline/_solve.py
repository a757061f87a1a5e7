"""Solving for the mapping from two catalogues: filter, quad match, refine, fit, choose.

:func:`solve` is the part of registration after detection: the usable stars are
filtered (:class:`~gpualign.detect.DetectSettings`), an initial mapping found from
quads (:class:`~gpualign.match.MatchSettings`), then cross-matching and fitting
alternate until the matched set is stable; the degree, the linear part and the
distortion model are chosen by held-out error (:class:`~gpualign.fit.FitSettings`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy.spatial import cKDTree

from gpualign._errors import NoOverlap, NoQuadMatch, TooFewStars, warn
from gpualign.backend import Backend, get_backend
from gpualign.detect import Catalog, DetectSettings, filter_catalog, keep_brightest
from gpualign.fit import (
    MAX_DEGREE,
    FitSettings,
    choose_degree,
    robust_fit,
    robust_fit_model,
    select_model,
)
from gpualign.fit._distortion import select_distortion
from gpualign.match import MatchSettings, NeighbourIndex, QuadSolution, cross_match, quad_match
from gpualign.match._multiscale import FALSE_MATCH_RATE
from gpualign.match._prior import CROWDING, PriorMatch, WcsPrior, wcs_prior_match
from gpualign.products import Solution, fit_statistics
from gpualign.transform import Transform, fit_transform

log = logging.getLogger("gpualign")

__all__ = ["solve", "check_overlap", "template_norm", "FEW_MATCHES", "HIGH_RMS_PX",
           "HIGH_RMS_FWHM", "EXTRAPOLATION"]

#: Fewer matched pairs than this: a 6-parameter affine fit has too few spare pairs to
#: reject a wrong match or to show a distortion (the fit runs, with a warning).
FEW_MATCHES = 10
#: Residual RMS (template px) above ``max(HIGH_RMS_PX, HIGH_RMS_FWHM * FWHM)``: a good
#: fit reaches ~0.01-0.1 px; half a pixel (or 15% of a broad PSF) leaves visible
#: dipoles in a difference image.
HIGH_RMS_PX = 0.5
HIGH_RMS_FWHM = 0.15
#: Fraction of the overlap's extent by which it reaches beyond the matched stars' box
#: before a warning: there the mapping is extrapolated (the distortion frozen).
EXTRAPOLATION = 0.25


def template_norm(tmpl: Catalog) -> tuple[float, float, float, float]:
    if tmpl.shape is not None:
        ny, nx = tmpl.shape
        return (nx - 1) / 2.0, (ny - 1) / 2.0, max(nx / 2.0, 1.0), max(ny / 2.0, 1.0)
    lo, hi = tmpl.xy.min(axis=0), tmpl.xy.max(axis=0)
    c, h = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1.0)
    return float(c[0]), float(c[1]), float(h[0]), float(h[1])


def _refine(
    src: Catalog, tmpl: Catalog, initial: np.ndarray | Transform, *, max_match_dist: float,
    spline_order: int | None, min_n_match: int, max_iter: int = 8, tol: float | None = None,
    backend: Backend | None = None,
) -> tuple[Transform, np.ndarray, np.ndarray, np.ndarray, int, dict[int, float], float]:
    """Alternate cross-matching and fitting until the matched set is stable.

    Each pass matches every usable star with the current model (affine first, then
    affine + distortion), so stars that the affine-only model put too far away (the
    corners of a distorted field) join once the surfaces are fitted.
    """
    norm = template_norm(tmpl)
    t = initial if isinstance(initial, Transform) else Transform.from_matrix(initial)
    src_xy, tmpl_xy = src.xy, tmpl.xy
    index = NeighbourIndex(src_xy, backend)
    scale = np.sqrt(abs(np.linalg.det(t.matrix[:, :2])))
    tol = max_match_dist if tol is None else tol
    prev: tuple[int, ...] | None = None
    degree, scores = 1, {}
    inl_t = inl_s = np.zeros((0, 2))
    inl_sig = np.zeros(0)
    for it in range(max_iter):
        i, j, _ = cross_match(t.map_points(tmpl_xy), src_xy, tol, index)
        if len(i) < max(min_n_match, 4):
            if it == 0:
                raise TooFewStars(
                    f"only {len(i)} stars matched within max_match_dist={max_match_dist}",
                    hint="raise max_match_dist or lower min_n_match",
                )
            break
        sig = np.hypot(src.sigma[j], scale * tmpl.sigma[i])
        if spline_order is not None:
            degree = max(1, int(spline_order))
        else:
            degree, scores = choose_degree(tmpl_xy[i], src_xy[j], sig, norm)
        t, keep = robust_fit(tmpl_xy[i], src_xy[j], sig, degree, norm)
        inl_t, inl_s, inl_sig = tmpl_xy[i][keep], src_xy[j][keep], sig[keep]
        resid = np.hypot(*(t.map_points(inl_t) - inl_s).T)
        key = tuple(np.sort(i[keep]))
        log.debug(
            "refine pass %d: %d matched, %d kept, degree %d, rms %.4f px",
            it + 1, len(i), keep.sum(), degree, np.sqrt(np.mean(resid**2)),
        )
        if key == prev:
            break
        prev = key
        # Tighten towards the fit's own scatter, never beyond the user's tolerance.
        tol = min(max_match_dist, max(1.0, 8.0 * float(np.sqrt(np.mean(resid**2)))))
    return t, inl_t, inl_s, inl_sig, degree, scores, tol


def solve(
    src_cat: Catalog,
    tmpl_cat: Catalog,
    *,
    detect: DetectSettings | None = None,
    match: MatchSettings | None = None,
    fit: FitSettings | None = None,
    backend: str | Backend | None = None,
    timings: dict[str, float] | None = None,
    prior: WcsPrior | None = None,
    false_match_rate: float = FALSE_MATCH_RATE,
) -> Solution:
    """Match and fit two catalogues (the part of registration after detection).

    Parameters
    ----------
    src_cat, tmpl_cat : Catalog
        Detections of the source and the template (with their image shapes). A
        :class:`~gpualign.detect.DetectedCatalog` brings its threshold (the solution's
        ``thresholds``) and, where automatic depth went deeper, the deeper catalogue the
        final fit also uses once the mapping is known.
    detect, match, fit : settings, optional
        Filtering, matching and fitting settings (defaults when None).
    backend : str or Backend, optional
        Where the neighbour queries run (KD-tree on NumPy, chunked distance matrices
        on a GPU); the small fits stay on the host.
    timings : dict, optional
        Filled with the seconds of the ``match`` and ``fit`` stages.
    prior : WcsPrior, optional
        The two images' WCSs: with ``match.wcs_prior="auto"`` the initial mapping is
        first sought within their uncertainty, blind quad matching when that fails
        verification (recorded as the solution's ``prior``).
    false_match_rate : float
        Accepted chance that blind matching's multi-scale stage accepts a false match
        (a caller that solves twice gives each try its share).

    Notes
    -----
    On a crowded field, where the default crowding filter (``2 * max_match_dist``)
    leaves fewer than half of the stars, a failed blind match is tried once more with
    the filter of :func:`crowded_sep` (and half of it as the match tolerance); the two
    tries share the multi-scale stage's false-match rate.

    Returns
    -------
    Solution
    """
    det = DetectSettings() if detect is None else detect
    mat = MatchSettings() if match is None else match
    fit = FitSettings() if fit is None else fit
    be = None if backend is None else get_backend(backend)
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    max_match_dist, min_n_match = mat.max_match_dist, mat.min_n_match
    min_sep = 2.0 * max_match_dist if det.min_sep is None else det.min_sep
    fkw = dict(min_fwhm=det.min_fwhm, bad_flag_bits=det.bad_flag_bits, min_sep=min_sep,
               n_det=det.n_det)
    src, tmpl = _usable(src_cat, fkw), _usable(tmpl_cat, fkw)
    for name, cat, raw in (("source", src, src_cat), ("template", tmpl, tmpl_cat)):
        if len(cat) < 4:
            _too_few(name, len(cat), raw)
    quad_src = filter_catalog(src, edge_buffer=mat.quad_edge_buffer)
    quad_tmpl = filter_catalog(tmpl, edge_buffer=mat.quad_edge_buffer)
    for name, inner, cat in (("source", quad_src, src), ("template", quad_tmpl, tmpl)):
        if len(inner) < 4 and cat.shape is not None:
            # Mostly off the image: a catalogue in another pixel frame, not a sparse field.
            ny, nx = cat.shape
            off = (cat.x < -0.5) | (cat.x > nx - 0.5) | (cat.y < -0.5) | (cat.y > ny - 0.5)
            if off.sum() > len(cat) / 2:
                raise TooFewStars(
                    f"only {int((~off).sum())} of the {len(cat)} usable {name} stars lie "
                    f"inside the {nx}x{ny} {name} image",
                    hint="check that a given catalogue is in the image's pixel frame "
                    "(0-based x = column, y = row)",
                )
    qs, how, prior_tol, prior_rms = _prior_match(src_cat, tmpl_cat, fkw, prior, mat, be)
    if qs is None:
        quad_opts = {k: v for k, v in mat.as_dict().items()
                     if k not in ("quad_edge_buffer", "wcs_prior")}
        # A crowded field (most stars with a neighbour within the default crowding
        # filter's 2 x max_match_dist) may keep no common star in a thin overlap: if
        # blind matching fails, it is tried again with a filter adapted to the density.
        # The two tries share the multi-scale stage's false-match rate.
        retry_sep = None
        if det.min_sep is None and min(len(src) / max(len(src_cat), 1),
                                       len(tmpl) / max(len(tmpl_cat), 1)) < CROWDED_KEPT:
            retry_sep = crowded_sep(src_cat, tmpl_cat, fkw)  # (only then worth the query)
        rate = false_match_rate if retry_sep is None else false_match_rate / 2
        try:
            qs = quad_match(quad_src, quad_tmpl, **quad_opts, verify=(src, tmpl), backend=be,
                            false_match_rate=rate)
        except NoQuadMatch as exc:
            if retry_sep is None:
                raise
            log.info("%s; crowded field: matching again with a %.3g px crowding filter and "
                     "max_match_dist %.3g", exc.args[0], retry_sep, retry_sep / 2)
            min_sep, max_match_dist = retry_sep, retry_sep / 2
            fkw["min_sep"] = min_sep
            src, tmpl = _usable(src_cat, fkw), _usable(tmpl_cat, fkw)
            quad_src, quad_tmpl = (filter_catalog(c, edge_buffer=mat.quad_edge_buffer)
                                   for c in (src, tmpl))
            qs = quad_match(quad_src, quad_tmpl, **{**quad_opts, "max_match_dist":
                                                    max_match_dist},
                            verify=(src, tmpl), backend=be, false_match_rate=rate)
    timings["match"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rkw = dict(max_match_dist=max_match_dist, spline_order=fit.spline_order,
               min_n_match=min_n_match, backend=be)
    ref_src, ref_tmpl, ref_kw = src, tmpl, rkw
    if prior_tol is not None:
        # The prior matched at prior_tol (source px): the first refinement keeps to that
        # tolerance, so stars farther apart than CROWDING times it cannot be confused
        # (as in the final pass below). A coarser template (a survey image under a deep
        # one) gets it in its own, larger pixels; a finer one keeps it in template px (at
        # the source's scale nearly every star of a deep template has a neighbour: the
        # fit's clipping handles the blends, measured better than dropping them).
        per_src_px = 1.0 / np.sqrt(abs(np.linalg.det(qs.matrix[:, :2])))  # template px
        if per_src_px > 1.0:
            # A coarser source: the refinement's 1 px floor is many template px; keep to
            # the scatter of the prior's matches instead (blends of the coarse image
            # otherwise join with full weight).
            prior_tol = min(prior_tol, max(4.0 * prior_rms, 1.0 / per_src_px))
        ref_kw = {**rkw, "max_match_dist": min(max_match_dist, prior_tol)}
        seps = (CROWDING * prior_tol, CROWDING * prior_tol * min(per_src_px, 1.0))
        ref_src, ref_tmpl = (filter_catalog(cat, **{**fkw, "min_sep": min(min_sep, sep)})
                             for cat, sep in zip((src_cat, tmpl_cat), seps, strict=True))
    t, inl_t, inl_s, inl_sig, degree, scores, tol = _refine(ref_src, ref_tmpl, qs.matrix,
                                                            tol=prior_tol, **ref_kw)
    # Once the mapping is known to ~tol, stars with a neighbour beyond 2.5 tol cannot
    # be confused: a last pass with that looser crowding filter adds the stars the
    # matching stage had to leave out (crowded fields).
    final_sep = 2.5 * tol
    if min_sep > final_sep:
        fkw["min_sep"] = final_sep
        more = _refine(filter_catalog(src_cat, **fkw), filter_catalog(tmpl_cat, **fkw), t,
                       tol=tol, **ref_kw)
        if len(more[1]) > len(inl_t):
            t, inl_t, inl_s, inl_sig, degree, scores, tol = more
    src_deep, tmpl_deep = (getattr(c, "deep", None) for c in (src_cat, tmpl_cat))
    if src_deep is not None or tmpl_deep is not None:
        # Automatic depth stopped above its deepest rung: now that the mapping is known,
        # the fainter stars of the deepest catalogue cannot be confused either.
        try:
            more = _refine(filter_catalog(src_cat if src_deep is None else src_deep, **fkw),
                           filter_catalog(tmpl_cat if tmpl_deep is None else tmpl_deep, **fkw),
                           t, tol=tol, **ref_kw)
        except TooFewStars:
            more = None
        if more is not None and len(more[1]) > len(inl_t):
            log.info("final fit with the deeper catalogues: %d matches (%d before)",
                     len(more[1]), len(inl_t))
            t, inl_t, inl_s, inl_sig, degree, scores, tol = more
    t, model, model_scores = select_model(fit.transform, t, inl_t, inl_s, inl_sig, degree,
                                          template_norm(tmpl))
    t, dist, complexity, dist_scores = select_distortion(
        fit.distortion, t, inl_t, inl_s, inl_sig, degree=degree, norm=template_norm(tmpl),
        linear=model, mirrored=qs.mirrored)
    inv_norm = template_norm(src)
    if dist == "poly":
        inverse, _ = robust_fit_model(model, inl_s, inl_t, inl_sig, degree, inv_norm,
                                      mirrored=qs.mirrored, clip_sigma=np.inf)
    else:
        inverse = fit_transform(dist, inl_s, inl_t, 1.0 / inl_sig**2, complexity=complexity,
                                norm=inv_norm, linear=model, mirrored=qs.mirrored)
    check_overlap(t, src.shape, tmpl.shape)
    timings["fit"] = time.perf_counter() - t1
    stats = fit_statistics(inverse, inl_t, inl_s)
    thresholds = tuple(getattr(c, "thresh", None) for c in (src_cat, tmpl_cat))
    solution = Solution(
        t, inverse, inl_t, inl_s, stats, degree, qs.mirrored, scores,
        src_cat.shape, tmpl_cat.shape, timings, model, model_scores, dist, dist_scores,
        thresholds=None if thresholds == (None, None) else thresholds, prior=how,
    )
    fwhm = tmpl.fwhm[np.isfinite(tmpl.fwhm)]  # a catalogue without FWHMs has none
    warn_weak_fit(solution, fwhm=float(np.median(fwhm)) if len(fwhm) else np.nan,
                  degree_chosen=fit.spline_order is None)
    return solution


def _prior_match(src_cat: Catalog, tmpl_cat: Catalog, fkw: dict, prior: WcsPrior | None,
                 mat: MatchSettings, be: Backend | None
                 ) -> tuple[QuadSolution | None, str, float | None, float]:
    """The WCS prior's initial mapping (None: match blind), how, its tolerance and RMS.

    The prior takes the usable stars without the crowding filter (it leaves out crowded
    stars at its own tolerance). ``how`` is ``"wcs"``, ``"blind"`` (no prior: no WCS,
    or ``wcs_prior="off"``) or ``"blind-fallback"`` (the prior failed verification;
    logged at INFO).
    """
    if prior is None or mat.wcs_prior == "off":
        return None, "blind", None, np.nan
    src, tmpl = (filter_catalog(c, **{**fkw, "min_sep": 0.0}) for c in (src_cat, tmpl_cat))
    try:
        found = wcs_prior_match(src, tmpl, prior, max_match_dist=mat.max_match_dist,
                                min_n_match=mat.min_n_match, allow_mirror=mat.allow_mirror,
                                backend=be)
    except Exception as exc:  # noqa: BLE001 - a WCS astropy cannot use: blind, as any failure
        found = PriorMatch(None, f"{type(exc).__name__}: {exc}"[:120])
    if found.solution is None:
        log.info("WCS prior failed verification (%s): blind quad matching", found.reason)
        return None, "blind-fallback", None, np.nan
    log.info("WCS prior: %s", found.reason)
    return found.solution, "wcs", found.tol, found.rms


def warn_weak_fit(solution: Solution, *, fwhm: float = np.nan,
                  degree_chosen: bool = True) -> None:
    """Issue a :class:`~gpualign.GpuAlignWarning` for each doubtful side of a solution.

    Few matches (< :data:`FEW_MATCHES`), a residual RMS above
    ``max(HIGH_RMS_PX, HIGH_RMS_FWHM * fwhm)`` (times the source's pixel size in template
    px where the source is coarser), a cross-validated degree at its cap
    (:data:`~gpualign.fit.MAX_DEGREE`, when ``degree_chosen``), an overlap reaching more than
    :data:`EXTRAPOLATION` of its extent beyond the matched stars' box, a mirrored
    solution.

    Parameters
    ----------
    solution : Solution
        The solved mapping with its matched pairs and statistics.
    fwhm : float
        Median FWHM of the template's stars (px); NaN when unknown.
    degree_chosen : bool
        Whether the degree was chosen by cross-validation (not given by the user).
    """
    n, rms = int(solution.stats["n_match"]), float(solution.stats["rms"])
    if n < FEW_MATCHES:
        warn(f"only {n} matched stars: the mapping is poorly constrained and a wrong match "
             "would go unnoticed", hint="check the result; detect deeper (lower "
             "sep_thresh) or give larger overlapping images", stacklevel=3)
    limit = max(HIGH_RMS_PX, HIGH_RMS_FWHM * fwhm) if np.isfinite(fwhm) else HIGH_RMS_PX
    # A coarser source (e.g. 5"/px onto 0.34"/px): its centroid errors, in template px,
    # grow with its pixel size.
    det = abs(float(np.linalg.det(solution.transform.matrix[:, :2])))
    if det > 0:
        limit *= max(1.0, 1.0 / np.sqrt(det))
    if np.isfinite(rms) and rms > limit:
        warn(f"high fit residuals: rms {rms:.3g} px over {n} matched stars (above "
             f"{limit:.2g} px)", hint="check for a wrong match or a distortion the model "
             "misses; try --distortion tps or a smaller max_match_dist", stacklevel=3)
    if degree_chosen and solution.distortion == "poly" and solution.degree >= MAX_DEGREE:
        warn(f"the distortion degree chosen by cross-validation is the cap ({MAX_DEGREE}): "
             "the distortion may need more than the polynomial can give",
             hint="check the residuals near the corners, or try --distortion tps",
             stacklevel=3)
    beyond = _extrapolation(solution)
    if beyond > EXTRAPOLATION:
        frozen = " (the distortion is frozen there)" if solution.degree > 1 else ""
        warn(f"the mapping is extrapolated up to {beyond:.0%} of the overlap beyond the "
             f"matched stars{frozen}", hint="check the result away from the stars; deeper "
             "detection spreads the stars over the whole overlap", stacklevel=3)
    if solution.mirrored:
        warn("the solution is mirrored: the source is a mirror image of the template",
             hint="expected for a flipped camera or optics; otherwise the match is wrong: "
             "set allow_mirror=False (--no-mirror)", stacklevel=3)


def _extrapolation(solution: Solution) -> float:
    """Largest reach of the overlap beyond the matched stars' box, per axis extent."""
    src_shape, tmpl_shape = solution.source_shape, solution.template_shape
    if src_shape is None or tmpl_shape is None or len(solution.template_xy) < 2:
        return 0.0
    ny, nx = tmpl_shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 65), np.linspace(0, nx - 1, 65), indexing="ij")
    sx, sy = solution.transform(gx, gy)
    inside = ((sx >= -0.5) & (sx <= src_shape[1] - 0.5) & (sy >= -0.5)
              & (sy <= src_shape[0] - 0.5))
    if not inside.any():
        return 0.0
    lo_o = np.array([gx[inside].min(), gy[inside].min()])
    hi_o = np.array([gx[inside].max(), gy[inside].max()])
    lo_s, hi_s = solution.template_xy.min(axis=0), solution.template_xy.max(axis=0)
    extent = np.maximum(hi_o - lo_o, 1.0)
    gap = np.maximum(np.maximum(lo_s - lo_o, hi_o - hi_s), 0.0)
    return float((gap / extent).max())


#: Crowded: fewer than this fraction of an image's usable stars pass the crowding filter.
CROWDED_KEPT = 0.5
#: The adapted crowding filter is this percentile of the nearest-neighbour distances (it
#: keeps about three stars in four), and never under :data:`MIN_CROWDED_SEP` px (a 1 px
#: match tolerance: centroids of blends differ by a few tenths of a pixel).
CROWDED_PERCENTILE, MIN_CROWDED_SEP = 25.0, 2.0


def crowded_sep(src_cat: Catalog, tmpl_cat: Catalog, fkw: dict) -> float | None:
    """A crowding filter for a field the default one empties, or None (not crowded).

    Where fewer than :data:`CROWDED_KEPT` of an image's usable stars (the ``fkw``
    filter without its crowding part) keep ``fkw["min_sep"]`` px to their nearest
    detection, the field is crowded; the filter returned is the
    :data:`CROWDED_PERCENTILE` percentile of the nearest-neighbour distances of the more
    crowded image (at least :data:`MIN_CROWDED_SEP`), matched with half of it as the
    tolerance, so that a star and its match still cannot be confused.

    Parameters
    ----------
    src_cat, tmpl_cat : Catalog
        The detections.
    fkw : dict
        ``filter_catalog``'s arguments of the frame (``min_sep`` the default filter).

    Returns
    -------
    float or None
    """
    min_sep = float(fkw["min_sep"] or 0.0)
    seps = []
    for cat in (src_cat, tmpl_cat):
        usable = filter_catalog(cat, **{**fkw, "min_sep": 0.0, "n_det": None})
        if len(usable) < 8:
            return None
        nn = cKDTree(cat.xy).query(usable.xy, k=2)[0][:, 1]
        if np.mean(nn >= min_sep) < CROWDED_KEPT:
            seps.append(float(np.percentile(nn, CROWDED_PERCENTILE)))
    if not seps:
        return None
    sep = max(min(seps), MIN_CROWDED_SEP)
    return sep if sep < min_sep else None


def _usable(cat: Catalog, fkw: dict) -> Catalog:
    """``filter_catalog(cat, **fkw)``, reusing what automatic depth already filtered."""
    done = getattr(cat, "filtered", None)
    if done is not None and done[0] == (fkw["min_fwhm"], fkw["bad_flag_bits"], fkw["min_sep"]):
        return keep_brightest(done[1], fkw["n_det"])
    return filter_catalog(cat, **fkw)


def _too_few(name: str, n: int, raw: Catalog) -> None:
    """TooFewStars for an image with ``n`` usable stars, saying how deep it was detected."""
    thresh = getattr(raw, "thresh", None)
    steps = getattr(raw, "steps", ())
    at = "" if thresh is None else f" at {thresh:g} sigma"
    hint = "lower sep_thresh, min_fwhm or min_sep"
    if len(steps) > 1:
        hint = (f"no more usable stars down to {min(t for t, _ in steps):g} sigma (automatic "
                f"depth): check the image, or {hint}")
    raise TooFewStars(f"only {n} usable stars in the {name} ({len(raw)} detected{at})",
                      hint=hint)


def check_overlap(
    t: Transform, src_shape: tuple[int, int] | None, tmpl_shape: tuple[int, int] | None
) -> None:
    if src_shape is None or tmpl_shape is None:
        return
    ny, nx = tmpl_shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 64), np.linspace(0, nx - 1, 64), indexing="ij")
    sx, sy = t(gx, gy)
    inside = (sx >= -0.5) & (sx <= src_shape[1] - 0.5) & (sy >= -0.5) & (sy <= src_shape[0] - 0.5)
    if not inside.any():
        raise NoOverlap(
            "the fitted mapping puts no part of the source on the template grid",
            hint="the match is probably wrong: check that the images show the same field",
        )


