"""A WCS prior for matching: the template -> source mapping the two WCSs predict.

When both images carry a celestial WCS, a template pixel goes to the sky through the
template's WCS and back to a source pixel through the source's (SIP or TPV
distortions included), which predicts where each template star lies in the source.
As SCAMP does (Bertin 2006, ASP Conf. Ser. 351, 112), the prediction is trusted only
to within the WCS's positional uncertainty: the offsets between predicted template
stars and source stars closer than a search radius are voted into a 2-D histogram
(under a few small rotation and scale corrections), the peak is cross-matched and
fitted, and the result is verified as a quad candidate is
(:func:`gpualign.match.quad_match`): at least ``min_n_match`` matches, far more than
expected by chance at the star density of the predicted overlap. A prior that fails
says why, and the caller matches blind.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

from gpualign.backend import Backend
from gpualign.detect._catalog import Catalog
from gpualign.match._cross import affine_matrix, apply_matrix, cross_match, similarity_matrix
from gpualign.match._neighbours import NeighbourIndex
from gpualign.match._quad_match import QuadSolution

if TYPE_CHECKING:  # astropy.wcs and scipy.stats load when a WCS is there to use
    from astropy.wcs import WCS

log = logging.getLogger("gpualign")

__all__ = ["WcsPrior", "PriorMatch", "celestial_wcs", "wcs_prior_match", "PRIOR_CODES"]

#: What ``Solution.prior`` records: the WCS prior gave the initial mapping; blind quad
#: matching did (no prior tried: no WCS, or ``wcs_prior="off"``); blind quad matching
#: after the prior failed verification.
PRIOR_CODES = ("wcs", "blind", "blind-fallback")
#: Search radius (arcsec): SCAMP's default POSITION_MAXERR (1 arcmin).
SEARCH_RADIUS_ARCSEC = 60.0
#: ... but at most this fraction of the source's smaller side (a WCS off by more is not
#: an uncertainty; blind matching takes over).
SEARCH_RADIUS_MAX_FRACTION = 0.25
#: Rotation (deg) and scale (fraction) errors of the WCS the vote allows.
MAX_ROTATION_DEG = 1.0
MAX_SCALE_ERROR = 0.01
#: Most rotation or scale steps tried (each odd count centred on no correction).
MAX_STEPS = 9
#: Brightest stars of each list that vote.
N_VOTE = 300
#: In the overlap, the richer list is cut to its brightest ``DENSITY_RATIO`` times the
#: poorer's count (a deep fine template against a coarse source: the faint template
#: stars have no counterpart and would only add chance matches).
DENSITY_RATIO = 2.0
#: Chance that some offset of the search gives a verified match by chance, at most.
LOOK_ELSEWHERE = 1e-3
#: Stars with a neighbour closer than this many match tolerances do not match.
CROWDING = 2.5
#: Offset candidates (vote peaks) verified at most.
N_PEAKS = 3


def celestial_wcs(header: Any) -> WCS | None:
    """The celestial 2-D WCS of a header (or WCS), None when it has none.

    Parameters
    ----------
    header : astropy Header, WCS or None

    Returns
    -------
    WCS or None
        A WCS whose two pixel axes are longitude and latitude (e.g. ``RA---TAN``,
        ``DEC--TPV``, with SIP or TPV distortion), or None.
    """
    if header is None:
        return None
    wcs_module = sys.modules.get("astropy.wcs")  # a WCS object means it is loaded
    if wcs_module is not None and isinstance(header, wcs_module.WCS):
        w = header
    elif isinstance(header, fits.Header):
        if not any(str(header.get(f"CTYPE{k}", "")).strip() for k in (1, 2)):
            return None
        w = None
    else:
        return None
    try:
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITSFixedWarning and friends: the fix-ups
            if w is None:
                w = WCS(header, naxis=2)
            if not w.has_celestial or w.naxis != 2 or w.celestial.naxis != 2:
                return None
            scales = proj_plane_pixel_scales(w.celestial)
    except (ValueError, KeyError, TypeError, MemoryError) as exc:
        log.debug("no usable WCS: %s", exc)
        return None
    except Exception as exc:  # wcslib's own errors (astropy.wcs._wcs.*Error)
        log.debug("no usable WCS: %s", exc)
        return None
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        return None
    return w.celestial


def _pixel_scale_arcsec(w: WCS) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.sqrt(np.prod(proj_plane_pixel_scales(w))) * 3600.0)


def _world_to_pixel(w: WCS, sky: Any) -> np.ndarray:
    """Pixel positions of sky coordinates; NaN where the inversion does not converge."""
    from astropy.wcs import NoConvergence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            x, y = w.world_to_pixel(sky)
            return np.column_stack([x, y]).astype(np.float64)
        except NoConvergence as exc:  # distortions far outside the image
            best = np.array(exc.best_solution, dtype=np.float64).reshape(-1, 2)
            if exc.divergent is not None:
                best[exc.divergent] = np.nan
            return best


def _pixel_to_world(w: WCS, xy: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return w.pixel_to_world(xy[:, 0], xy[:, 1])


@dataclass(frozen=True)
class WcsPrior:
    """The template -> source pixel mapping predicted by the two images' WCSs.

    Attributes
    ----------
    template_wcs, source_wcs : WCS
        Celestial WCSs (0-based pixels as the catalogues').
    search_radius_arcsec : float
        How far the prediction may be off (the WCS's positional uncertainty).
    """

    template_wcs: WCS
    source_wcs: WCS
    search_radius_arcsec: float = SEARCH_RADIUS_ARCSEC

    @classmethod
    def from_headers(cls, template_header: Any, source_header: Any) -> WcsPrior | None:
        """The prior of two headers (or WCSs); None unless both have a celestial WCS."""
        tw, sw = celestial_wcs(template_header), celestial_wcs(source_header)
        if tw is None or sw is None:
            return None
        return cls(tw, sw)

    @property
    def source_scale(self) -> float:
        """Source pixel size (arcsec)."""
        return _pixel_scale_arcsec(self.source_wcs)

    @property
    def template_scale(self) -> float:
        """Template pixel size (arcsec)."""
        return _pixel_scale_arcsec(self.template_wcs)

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Template pixels -> predicted source pixels, shape (N, 2) (NaN: not mapped)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(xy) == 0:
            return np.zeros((0, 2))
        return _world_to_pixel(self.source_wcs, _pixel_to_world(self.template_wcs, xy))

    def to_template(self, xy: np.ndarray) -> np.ndarray:
        """Source pixels -> predicted template pixels, shape (N, 2) (NaN: not mapped)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(xy) == 0:
            return np.zeros((0, 2))
        return _world_to_pixel(self.template_wcs, _pixel_to_world(self.source_wcs, xy))


@dataclass
class PriorMatch:
    """The outcome of :func:`wcs_prior_match`.

    Attributes
    ----------
    solution : QuadSolution or None
        The verified initial mapping (template -> source affine), None when the prior
        failed.
    reason : str
        Why it failed, or how it was verified (one line, for the log).
    tol : float
        Cross-match tolerance (source px) it was verified at.
    rms : float
        Residual RMS (source px) of the matched pairs about the initial affine.
    """

    solution: QuadSolution | None
    reason: str
    tol: float = np.nan
    rms: float = np.nan


def _inside(xy: np.ndarray, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    ny, nx = shape
    with np.errstate(invalid="ignore"):
        return ((xy[:, 0] > -0.5 - margin) & (xy[:, 0] < nx - 0.5 + margin)
                & (xy[:, 1] > -0.5 - margin) & (xy[:, 1] < ny - 0.5 + margin))


def _overlap(prior: WcsPrior, tmpl_shape: tuple[int, int], src_shape: tuple[int, int]
             ) -> tuple[float, np.ndarray]:
    """Area (source px^2) and centre (source px) of the predicted overlap."""
    ny, nx = tmpl_shape
    u = np.linspace(-0.5, 1.0, 33)[:-1]
    edge = np.concatenate([np.column_stack([u * nx, np.full_like(u, -0.5)]),
                           np.column_stack([np.full_like(u, nx - 0.5), u * ny]),
                           np.column_stack([(1 - u) * nx - 1, np.full_like(u, ny - 0.5)]),
                           np.column_stack([np.full_like(u, -0.5), (1 - u) * ny - 1])])
    foot = prior.to_source(edge)
    foot = foot[np.all(np.isfinite(foot), axis=1)]
    if len(foot) < 3:
        return 0.0, np.zeros(2)
    sny, snx = src_shape
    lo = np.maximum(foot.min(axis=0), -0.5)
    hi = np.minimum(foot.max(axis=0), [snx - 0.5, sny - 0.5])
    if np.any(hi <= lo):
        return 0.0, np.zeros(2)
    n = 96
    gx, gy = np.meshgrid(lo[0] + (np.arange(n) + 0.5) * (hi[0] - lo[0]) / n,
                         lo[1] + (np.arange(n) + 0.5) * (hi[1] - lo[1]) / n)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    inside = _inside(prior.to_template(grid), tmpl_shape)
    if not inside.any():
        return 0.0, np.zeros(2)
    area = float(inside.mean() * np.prod(hi - lo))
    return area, grid[inside].mean(axis=0)


def _isolated(xy: np.ndarray, min_sep: float) -> np.ndarray:
    """Which points have no other point closer than ``min_sep``."""
    if len(xy) < 2:
        return np.ones(len(xy), bool)
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1] >= min_sep


def _rotation_scale(angle: float, scale: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s], [s, c]])


