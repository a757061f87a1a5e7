"""The public API: :func:`align`, :func:`find_transform`, :func:`apply_transform`.

Thin layers over the frame runner (:mod:`gpualign.pipeline._runner`): they parse
the keyword arguments into settings and options and call it, so the API gives
what the CLI and a batch give for the same input.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError
from gpualign._settings import split_settings
from gpualign.backend import Backend, get_backend
from gpualign.detect import DetectSettings, as_catalog
from gpualign.fit import FitSettings
from gpualign.io import load_image
from gpualign.match import MatchSettings
from gpualign.pipeline._runner import (
    FrameOptions,
    TemplateSide,
    check_image_memory,
    detect_template,
    prepare_template,
    run_frame,
    solve_frame,
    warp_frame,
)
from gpualign.pipeline._solve import solve
from gpualign.products import AlignResult, Solution, load_solution
from gpualign.transform import Transform

__all__ = ["align", "apply_transform", "find_transform"]


def find_transform(
    source: Any,
    template: Any,
    *,
    source_det: Any = None,
    template_det: Any = None,
    source_ext: int | str | None = None,
    template_ext: int | str | None = None,
    hdu_in: int | str | None = None,
    source_mask: Any = None,
    template_mask: Any = None,
    flux_col: str | None = None,
    sep_thresh: float = 5.0,
    min_fwhm: float = 1.0,
    bad_flag_bits: int = 0,
    min_sep: float | None = None,
    n_det: float | int | None = None,
    auto_depth: bool = True,
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
    wcs_prior: str = "auto",
    transform: str = "auto",
    distortion: str = "poly",
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
        FITS extension (HDU index or name) to read from a path or an ``HDUList``.
    hdu_in : int or str, optional
        The source's HDU, under reproject's name for it (the same as ``source_ext``).
    source_mask, template_mask : ndarray, HDU or FITS path, optional
        Bad-pixel masks or bitmasks: pixels they flag (True or any set bit) are left
        out of detection. ``align`` also leaves the source mask's pixels out of the
        resampling.
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
    auto_depth : bool
        When an image gives fewer than 20 usable stars, detect it again at lower
        thresholds down to 1.5 sigma; when blind matching finds nothing, detect both
        images at 3 sigma and match once more (the thresholds used are in the
        solution's ``thresholds`` and the output's ``GA_THR``).
    n_quad_det, min_quad_sep, max_quad_hash_dist, max_quad_cand, patience_quad_cand,
    quad_edge_buffer, sub_tile :
        Quad matching dials (see :class:`gpualign.MatchSettings`).
    max_match_dist : float
        Cross-match tolerance in pixels.
    min_n_match : int
        Fewest matched stars accepted.
    spline_order : int, optional
        Degree of the distortion surfaces; 0 = affine only; None (default) chooses
        it by cross-validation on held-out matches.
    allow_mirror : bool
        Try a mirror-image source too.
    wcs_prior : {"auto", "off"}
        ``"auto"``: when both images carry a celestial WCS (a FITS header, an
        ``(array, WCS)`` or ``(array, Header)`` pair, an NDData's ``wcs``), the two
        WCSs predict the mapping and the stars are matched within their uncertainty
        (``gpualign.match._prior``); when that fails verification, blind quad
        matching takes over. ``"off"``: always blind. The solution's ``prior`` says
        which was used (``"wcs"``, ``"blind"``, ``"blind-fallback"``).
    transform : {"auto", "similarity", "affine"}
        Linear model under the distortion surfaces: rotation + one scale + shift, or
        the full affine (shear, anisotropic scale); ``"auto"`` keeps the similarity
        unless held-out stars are predicted significantly better by the affine
        (``gpualign.fit.choose_model``).
    distortion : {"poly", "tps", "auto"}
        Distortion model: polynomial surfaces, a smoothing thin-plate spline, or
        whichever predicts held-out stars better (``gpualign.fit._distortion``).
    backend : {"auto", "numpy", "cupy"} or Backend
        Where the neighbour queries of the matching run.

    Returns
    -------
    Solution
    """
    options = dict(locals())
    be = get_backend(options.pop("backend"))
    (det, mat, fit), _ = split_settings(options, DetectSettings, MatchSettings, FitSettings)
    source_ext = source_hdu(source_ext, hdu_in)
    if template is not None:
        side = prepare_template(template, template_det=template_det, ext=template_ext,
                                flux_col=det.flux_col, mask=template_mask)
    elif template_det is not None:
        side = TemplateSide(as_catalog(template_det, flux_col=det.flux_col), None, None)
    else:
        raise InputError("no template given", hint="pass a template image or template_det")
    if source is None:
        if source_det is None:
            raise InputError("no source given", hint="pass a source image or source_det")
        src_cat = as_catalog(source_det, flux_col=det.flux_col)
        return solve(src_cat, detect_template(side, det, mat), detect=det, match=mat,
                     fit=fit, backend=be, timings={})
    _, _, _, solution = solve_frame(source, side, detect=det, match=mat, fit=fit, backend=be,
                                    source_det=source_det, source_ext=source_ext,
                                    source_mask=source_mask)
    return solution


