"""World coordinates of the aligned image.

* The template has a celestial WCS: the output carries it (shifted by the canvas
  offset with ``preserve_footprints``).
* Only the source has one: the output gets the source's WCS composed with the fitted
  mapping, ``world(p) = WCS_src(T(p))``, written as a standard FITS WCS with SIP
  polynomials: the linear core is the source's (its CD matrix times T's linear part,
  reference pixel moved through T's inverse; a TPV source keeps its TAN core), and
  the rest (T's distortion surfaces, the source's own SIP/TPV distortion) is fitted
  as SIP ``A``/``B`` polynomials of increasing order until the composed positions are
  reproduced to ``tol_px`` source pixels on a dense grid. Where the surfaces of T are
  clipped (beyond the stars' box) the composed mapping is no longer a polynomial and
  the SIP fit there is an approximation; the achieved maximum error is recorded in
  the header (``GA_WCSER``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip

from gpualign._errors import warn
from gpualign.transform import Transform

log = logging.getLogger("gpualign")

__all__ = ["celestial_wcs", "compose_wcs", "shift_wcs", "output_wcs", "wcs_error_px",
           "WCS_WARN_PX"]

#: Error (source px) of a composed WCS above which a GpuAlignWarning is issued: a
#: hundredth of a pixel is below the centroid error of even bright stars, so a WCS
#: within it adds nothing measurable to astrometry made on the output; beyond it, it does.
WCS_WARN_PX = 0.01


def celestial_wcs(header: fits.Header | None) -> WCS | None:
    """The header's celestial WCS, or None."""
    if header is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITSFixedWarning and other fix-up notes
            w = WCS(header, relax=True)
    except Exception:  # an unreadable WCS is no WCS
        return None
    if not w.has_celestial:
        return None
    w = w.celestial if w.naxis != 2 else w
    return w


def shift_wcs(w: WCS, offset: tuple[int, int]) -> WCS:
    """The same WCS on a canvas where the original pixel (0, 0) is at ``offset``."""
    out = w.deepcopy()
    out.wcs.crpix = out.wcs.crpix + np.array([offset[0], offset[1]], dtype=float)
    if out.sip is not None:
        out.sip = Sip(out.sip.a, out.sip.b, out.sip.ap, out.sip.bp,
                      out.sip.crpix + np.array([offset[0], offset[1]], dtype=float))
    return out


def _linear_core(src: WCS, t: Transform) -> WCS:
    """The source's projection with CD = CD_src @ M and CRPIX moved through T's inverse."""
    m = t.matrix[:, :2]
    crpix0_src = np.asarray(src.wcs.crpix, dtype=float) - 1.0
    crpix0 = np.linalg.solve(m, crpix0_src - t.matrix[:, 2])
    core = WCS(naxis=2)
    ctype = [c.replace("-SIP", "") for c in src.wcs.ctype]
    ctype = [c[:5] + "-TAN" if c.endswith("-TPV") else c for c in ctype]
    core.wcs.ctype = ctype
    core.wcs.cunit = src.wcs.cunit
    core.wcs.crval = src.wcs.crval
    core.wcs.cd = src.pixel_scale_matrix @ m
    core.wcs.crpix = crpix0 + 1.0
    for attr in ("lonpole", "latpole", "radesys", "equinox", "dateobs", "mjdobs"):
        try:
            setattr(core.wcs, attr, getattr(src.wcs, attr))
        except Exception:  # not set in the source
            pass
    core.wcs.set()
    return core


def _poly_design(qx: np.ndarray, qy: np.ndarray, order: int, low: int) -> tuple[np.ndarray, list]:
    exps = [(i, j) for n in range(low, order + 1) for i in range(n, -1, -1) for j in [n - i]]
    return np.column_stack([qx**i * qy**j for i, j in exps]), exps


def _box(t: Transform, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)``: the output grid, cut to where T's surfaces are not clipped."""
    ny, nx = shape
    x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    box = t.support_box()
    if box is not None:
        x0, x1 = max(x0, box[0]), min(x1, box[1])
        y0, y1 = max(y0, box[2]), min(y1, box[3])
        if x1 - x0 < 2 or y1 - y0 < 2:  # degenerate: use the whole grid
            x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    return x0, x1, y0, y1