def _steps(limit: float, radius: float, bin_px: float) -> np.ndarray:
    """Odd number of corrections in ``[-limit, limit]``, spaced by about one bin at ``radius``."""
    half = min((MAX_STEPS - 1) // 2, math.ceil(limit * radius / bin_px))
    return np.linspace(-limit, limit, 2 * half + 1) if half > 0 else np.zeros(1)


def _vote(pred: np.ndarray, src_xy: np.ndarray, centre: np.ndarray, radius: float,
          bin_px: float, reach: float) -> list[tuple[int, float, float, np.ndarray]]:
    """Offset vote peaks: (votes, rotation, scale, offset), strongest first."""
    rots = _steps(np.deg2rad(MAX_ROTATION_DEG), reach, bin_px)
    scales = 1.0 + _steps(MAX_SCALE_ERROR, reach, bin_px)
    grow = reach * (np.deg2rad(MAX_ROTATION_DEG) + MAX_SCALE_ERROR)
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(src_xy), radius + grow,
                                                 output_type="ndarray")
    if len(pairs) == 0:
        return []
    i, j = pairs["i"], pairs["j"]
    rel = pred[i] - centre
    nbin = int(np.ceil(2 * radius / bin_px)) + 1
    peaks = []
    for rot in rots:
        for scale in scales:
            d = src_xy[j] - centre - rel @ _rotation_scale(rot, scale).T
            ok = np.all(np.abs(d) <= radius, axis=1)
            if not ok.any():
                continue
            dd = d[ok]
            k = np.minimum(((dd + radius) / bin_px).astype(np.int64), nbin - 1)
            hist = np.bincount(k[:, 1] * nbin + k[:, 0], minlength=nbin * nbin)
            hist = hist.reshape(nbin, nbin)
            box = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
            py, px = np.unravel_index(int(np.argmax(box)), box.shape)
            centre_d = -radius + (np.array([px, py]) + 1.0) * bin_px
            near = np.all(np.abs(dd - centre_d) <= bin_px, axis=1)
            offset = np.median(dd[near], axis=0) if near.any() else centre_d
            peaks.append((int(box[py, px]), float(rot), float(scale), offset))
    # Most votes first; among equals, the smallest correction.
    peaks.sort(key=lambda p: (-p[0], abs(p[1]) / max(rots.max(), 1e-12)
                              + abs(p[2] - 1.0) / MAX_SCALE_ERROR))
    distinct: list[tuple[int, float, float, np.ndarray]] = []
    for p in peaks:
        if all(np.hypot(*(p[3] - q[3])) > 2 * bin_px for q in distinct):
            distinct.append(p)
        if len(distinct) == N_PEAKS:
            break
    return distinct