def source_hdu(source_ext: int | str | None, hdu_in: int | str | None) -> int | str | None:
    """The source's HDU from ``source_ext`` or its reproject name ``hdu_in`` (not both)."""
    if hdu_in is None:
        return source_ext
    if source_ext is not None and source_ext != hdu_in:
        raise InputError(f"source_ext={source_ext!r} and hdu_in={hdu_in!r} name different "
                         "HDUs", hint="give one of them (hdu_in is source_ext's other name)")
    return hdu_in


def check_output_shape(output_shape: Any, name: str = "output_shape") -> tuple[int, int]:
    """Reject an unusable output shape with an InputError; return it as two ints.

    The other warp options are checked by :class:`FrameOptions`. ``name`` is what the
    message calls it (``--output-shape`` on the command line).
    """
    try:
        shape = tuple(int(v) for v in output_shape)
        ok = len(shape) == 2 and min(shape) > 0 and all(
            float(v) == int(v) for v in output_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be two positive integers (ny, nx), "
                         f"got {output_shape!r}",
                         hint="the output grid's rows and columns, e.g. (4096, 4096); "
                         "omit it for the template's")
    return shape[0], shape[1]


def apply_transform(
    transform: Transform | Solution | str | os.PathLike,
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
    max_memory: float | None = None,
) -> AlignResult:
    """Resample an image with a known mapping (no detection).

    Parameters
    ----------
    transform : Transform, Solution or path
        Template pixel -> source pixel mapping (e.g. from :func:`find_transform`), or
        a transform file (``gpualign align --save-transform``, ``Solution.save``).
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
    max_memory : float, optional
        GiB the run may hold at its peak (default: what the machine has available;
        more allows a run on swap). A run whose plan needs more is refused before
        anything is allocated.

    Returns
    -------
    AlignResult
    """
    if isinstance(transform, (str, os.PathLike)):
        transform = load_solution(transform)  # a transform file
    if not isinstance(transform, (Transform, Solution)):
        raise InputError(f"transform must be a Transform, a Solution or a transform file, "
                         f"got {type(transform).__name__}",
                         hint="find one with gpualign.find_transform, or save one with "
                         "gpualign align --save-transform")
    be = get_backend(backend)
    if output_shape is None and isinstance(transform, Solution):
        output_shape = transform.template_shape
    if output_shape is None:
        raise InputError("output_shape is needed (the transform records no template shape)")
    shape = check_output_shape(output_shape)
    options = FrameOptions(interp_order=interp_order, cval=cval, dtype=dtype,
                           threads=threads, source_mask=mask, source_weight=source_weight,
                           weight_type=weight_type, conserve_flux=conserve_flux,
                           preserve_footprints=preserve_footprints, max_memory=max_memory)
    if template_header is not None and not isinstance(template_header, fits.Header):
        template_header = template_header.to_header(relax=True)  # a WCS
    check_image_memory(image, ext, "image", max_memory)
    data, header, own_mask = load_image(image, ext)
    solution = transform if isinstance(transform, Solution) else bare_solution(
        transform, data.shape, shape)
    side = TemplateSide(None, template_header, shape)
    result = warp_frame(data, image, header, own_mask, solution, side, backend=be,
                        options=options)
    assert result is not None  # no output file: always in memory
    return result


