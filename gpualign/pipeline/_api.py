"""detect -> quads -> match -> fit -> warp, returning an :class:`AlignResult`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign.backend import Backend, get_backend
from gpualign.detect._catalog import Catalog, as_catalog
from gpualign.detect._sep import detect, detect_many, filter_catalog
from gpualign._errors import InputError, NoOverlap, TooFewStars
from gpualign.fit._robust import choose_degree, robust_fit
from gpualign.products._canvas import grow_canvas
from gpualign.io._read import load_image
from gpualign.match._quad_match import cross_match, quad_match
from gpualign.fit._linear import check_model, robust_fit_model, select_model
from gpualign.match._neighbours import NeighbourIndex
from gpualign.products._finish import finish_result
from gpualign.transform._transform import Transform
from gpualign.warp._resample import warp

log = logging.getLogger("gpualign")

__all__ = ["AlignResult", "Solution", "find_transform", "apply_transform", "align"]


@dataclass
class Solution:
    """A found mapping and the evidence for it.

    Attributes
    ----------
    transform : Transform
        Template pixel -> source pixel (what the warp uses).
    inverse : Transform
        Source pixel -> template pixel, fitted on the same pairs.
    template_xy, source_xy : ndarray, shape (N, 2)
        The matched star pairs used in the final fit (inliers).
    stats : dict
        Fit statistics (see :func:`fit_statistics`).
    degree : int
        Degree of the distortion polynomial (1 = affine only).
    mirrored : bool
        Whether the source is a mirror image of the template.
    cv_scores : dict
        Held-out RMS (source px) per degree tried, from the final iteration.
    source_shape, template_shape : tuple of int or None
    timings : dict
        Seconds per stage.
    """

    transform: Transform
    inverse: Transform
    template_xy: np.ndarray
    source_xy: np.ndarray
    stats: dict[str, float]
    degree: int
    mirrored: bool
    cv_scores: dict[int, float]
    source_shape: tuple[int, int] | None
    template_shape: tuple[int, int] | None
    timings: dict[str, float] = field(default_factory=dict)
    model: str = "affine"
    model_scores: dict[str, float] = field(default_factory=dict)

    def save(self, path: Any) -> None:
        """Write this solution to a JSON file (exact round trip, see :meth:`load`)."""
        from gpualign.products._solution_io import save_solution

        save_solution(self, path)

    @classmethod
    def load(cls, path: Any) -> Solution:
        """Read a solution written by :meth:`save` (or a bare transform file)."""
        from gpualign.products._solution_io import load_solution

        return load_solution(path)


@dataclass
class AlignResult:
    """The source resampled onto the template grid, with the fit that did it.

    Attributes
    ----------
    data : ndarray
        Aligned image on the template grid (float32 by default).
    footprint : ndarray of bool
        Pixels that came from valid source data.
    mask : ndarray or None
        The source mask resampled (OR of contributing pixels' bits).
    solution : Solution
        Transform, matched pairs and statistics.
    backend : str
        Name of the backend the warp ran on.
    weight : ndarray or None
        The source weight/variance map resampled (:mod:`gpualign._variance`), of
        ``weight_type``.
    weight_type : str or None
        ``"variance"``, ``"inverse_variance"`` or ``"stddev"``.
    wcs : astropy.wcs.WCS or None
        WCS of the output: the template's, or the source's composed with the mapping.
    header : astropy.io.fits.Header or None
        Template header cards with the output WCS and ``GA_*`` keywords.
    offset : tuple of int
        ``(ox, oy)``: output position of the template's pixel (0, 0) (non-zero with
        ``preserve_footprints``).
    meta : dict
        The source's NDData meta.
    unit : object
        The source's NDData unit.
    conserve_flux : bool
        Whether the data were multiplied by ``|det J|``.
    """

    data: np.ndarray
    footprint: np.ndarray
    mask: np.ndarray | None
    solution: Solution
    backend: str
    weight: np.ndarray | None = None
    weight_type: str | None = None
    wcs: Any = None
    header: Any = None
    offset: tuple[int, int] = (0, 0)
    meta: Any = None
    unit: Any = None
    conserve_flux: bool = False

    def to_nddata(self) -> Any:
        """As astropy NDData (mask, VarianceUncertainty, WCS, meta carried)."""
        from gpualign.products._finish import to_nddata

        return to_nddata(self)

    def to_ccddata(self) -> Any:
        """As astropy CCDData (unit ``adu`` when the source had none)."""
        from astropy.nddata import CCDData

        from gpualign.products._finish import to_nddata

        return to_nddata(self, CCDData)

    @property
    def transform(self) -> Transform:
        """Template pixel -> source pixel mapping."""
        return self.solution.transform

    @property
    def stats(self) -> dict[str, float]:
        """Fit statistics."""
        return self.solution.stats


def fit_statistics(inverse: Transform, template_xy: np.ndarray, source_xy: np.ndarray) -> dict:
    """Residuals of the matched pairs in template pixels (as spalipy's log_transform_stats)."""
    r = inverse.map_points(source_xy) - template_xy
    stats = {"n_match": int(len(r))}
    for k, axis in enumerate("xy"):
        stats[f"{axis}_mean"] = float(np.mean(r[:, k])) if len(r) else np.nan
        stats[f"{axis}_median"] = float(np.median(r[:, k])) if len(r) else np.nan
        stats[f"{axis}_std"] = float(np.std(r[:, k])) if len(r) else np.nan
    stats["rms"] = float(np.sqrt(np.mean(np.sum(r**2, axis=1)))) if len(r) else np.nan
    return stats


def _catalog_for(
    image: Any, det: Any, ext: Any, name: str, sep_thresh: float, flux_col: str | None
) -> tuple[Catalog, np.ndarray | None, Any, np.ndarray | None]:
    """Catalogue (given or detected), the image data (if any), its header and mask."""
    data = header = mask = None
    if image is not None:
        data, header, mask = load_image(image, ext, name=name)
    if det is not None:
        cat = as_catalog(det, flux_col=flux_col)
        if data is not None and cat.shape is None:
            cat = Catalog(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, data.shape)
    elif data is not None:
        cat = detect(data, sep_thresh=sep_thresh, mask=mask)
    else:
        raise InputError(f"no {name} given", hint=f"pass a {name} image or a {name} catalogue")
    return cat, data, header, mask


def _norm_for(tmpl: Catalog) -> tuple[float, float, float, float]:
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
    norm = _norm_for(tmpl)
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


def find_transform(
    source: Any,
    template: Any,
    *,
    source_det: Any = None,
    template_det: Any = None,
    source_ext: int | str | None = None,
    template_ext: int | str | None = None,
    flux_col: str | None = None,
    sep_thresh: float = 5.0,
    min_fwhm: float = 1.0,
    bad_flag_bits: int = 0,
    min_sep: float | None = None,
    n_det: float | int | None = None,
    n_quad_det: int = 20,
    min_quad_sep: float = 50.0,
    max_quad_hash_dist: float = 0.01,
    max_quad_cand: int = 50,
    patience_quad_cand: int = 5,
    quad_edge_buffer: float = 10.0,
    sub_tile: int = 2,
    max_match_dist: float = 5.0,
    min_n_match: int = 6,
    spline_order: int | None = None,
    allow_mirror: bool = True,
    transform: str = "auto",
    backend: str | Backend = "auto",
) -> Solution:
    """Find the mapping between a source and a template from their stars.

    Parameters
    ----------
    source, template : ndarray, NDData, masked array, FITS path, or None
        Images; either may be None when its catalogue is given.
    source_det, template_det : astropy Table, Catalog or SExtractor file, optional
        User detections instead of running sep.
    source_ext, template_ext : int or str, optional
        FITS extension to read.
    flux_col : str, optional
        Flux column of user catalogues (e.g. ``FLUX_AUTO``).
    sep_thresh : float
        Detection threshold (sigma above background).
    min_fwhm : float
        Detections narrower than this (pixels) are dropped (hot pixels).
    bad_flag_bits : int
        Detections with any of these flag bits are dropped.
    min_sep : float, optional
        Crowding filter: drop detections with a neighbour closer than this
        (default ``2 * max_match_dist``; 0 disables).
    n_det : int or float, optional
        Number (or fraction, < 1) of the brightest detections to use.
    n_quad_det, min_quad_sep, max_quad_hash_dist, max_quad_cand, patience_quad_cand,
    quad_edge_buffer, sub_tile :
        Quad matching dials (see :func:`gpualign._match.quad_match`).
    max_match_dist : float
        Cross-match tolerance in pixels.
    min_n_match : int
        Fewest matched stars accepted.
    spline_order : int, optional
        Degree of the distortion surfaces; 0 = affine only; None (default) chooses
        it by cross-validation on held-out matches.
    allow_mirror : bool
        Try a mirror-image source too.
    transform : {"auto", "similarity", "affine"}
        Linear model under the distortion surfaces: rotation + one scale + shift, or
        the full affine (shear, anisotropic scale); ``"auto"`` keeps the similarity
        unless held-out stars are predicted significantly better by the affine
        (:func:`gpualign._models.choose_model`).
    backend : {"auto", "numpy", "cupy"} or Backend
        Where the neighbour queries of the matching run.

    Returns
    -------
    Solution
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    src_cat, _, _, _ = _catalog_for(source, source_det, source_ext, "source", sep_thresh, flux_col)
    tmpl_cat, _, _, _ = _catalog_for(
        template, template_det, template_ext, "template", sep_thresh, flux_col
    )
    timings["detect"] = time.perf_counter() - t0
    return solve(
        src_cat, tmpl_cat, timings=timings, min_fwhm=min_fwhm, bad_flag_bits=bad_flag_bits,
        min_sep=min_sep, n_det=n_det, n_quad_det=n_quad_det, min_quad_sep=min_quad_sep,
        max_quad_hash_dist=max_quad_hash_dist, max_quad_cand=max_quad_cand,
        patience_quad_cand=patience_quad_cand, quad_edge_buffer=quad_edge_buffer,
        sub_tile=sub_tile, max_match_dist=max_match_dist, min_n_match=min_n_match,
        spline_order=spline_order, allow_mirror=allow_mirror, transform=transform,
        backend=backend,
    )


def solve(
    src_cat: Catalog,
    tmpl_cat: Catalog,
    *,
    timings: dict[str, float] | None = None,
    min_fwhm: float = 1.0,
    bad_flag_bits: int = 0,
    min_sep: float | None = None,
    n_det: float | int | None = None,
    n_quad_det: int = 20,
    min_quad_sep: float = 50.0,
    max_quad_hash_dist: float = 0.01,
    max_quad_cand: int = 50,
    patience_quad_cand: int = 5,
    quad_edge_buffer: float = 10.0,
    sub_tile: int = 2,
    max_match_dist: float = 5.0,
    min_n_match: int = 6,
    spline_order: int | None = None,
    allow_mirror: bool = True,
    transform: str = "auto",
    backend: str | Backend | None = None,
) -> Solution:
    """Match and fit two catalogues (the part of :func:`find_transform` after detection).

    Neighbour queries run on ``backend`` (KD-tree on NumPy, chunked distance
    matrices on a GPU); the small fits stay on the host.
    """
    _check_solve_args(dict(
        min_fwhm=min_fwhm, min_sep=min_sep, n_det=n_det, n_quad_det=n_quad_det,
        min_quad_sep=min_quad_sep, max_quad_hash_dist=max_quad_hash_dist,
        max_quad_cand=max_quad_cand, patience_quad_cand=patience_quad_cand,
        quad_edge_buffer=quad_edge_buffer, sub_tile=sub_tile, max_match_dist=max_match_dist,
        min_n_match=min_n_match, spline_order=spline_order))
    transform = check_model(transform)
    be = None if backend is None else get_backend(backend)
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    min_sep = 2.0 * max_match_dist if min_sep is None else min_sep
    fkw = dict(min_fwhm=min_fwhm, bad_flag_bits=bad_flag_bits, min_sep=min_sep, n_det=n_det)
    src = filter_catalog(src_cat, **fkw)
    tmpl = filter_catalog(tmpl_cat, **fkw)
    for name, cat, raw in (("source", src, src_cat), ("template", tmpl, tmpl_cat)):
        if len(cat) < 4:
            raise TooFewStars(
                f"only {len(cat)} usable stars in the {name} ({len(raw)} detected)",
                hint="lower sep_thresh, min_fwhm or min_sep",
            )
    quad_src = filter_catalog(src, edge_buffer=quad_edge_buffer)
    quad_tmpl = filter_catalog(tmpl, edge_buffer=quad_edge_buffer)
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
    qs = quad_match(
        quad_src, quad_tmpl, n_quad_det=n_quad_det, min_quad_sep=min_quad_sep,
        max_quad_hash_dist=max_quad_hash_dist, max_quad_cand=max_quad_cand,
        patience_quad_cand=patience_quad_cand, sub_tile=sub_tile,
        max_match_dist=max_match_dist, min_n_match=min_n_match, allow_mirror=allow_mirror,
        verify=(src, tmpl), backend=be,
    )
    timings["match"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rkw = dict(max_match_dist=max_match_dist, spline_order=spline_order,
               min_n_match=min_n_match, backend=be)
    t, inl_t, inl_s, inl_sig, degree, scores, tol = _refine(src, tmpl, qs.matrix, **rkw)
    # Once the mapping is known to ~tol, stars with a neighbour beyond 2.5 tol cannot
    # be confused: a last pass with that looser crowding filter adds the stars the
    # matching stage had to leave out (crowded fields).
    final_sep = 2.5 * tol
    if min_sep > final_sep:
        fkw["min_sep"] = final_sep
        more = _refine(filter_catalog(src_cat, **fkw), filter_catalog(tmpl_cat, **fkw), t,
                       tol=tol, **rkw)
        if len(more[1]) > len(inl_t):
            t, inl_t, inl_s, inl_sig, degree, scores, tol = more
    t, model, model_scores = select_model(transform, t, inl_t, inl_s, inl_sig, degree,
                                          _norm_for(tmpl))
    inv_norm = _norm_for(src)
    inverse, _ = robust_fit_model(model, inl_s, inl_t, inl_sig, degree, inv_norm,
                                  mirrored=qs.mirrored, clip_sigma=np.inf)
    _check_overlap(t, src.shape, tmpl.shape)
    timings["fit"] = time.perf_counter() - t1
    stats = fit_statistics(inverse, inl_t, inl_s)
    return Solution(
        t, inverse, inl_t, inl_s, stats, degree, qs.mirrored, scores,
        src_cat.shape, tmpl_cat.shape, timings, model, model_scores,
    )


def _check_warp_args(
    interp_order: Any, output_shape: Any, mask: Any, image_shape: tuple[int, ...]
) -> tuple[int, int]:
    """Reject unusable warp options with an InputError; return the output shape."""
    if isinstance(interp_order, bool) or not isinstance(interp_order, (int, np.integer)) \
            or not 0 <= int(interp_order) <= 5:
        raise InputError(f"interp_order must be an integer 0-5, got {interp_order!r}",
                         hint="0 nearest, 1 linear, 3 cubic spline (default), 5 quintic")
    try:
        shape = tuple(int(v) for v in output_shape)
        ok = len(shape) == 2 and min(shape) > 0 and all(
            float(v) == int(v) for v in output_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"output_shape must be two positive integers (ny, nx), "
                         f"got {output_shape!r}")
    if mask is not None and np.shape(mask) != tuple(image_shape):
        raise InputError(f"the mask's shape {np.shape(mask)} differs from the image's "
                         f"{tuple(image_shape)}", hint="give a mask of the source's shape")
    return shape[0], shape[1]


_POSITIVE = ("min_quad_sep", "max_quad_hash_dist", "max_match_dist")
_AT_LEAST_ONE = ("max_quad_cand", "patience_quad_cand", "sub_tile")


def _check_solve_args(opts: dict[str, Any]) -> None:
    """Reject out-of-range matching and detection dials with an InputError."""
    for name in _POSITIVE:
        if not opts[name] > 0:
            raise InputError(f"{name} must be > 0, got {opts[name]!r}")
    for name in _AT_LEAST_ONE:
        if not opts[name] >= 1:
            raise InputError(f"{name} must be >= 1, got {opts[name]!r}")
    if not opts["n_quad_det"] >= 4:
        raise InputError(f"n_quad_det must be >= 4 (a quad has 4 stars), "
                         f"got {opts['n_quad_det']!r}")
    if not opts["min_n_match"] >= 3:
        raise InputError(f"min_n_match must be >= 3, got {opts['min_n_match']!r}")
    for name in ("min_fwhm", "quad_edge_buffer"):
        if not opts[name] >= 0:
            raise InputError(f"{name} must be >= 0, got {opts[name]!r}")
    if opts["min_sep"] is not None and not opts["min_sep"] >= 0:
        raise InputError(f"min_sep must be >= 0, got {opts['min_sep']!r}")
    if opts["n_det"] is not None and not opts["n_det"] > 0:
        raise InputError(f"n_det must be a count >= 1 or a fraction in (0, 1), "
                         f"got {opts['n_det']!r}")
    order = opts["spline_order"]
    if order is not None and not (isinstance(order, (int, np.integer)) and 0 <= order <= 9):
        raise InputError(f"spline_order must be an integer 0-9 or None, got {order!r}",
                         hint="0 = affine only; None chooses the degree by cross-validation")


def _check_overlap(
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


def apply_transform(
    transform: Transform | Solution,
    image: Any,
    output_shape: tuple[int, int] | None = None,
    *,
    interp_order: int = 3,
    cval: float = np.nan,
    mask: np.ndarray | None = None,
    backend: str | Backend = "auto",
    ext: int | str | None = None,
    threads: int | None = None,
    dtype: Any = np.float32,
    source_weight: Any = None,
    weight_type: str = "variance",
    conserve_flux: bool = False,
    preserve_footprints: bool = False,
    template_header: Any = None,
) -> AlignResult:
    """Resample an image with a known mapping (no detection).

    Parameters
    ----------
    transform : Transform or Solution
        Template pixel -> source pixel mapping (e.g. from :func:`find_transform`).
    image : ndarray, NDData, masked array or FITS path
        The image to resample (same detector frame as the source it was fitted on).
    output_shape : tuple of int or None
        ``(ny, nx)`` of the template grid (None: the template shape recorded in a
        Solution).
    interp_order : int
        Spline order 0-5.
    cval : float
        Value outside the footprint.
    mask : ndarray, optional
        Bad-pixel mask or bitmask to resample alongside.
    backend : str or Backend
        ``"auto"``, ``"numpy"`` or ``"cupy"``.
    ext : int or str, optional
        FITS extension.
    threads : int, optional
        CPU threads.
    dtype : dtype
        Output data type.
    source_weight, weight_type, conserve_flux, preserve_footprints :
        As in :func:`align`.
    template_header : astropy Header or WCS, optional
        The template's header (its WCS becomes the output's); without one, an image
        with a WCS gets its WCS composed with the mapping.

    Returns
    -------
    AlignResult
    """
    be = get_backend(backend)
    if output_shape is None and isinstance(transform, Solution):
        output_shape = transform.template_shape
    if output_shape is None:
        raise InputError("output_shape is needed (the transform records no template shape)")
    if template_header is not None and not isinstance(template_header, fits.Header):
        template_header = template_header.to_header(relax=True)  # a WCS
    solution = transform if isinstance(transform, Solution) else None
    t = transform.transform if isinstance(transform, Solution) else transform
    data, header, own_mask = load_image(image, ext)
    mask = own_mask if mask is None else mask
    output_shape = _check_warp_args(interp_order, output_shape, mask, data.shape)
    src_shape = data.shape
    warp_t, out_shape, offset = t, tuple(output_shape), (0, 0)
    if preserve_footprints:
        warp_t, out_shape, offset = grow_canvas(t, src_shape, out_shape)
    res = warp(
        data, warp_t, out_shape, backend=be, order=interp_order, cval=cval, mask=mask,
        threads=threads, dtype=dtype, overwrite_input=True,  # load_image's private copy
    )
    if solution is None:
        solution = Solution(t, t, np.zeros((0, 2)), np.zeros((0, 2)), {}, t.degree,
                            bool(np.linalg.det(t.matrix[:, :2]) < 0), {}, src_shape,
                            tuple(output_shape))
    result = AlignResult(res.data, res.footprint, res.mask, solution, be.name)
    return finish_result(
        result, warp_t, order=interp_order, source=image, source_shape=src_shape,
        source_header=header, template_header=template_header, source_weight=source_weight,
        weight_type=weight_type, conserve_flux=conserve_flux, offset=offset)


def _find_transform_options() -> set[str]:
    """Keyword options :func:`align` passes on to :func:`find_transform`."""
    import inspect

    params = inspect.signature(find_transform).parameters
    return {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def align(
    source: Any,
    template: Any,
    *,
    output_shape: tuple[int, int] | None = None,
    interp_order: int = 3,
    cval: float = np.nan,
    source_mask: np.ndarray | None = None,
    backend: str | Backend = "auto",
    threads: int | None = None,
    dtype: Any = np.float32,
    source_weight: Any = None,
    weight_type: str = "variance",
    conserve_flux: bool = False,
    preserve_footprints: bool = False,
    **find_kwargs: Any,
) -> AlignResult:
    """Put ``source`` onto the pixel grid of ``template``, using stars as tie-points.

    Parameters
    ----------
    source : ndarray, NDData, masked array or FITS path
        The image to resample.
    template : ndarray, NDData, masked array, FITS path or None
        The reference grid; None if only ``template_det`` is given (then
        ``output_shape`` is required).
    output_shape : tuple of int, optional
        ``(ny, nx)`` of the output (default: the template's shape).
    interp_order : int
        Spline interpolation order, 0-5.
    cval : float
        Value of output pixels with no source data (NaN by default).
    source_mask : ndarray, optional
        Source bad-pixel mask or bitmask, resampled alongside.
    backend : {"auto", "numpy", "cupy"} or Backend
        Where the warp runs.
    threads : int, optional
        CPU threads over tiles.
    dtype : dtype
        Output data type (float32 by default).
    source_weight : ndarray, NDData uncertainty or FITS path, optional
        Weight or variance map of the source, resampled consistently with the data
        (:mod:`gpualign._variance`) into ``result.weight``; default: an NDData
        source's uncertainty.
    weight_type : {"variance", "inverse_variance", "stddev"}
        What ``source_weight`` holds.
    conserve_flux : bool
        Multiply by ``|det J|`` of the full mapping so that total fluxes are kept
        (default: surface brightness is kept).
    preserve_footprints : bool
        Grow the output canvas to hold the whole source and the whole template;
        ``result.offset`` is where the template's pixel (0, 0) lands.
    **find_kwargs
        Detection, matching and fitting options of :func:`find_transform`.

    Returns
    -------
    AlignResult

    Examples
    --------
    >>> from gpualign._simulate import simulate_pair, make_mapping
    >>> m = make_mapping(source_shape=(512, 512), template_shape=(512, 512),
    ...                  shift=(12.3, -7.1), rotation_deg=30)
    >>> pair = simulate_pair((512, 512), mapping=m, n_stars=400, seed=1)
    >>> result = align(pair.source, pair.template, backend="numpy")
    >>> result.data.shape
    (512, 512)
    """
    unknown = sorted(set(find_kwargs) - _find_transform_options())
    if unknown:
        raise TypeError(f"align() got an unexpected keyword argument {unknown[0]!r}")
    be = get_backend(backend)
    t0 = time.perf_counter()
    sep_thresh = find_kwargs.pop("sep_thresh", 5.0)
    flux_col = find_kwargs.pop("flux_col", None)
    src_data, src_header, own_mask = load_image(source, find_kwargs.pop("source_ext", None),
                                                name="source")
    checked = _check_warp_args(interp_order, (1, 1) if output_shape is None else output_shape,
                               source_mask, src_data.shape)
    output_shape = None if output_shape is None else checked
    tmpl_data = tmpl_mask = tmpl_header = None
    if template is not None:
        tmpl_data, tmpl_header, tmpl_mask = load_image(
            template, find_kwargs.pop("template_ext", None), name="template"
        )
    src_det = find_kwargs.pop("source_det", None)
    tmpl_det = find_kwargs.pop("template_det", None)
    if tmpl_det is None and tmpl_data is None:
        raise InputError("no template given", hint="pass a template image or template_det")
    todo = [] if tmpl_det is not None else [(tmpl_data, tmpl_mask)]
    todo += [] if src_det is not None else [(src_data, own_mask)]
    found = detect_many(todo, sep_thresh=sep_thresh)
    tmpl_cat = as_catalog(tmpl_det, flux_col=flux_col) if tmpl_det is not None else found.pop(0)
    src_cat = as_catalog(src_det, flux_col=flux_col) if src_det is not None else found.pop(0)
    if src_cat.shape is None:
        src_cat = Catalog(src_cat.x, src_cat.y, src_cat.flux, src_cat.fwhm, src_cat.flag,
                          src_cat.sigma, src_data.shape)
    timings = {"detect": time.perf_counter() - t0}
    if output_shape is None:
        if tmpl_data is None:
            raise InputError(
                "the template is a catalogue only, so the output grid is unknown",
                hint="give output_shape (--output-shape NY NX)",
            )
        output_shape = tmpl_data.shape
    if tmpl_cat.shape is None:
        tmpl_cat = Catalog(tmpl_cat.x, tmpl_cat.y, tmpl_cat.flux, tmpl_cat.fwhm, tmpl_cat.flag,
                           tmpl_cat.sigma, tuple(int(v) for v in output_shape))
    solution = solve(src_cat, tmpl_cat, timings=timings, backend=be, **find_kwargs)
    mask = own_mask if source_mask is None else source_mask
    t2 = time.perf_counter()
    src_shape = src_data.shape
    warp_t, out_shape, offset = solution.transform, tuple(output_shape), (0, 0)
    if preserve_footprints:
        warp_t, out_shape, offset = grow_canvas(warp_t, src_shape, out_shape)
    res = warp(
        src_data, warp_t, out_shape, backend=be, order=interp_order,
        cval=cval, mask=mask, threads=threads, dtype=dtype,
        overwrite_input=True,  # src_data is load_image's private copy, not needed after
    )
    solution.timings["warp"] = time.perf_counter() - t2
    result = AlignResult(res.data, res.footprint, res.mask, solution, be.name)
    return finish_result(
        result, warp_t, order=interp_order, source=source, source_shape=src_shape,
        source_header=src_header, template_header=tmpl_header, source_weight=source_weight,
        weight_type=weight_type, conserve_flux=conserve_flux, offset=offset)
