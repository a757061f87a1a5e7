"""Star detection with sep (CPU): background, extraction, FWHM, windowed centroids."""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree

from gpualign._errors import TooFewStars
from gpualign._system import fork_workers, forked_pool, usable_cores
from gpualign.detect._catalog import Catalog, _sigma_from_snr

__all__ = ["detect", "detect_many", "filter_catalog"]


def _extract(data: np.ndarray, thresh: float, rms: float, mask: np.ndarray | None,
             minarea: int, deblend_cont: float) -> np.ndarray:
    """sep.extract, growing its buffers only when a crowded image needs them.

    sep initialises its whole pixel stack on every call (an 8192^2 image sized at a
    quarter of its pixels costs 700 MB of RSS), so it starts at sep's default and
    is multiplied by 8 each time sep reports it full.
    """
    pixstack = 300_000
    sep.set_sub_object_limit(4096)
    while True:
        sep.set_extract_pixstack(pixstack)
        try:
            return sep.extract(data, thresh, err=rms, mask=mask, minarea=minarea,
                               deblend_cont=deblend_cont, clean=True)
        except Exception as exc:
            if "pixel buffer full" not in str(exc) or pixstack >= data.size:
                raise
            pixstack = min(8 * pixstack, data.size)


def detect(
    image: np.ndarray,
    *,
    sep_thresh: float = 5.0,
    mask: np.ndarray | None = None,
    deblend_cont: float = 0.005,
    minarea: int = 5,
) -> Catalog:
    """Detect sources with sep and measure them for registration.

    Non-finite pixels are masked (and set to 0 in a private copy); the input is never
    modified. Positions are sep's windowed centroids (SExtractor's ``XWIN_IMAGE``)
    with a window matched to each object's FWHM, which is measured from the
    half-light radius (for a Gaussian PSF, FWHM = 2 * r_half).

    Parameters
    ----------
    image : ndarray
        2-D image, any real dtype or byte order.
    sep_thresh : float
        Detection threshold in units of the global background RMS.
    mask : ndarray of bool, optional
        Pixels to ignore (True = bad).
    deblend_cont : float
        sep's deblending contrast.
    minarea : int
        Minimum number of pixels above threshold.

    Returns
    -------
    Catalog
        All detections, brightest first, unfiltered (see :func:`filter_catalog`).
    """
    data = np.array(image, dtype=np.float32, order="C", copy=True)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if bad.all():
        raise TooFewStars("the image has no finite pixels", hint="check the input file")
    data[bad] = 0.0
    bad_u8 = bad.astype(np.uint8) if bad.any() else None
    bkg = sep.Background(data, mask=bad_u8)
    sky_level = float(bkg.globalback)
    rms = float(bkg.globalrms)
    bkg.subfrom(data)
    if bad_u8 is not None:
        data[bad] = 0.0
    if not np.isfinite(rms) or rms <= 0:
        rms = float(np.std(data[~bad])) or 1.0
    objects = _extract(data, sep_thresh, rms, bad_u8, minarea, deblend_cont)
    shape = (int(data.shape[0]), int(data.shape[1]))
    if objects.size == 0:
        empty = np.zeros(0)
        return Catalog(empty, empty, empty, empty, np.zeros(0, np.int64), empty, shape)
    x0, y0 = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    a = np.maximum(objects["a"].astype(np.float64), 0.3)
    rmax = np.clip(6.0 * a, 3.0, 50.0)
    rhalf, rflag = sep.flux_radius(
        data, x0, y0, rmax, 0.5, normflux=objects["flux"], mask=bad_u8, subpix=5
    )
    fwhm = 2.0 * np.asarray(rhalf, dtype=np.float64)
    sig = np.clip(np.nan_to_num(fwhm, nan=2.0), 0.85, 40.0) / 2.3548
    xw, yw, wflag = sep.winpos(data, x0, y0, sig, mask=bad_u8)
    moved = np.hypot(xw - x0, yw - y0) > np.maximum(2.0, fwhm)
    x = np.where(moved | (wflag != 0), x0, xw)
    y = np.where(moved | (wflag != 0), y0, yw)
    flux = objects["flux"].astype(np.float64)
    # Effective gain from the sky: Poisson-dominated sky has variance = level / gain.
    gain = sky_level / rms**2 if sky_level > 5.0 * rms else np.inf
    area = np.pi * np.maximum(np.nan_to_num(fwhm, nan=3.0), 1.0) ** 2
    noise = np.sqrt(area * rms**2 + np.maximum(flux, 0) / gain)
    snr = flux / noise
    flag = objects["flag"].astype(np.int64) | (np.asarray(rflag, np.int64) << 8)
    cat = Catalog(x, y, flux, fwhm, flag, _sigma_from_snr(fwhm, snr), shape)
    return cat.sorted_by_flux()