def _verify(base: np.ndarray, src_xy: np.ndarray, index: NeighbourIndex,
            peak: tuple[int, float, float, np.ndarray], centre: np.ndarray,
            bin_px: float, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-match one vote peak, refitting the correction of the WCS prediction.

    Returns the matched indices and the corrected prediction of every template star.
    The correction is an affine map of predicted onto observed source positions, so
    the WCS's own distortion is kept.
    """
    _, rot, scale, offset = peak
    pred = centre + offset + (base - centre) @ _rotation_scale(rot, scale).T
    i = j = np.zeros(0, np.int64)
    for step_tol in (max(bin_px, tol), tol, tol, tol):
        i, j, _ = cross_match(pred, src_xy, step_tol, index)
        if len(i) >= 6:
            pred = apply_matrix(affine_matrix(base[i], src_xy[j]), base)
        elif len(i) >= 2:
            pred = apply_matrix(similarity_matrix(base[i], src_xy[j]), base)
        else:
            break
    i, j, _ = cross_match(pred, src_xy, tol, index)
    return i, j, pred


def wcs_prior_match(
    src: Catalog, tmpl: Catalog, prior: WcsPrior, *, max_match_dist: float = 5.0,
    min_n_match: int = 6, allow_mirror: bool = True, backend: Backend | None = None,
) -> PriorMatch:
    """The initial template -> source mapping from the WCS prior, verified.

    Parameters
    ----------
    src, tmpl : Catalog
        Filtered catalogues (brightest first) with their image shapes, without a
        crowding filter: stars closer than ``CROWDING`` match tolerances to another
        are left out here, at the tolerance the overlap's density calls for.
    prior : WcsPrior
        The two WCSs.
    max_match_dist : float
        Largest cross-match tolerance (source px).
    min_n_match : int
        Fewest matched stars accepted.
    allow_mirror : bool
        Whether a prediction with a mirror flip is acceptable.
    backend : Backend, optional
        Where the cross-match neighbour queries run.

    Returns
    -------
    PriorMatch
        With a :class:`~gpualign.match.QuadSolution` (``n_candidates``: vote peaks
        verified) when verified, else None and the reason.
    """
    if src.shape is None or tmpl.shape is None:
        return PriorMatch(None, "the image shapes are unknown")
    src_shape, tmpl_shape = tuple(src.shape), tuple(tmpl.shape)
    s_scale, t_scale = prior.source_scale, prior.template_scale
    radius = min(prior.search_radius_arcsec / s_scale,
                 SEARCH_RADIUS_MAX_FRACTION * min(src_shape))
    radius = max(radius, 2.0 * max_match_dist)
    area, centre = _overlap(prior, tmpl_shape, src_shape)
    if area <= 0:
        return PriorMatch(None, "the WCSs put the images on different parts of the sky")
    c = np.array([(tmpl_shape[1] - 1) / 2.0, (tmpl_shape[0] - 1) / 2.0])
    corner = c + np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    local = affine_matrix(corner, prior.to_source(corner))
    if np.linalg.det(local[:, :2]) < 0 and not allow_mirror:
        return PriorMatch(None, "the WCSs predict a mirror image (allow_mirror is off)")
    pred_all = prior.to_source(tmpl.xy)
    t_idx = np.flatnonzero(_inside(pred_all, src_shape, radius))
    back = prior.to_template(src.xy)
    s_idx = np.flatnonzero(_inside(back, tmpl_shape, radius * s_scale / t_scale))
    n_least = min(len(t_idx), len(s_idx))
    if n_least < min_n_match:
        return PriorMatch(None, f"only {n_least} stars in the overlap the WCSs predict")
    keep = int(np.ceil(DENSITY_RATIO * n_least))
    t_idx, s_idx = t_idx[:keep], s_idx[:keep]  # brightest first
    in_overlap = int(_inside(back[s_idx], tmpl_shape).sum())
    density = max(in_overlap, 1) / area
    tol = float(min(max_match_dist, max(1.0, np.sqrt(0.02 / (np.pi * density)))))
    # Crowding at this tolerance: a star with a neighbour among the stars that take
    # part closer than CROWDING * tol could be confused with it.
    s_idx = s_idx[_isolated(src.xy[s_idx], CROWDING * tol)]
    t_idx = t_idx[_isolated(pred_all[t_idx], CROWDING * tol)]
    if min(len(t_idx), len(s_idx)) < min_n_match:
        return PriorMatch(None, f"only {min(len(t_idx), len(s_idx))} isolated stars in the "
                          "overlap the WCSs predict")
    base, s_xy = pred_all[t_idx], src.xy[s_idx]
    bin_px = tol
    reach = float(np.max(np.hypot(*(base - centre).T)))
    peaks = _vote(base[:N_VOTE], s_xy[:N_VOTE], centre, radius, bin_px, reach)
    if not peaks:
        return PriorMatch(None, f"no star pairs within the {radius:.3g} px search radius")
    n_cells = (len(_steps(np.deg2rad(MAX_ROTATION_DEG), reach, bin_px))
               * len(_steps(MAX_SCALE_ERROR, reach, bin_px)) * (2 * radius / tol) ** 2)
    from scipy.stats import poisson

    index = NeighbourIndex(s_xy, backend)
    best: tuple[int, float, np.ndarray, np.ndarray] | None = None
    for peak in peaks:
        i, j, pred = _verify(base, s_xy, index, peak, centre, bin_px, tol)
        expected = float(_inside(pred, src_shape).sum() * density * np.pi * tol**2)
        n = len(i)
        significant = (n >= min_n_match and n >= expected + 6.0 * np.sqrt(expected) + 3
                       and poisson.sf(n - 1, expected) * n_cells < LOOK_ELSEWHERE)
        log.debug("WCS prior peak: %d votes, rotation %.3g deg, scale %.5f, offset (%.2f, "
                  "%.2f) px: %d matches (%.1f by chance)%s", peak[0], np.rad2deg(peak[1]),
                  peak[2], *peak[3], n, expected, "" if significant else ", rejected")
        if significant and (best is None or n > best[0]):
            best = (n, expected, t_idx[i], s_idx[j])
    if best is None:
        return PriorMatch(None, f"no offset within {radius * s_scale:.3g} arcsec matched "
                          f"{min_n_match} stars beyond chance", tol)
    n, expected, ti, si = best
    matrix = affine_matrix(tmpl.xy[ti], src.xy[si])
    mirrored = bool(np.linalg.det(matrix[:, :2]) < 0)
    if mirrored and not allow_mirror:
        return PriorMatch(None, "the match is a mirror image (allow_mirror is off)", tol)
    solution = QuadSolution(matrix, n, expected, mirrored, len(peaks))
    resid = apply_matrix(matrix, tmpl.xy[ti]) - src.xy[si]
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    return PriorMatch(solution, f"{n} stars matched ({expected:.1f} by chance) within "
                      f"{tol:.3g} px, rms {rms:.3g} px", tol, rms)