def wcs_error_px(out: WCS, src: WCS, t: Transform, shape: tuple[int, int],
                 n: int = 41, box: tuple[float, float, float, float] | None = None) -> float:
    """Largest distance (source pixels) between ``out`` and ``src`` o ``t`` on a grid.

    ``box`` = ``(x0, x1, y0, y1)`` limits the grid (default: the whole output).
    """
    x0, x1, y0, y1 = box if box is not None else (0, shape[1] - 1, 0, shape[0] - 1)
    gy, gx = np.meshgrid(np.linspace(y0, y1, n), np.linspace(x0, x1, n), indexing="ij")
    sx, sy = t(gx.ravel(), gy.ravel())
    ra0, de0 = src.all_pix2world(sx, sy, 0)
    ra1, de1 = out.all_pix2world(gx.ravel(), gy.ravel(), 0)
    px, py = src.all_world2pix(ra1, de1, 0)
    del ra0, de0
    return float(np.max(np.hypot(px - sx, py - sy)))


def _fit_sip(core0: WCS, px: np.ndarray, py: np.ndarray, ra: np.ndarray, dec: np.ndarray,
             order: int, scale: float) -> WCS:
    """SIP of ``order`` on ``core0`` so that pixel ``(px, py)`` maps to ``(ra, dec)``.

    The residual ``core^-1(world) - p`` is fitted as a full polynomial of ``order`` in
    ``q = p - crpix``; its constant and linear terms at ``q = 0`` are moved into
    CRPIX and CD (SIP holds terms of degree >= 2 only) and the fit is repeated until
    they vanish.
    """
    core = core0.deepcopy()
    for _ in range(8):
        lx, ly = core.wcs_world2pix(ra, dec, 0)
        crpix0 = core.wcs.crpix - 1.0
        design, exps = _poly_design((px - crpix0[0]) / scale, (py - crpix0[1]) / scale,
                                    order, 0)
        ca, *_ = np.linalg.lstsq(design, lx - px, rcond=None)
        cb, *_ = np.linalg.lstsq(design, ly - py, rcond=None)
        a0 = np.array([ca[0], cb[0]])
        k = np.eye(2) + np.array([[ca[1], ca[2]], [cb[1], cb[2]]]) / scale
        if np.max(np.abs(a0)) < 1e-10 and np.max(np.abs(k - np.eye(2))) < 1e-14:
            break
        core.wcs.cd = core.wcs.cd @ k
        core.wcs.crpix = crpix0 - np.linalg.solve(k, a0) + 1.0
        core.wcs.set()
    am = np.zeros((order + 1, order + 1))
    bm = np.zeros((order + 1, order + 1))
    for c_a, c_b, (i, j) in zip(ca, cb, exps, strict=True):
        if i + j >= 2:
            am[i, j] = c_a / scale ** (i + j)
            bm[i, j] = c_b / scale ** (i + j)
    out = core.deepcopy()
    out.wcs.ctype = [c if c.endswith("-SIP") else c + "-SIP" for c in core.wcs.ctype]
    out.sip = Sip(am, bm, None, None, core.wcs.crpix)
    out.wcs.set()
    return out