def bare_solution(t: Transform, source_shape: tuple[int, int],
                  template_shape: tuple[int, int]) -> Solution:
    """A Solution that records only a mapping (no pairs, no statistics)."""
    return Solution(t, t, np.zeros((0, 2)), np.zeros((0, 2)), {}, t.degree,
                    bool(np.linalg.det(t.matrix[:, :2]) < 0), {}, tuple(source_shape),
                    tuple(template_shape), distortion=t.distortion.name)


def _find_transform_options() -> set[str]:
    """Keyword options :func:`align` passes on to :func:`find_transform`."""
    params = inspect.signature(find_transform).parameters
    return {n for n, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "backend"}


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
    max_memory: float | None = None,
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
    source_mask : ndarray, HDU or FITS path, optional
        Source bad-pixel mask or bitmask: its pixels are left out of detection, and
        it is resampled alongside into ``result.mask``.
    backend : {"auto", "numpy", "cupy"} or Backend
        Where the warp runs.
    threads : int, optional
        CPU threads over tiles.
    dtype : dtype
        Output data type (float32 by default).
    source_weight : ndarray, NDData uncertainty or FITS path, optional
        Weight or variance map of the source, resampled consistently with the data
        (``gpualign.products._variance``) into ``result.weight``; default: an NDData
        source's uncertainty.
    weight_type : {"variance", "inverse_variance", "stddev"}
        What ``source_weight`` holds.
    conserve_flux : bool
        Multiply by ``|det J|`` of the full mapping so that total fluxes are kept
        (default: surface brightness is kept).
    preserve_footprints : bool
        Grow the output canvas to hold the whole source and the whole template;
        ``result.offset`` is where the template's pixel (0, 0) lands.
    max_memory : float, optional
        GiB the run may hold at its peak (default: what the machine has available;
        more allows a run on swap). A run whose plan needs more is refused before
        anything is allocated.
    **find_kwargs
        Detection, matching and fitting options of :func:`find_transform`, and its
        ``source_det``, ``template_det``, ``source_ext`` (or ``hdu_in``),
        ``template_ext`` and ``template_mask``.

    Returns
    -------
    AlignResult

    Examples
    --------
    >>> from gpualign.simulate import simulate_pair, make_mapping
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
    if output_shape is not None:
        check_output_shape(output_shape)
    (det, mat, fit), rest = split_settings(find_kwargs, DetectSettings, MatchSettings,
                                           FitSettings)
    options = FrameOptions(  # validated here, before anything is read
        interp_order=interp_order, cval=cval, dtype=dtype, threads=threads,
        source_ext=source_hdu(rest.get("source_ext"), rest.get("hdu_in")),
        source_mask=source_mask,
        source_weight=source_weight, weight_type=weight_type, conserve_flux=conserve_flux,
        preserve_footprints=preserve_footprints, protected=(template,),
        max_memory=max_memory)
    be = get_backend(backend)
    side = prepare_template(template, template_det=rest.get("template_det"),
                            ext=rest.get("template_ext"), output_shape=output_shape,
                            flux_col=det.flux_col, max_memory=max_memory,
                            mask=rest.get("template_mask"))
    out = run_frame(source, side, detect=det, match=mat, fit=fit, backend=be,
                    options=options, source_det=rest.get("source_det"))
    assert out.result is not None  # no output file: always in memory
    return out.result