def filter_catalog(
    cat: Catalog,
    *,
    min_fwhm: float = 1.0,
    bad_flag_bits: int = 0,
    min_sep: float | None = None,
    n_det: float | int | None = None,
    edge_buffer: float = 0.0,
) -> Catalog:
    """Keep the detections that are usable as tie-points.

    Removes, in order: flagged detections (``flag & bad_flag_bits``); objects
    narrower than ``min_fwhm`` or than half the FWHM of the image's stellar
    locus, the lower quartile of the bright detections' FWHM (hot pixels, cosmic
    rays: static artefacts must not capture the match); objects closer than
    ``min_sep`` pixels to another detection (crowding); then keeps the ``n_det`` brightest.

    Parameters
    ----------
    cat : Catalog
        Sorted brightest first.
    min_fwhm : float
        Absolute minimum FWHM in pixels (NaN FWHMs, e.g. user catalogues, are kept).
    bad_flag_bits : int
        Detections with any of these flag bits set are dropped.
    min_sep : float, optional
        Crowding filter radius in pixels (None or 0 = off).
    n_det : int or float, optional
        Number (>= 1) or fraction (< 1) of the brightest detections to keep.
    edge_buffer : float
        Drop detections closer than this to the image edge (needs ``cat.shape``).

    Returns
    -------
    Catalog
    """
    keep = np.ones(len(cat), bool)
    if bad_flag_bits:
        keep &= (cat.flag & int(bad_flag_bits)) == 0
    fwhm = cat.fwhm
    known = np.isfinite(fwhm)
    if known.any():
        # The stellar locus is the compact end of the FWHM distribution (galaxies are
        # wider); hot pixels and cosmic rays are much narrower than it.
        bright = known & keep
        sample = fwhm[bright][: max(20, bright.sum() // 2)]
        ref = np.percentile(sample, 25) if sample.size else np.nan
        floor = max(min_fwhm, 0.5 * ref) if np.isfinite(ref) else min_fwhm
        keep &= ~known | (fwhm >= floor)
    if edge_buffer > 0 and cat.shape is not None:
        ny, nx = cat.shape
        b = edge_buffer
        keep &= (cat.x >= b) & (cat.x <= nx - 1 - b) & (cat.y >= b) & (cat.y <= ny - 1 - b)
    if min_sep and len(cat) > 1:
        tree = cKDTree(cat.xy)
        d, _ = tree.query(cat.xy, k=2)
        keep &= d[:, 1] >= float(min_sep)
    out = cat.take(keep)
    if n_det is not None:
        n = int(round(n_det * len(out))) if 0 < n_det < 1 else int(n_det)
        out = out.brightest(max(n, 0))
    return out


_FORKED_IMAGES: list[tuple[np.ndarray, np.ndarray | None]] = []
PARALLEL_MIN_PIXELS = 2_000_000


def _detect_forked(index: int, sep_thresh: float) -> Catalog:
    image, mask = _FORKED_IMAGES[index]
    return detect(image, sep_thresh=sep_thresh, mask=mask)


def detect_many(
    images: list[tuple[np.ndarray, np.ndarray | None]], *, sep_thresh: float = 5.0
) -> list[Catalog]:
    """Detect several images, in parallel processes when they are large.

    sep holds the GIL, so threads do not help; on a machine with several cores the
    large images are detected in forked worker processes (which inherit the pixels
    without copying them through a pipe) while this process detects the last one.

    Parameters
    ----------
    images : list of (image, mask)
        The images and their optional bad-pixel masks.
    sep_thresh : float
        Detection threshold.

    Returns
    -------
    list of Catalog
    """
    big = [i for i, (im, _) in enumerate(images[:-1]) if im.size >= PARALLEL_MIN_PIXELS]
    workers = fork_workers(usable_cores() - 1, len(big))  # this process detects too
    if not workers:
        return [detect(im, sep_thresh=sep_thresh, mask=m) for im, m in images]
    _FORKED_IMAGES[:] = images
    try:
        with forked_pool(workers) as ex:
            futures = {i: ex.submit(_detect_forked, i, sep_thresh) for i in big}
            out = {}
            for i, (im, m) in enumerate(images):
                if i not in futures:
                    out[i] = detect(im, sep_thresh=sep_thresh, mask=m)
            for i, fut in futures.items():
                out[i] = fut.result()
    finally:
        _FORKED_IMAGES.clear()
    return [out[i] for i in range(len(images))]