def compose_wcs(src: WCS, t: Transform, shape: tuple[int, int], *, tol_px: float = 1e-4,
                max_order: int = 9, n: int = 48) -> tuple[WCS, float]:
    """``WCS_src o T`` on an output grid of ``shape`` as a (TAN-)SIP WCS.

    Parameters
    ----------
    src : WCS
        Celestial WCS of the source.
    t : Transform
        Output pixel -> source pixel mapping.
    shape : tuple of int
        ``(ny, nx)`` of the output.
    tol_px : float
        Target accuracy in source pixels.
    max_order : int
        Highest SIP order tried.
    n : int
        Grid points per axis of the fit.

    Returns
    -------
    wcs : WCS
    max_error_px : float
        Achieved maximum error on a check grid over the whole output (source pixels).
        The SIP is fitted where T's surfaces are not clipped (the stars' box), and
        reaches ``tol_px`` there; beyond it the frozen surfaces are not a polynomial.
        Above :data:`WCS_WARN_PX` (or ``tol_px`` if larger) a
        :class:`~gpualign.GpuAlignWarning` is issued.
    """
    ny, nx = shape
    core = _linear_core(src, t)
    box = _box(t, shape)
    gy, gx = np.meshgrid(np.linspace(box[2], box[3], n), np.linspace(box[0], box[1], n),
                         indexing="ij")
    px, py = gx.ravel(), gy.ravel()
    sx, sy = t(px, py)
    ra, dec = src.all_pix2world(sx, sy, 0)
    err = wcs_error_px(core, src, t, shape)
    if err <= tol_px:  # affine T on a distortion-free source: exact
        return core, err
    # SIP about the output's centre (a source CRPIX far off the chip, as in a mosaic
    # camera's TPV, would make the polynomial ill-conditioned): new tangent point at
    # the world position of the centre, the differences absorbed by CD, CRPIX and SIP.
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    csx, csy = t(centre[0], centre[1])
    cra, cdec = src.all_pix2world(np.atleast_1d(csx), np.atleast_1d(csy), 0)
    core.wcs.crval = [float(cra[0]), float(cdec[0])]
    core.wcs.crpix = centre + 1.0
    core.wcs.lonpole, core.wcs.latpole = 180.0, 0.0
    core.wcs.set()
    best: tuple[WCS, float] | None = None
    for order in range(2, max_order + 1):
        out = _fit_sip(core, px, py, ra, dec, order, float(max(nx, ny)))
        err = wcs_error_px(out, src, t, shape, box=box)
        if best is None or err < best[1]:
            best = (out, err)
        if err <= tol_px:
            break
    assert best is not None
    if best[1] > tol_px:
        log.info("composed WCS reproduces source WCS o T to %.2g px (target %.2g)",
                 best[1], tol_px)
    # what is reported: the whole output grid (the clipped edges included)
    err = max(best[1], wcs_error_px(best[0], src, t, shape))
    if err > max(tol_px, WCS_WARN_PX):
        warn(f"the output WCS (source WCS composed with the mapping, as TAN-SIP) is off by "
             f"up to {err:.3g} px (tolerance {max(tol_px, WCS_WARN_PX):g} px; GA_WCSER "
             "records it)", hint="give the template a WCS, or re-solve the output's "
             "astrometry where sub-pixel world coordinates matter", stacklevel=2)
    return best[0], err


def output_wcs(
    template_header: fits.Header | None, source_header: fits.Header | None,
    transform: Transform, shape: tuple[int, int], offset: tuple[int, int] = (0, 0),
) -> tuple[WCS | None, str, float]:
    """The WCS of the aligned image, where it comes from, and its error (px).

    Parameters
    ----------
    template_header, source_header : Header or None
        Headers that may hold a celestial WCS.
    transform : Transform
        Output (canvas) pixel -> source pixel mapping.
    shape : tuple of int
        Output shape.
    offset : tuple of int
        Canvas position of the template's pixel (0, 0).

    Returns
    -------
    wcs : WCS or None
    origin : str
        ``"template"``, ``"source+transform"`` or ``"none"``.
    error_px : float
        0 for the template's WCS; the SIP fit's maximum error otherwise.
    """
    tw = celestial_wcs(template_header)
    if tw is not None:
        return (shift_wcs(tw, offset) if any(offset) else tw), "template", 0.0
    sw = celestial_wcs(source_header)
    if sw is None:
        return None, "none", float("nan")
    w, err = compose_wcs(sw, transform, shape)
    return w, "source+transform", err


def wcs_header(w: WCS | None) -> fits.Header:
    """FITS cards of a WCS (with SIP where present); empty without one."""
    if w is None:
        return fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return w.to_header(relax=True)
