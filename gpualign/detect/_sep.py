"""Star detection with sep (CPU): background, extraction, FWHM, windowed centroids."""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree
from scipy.special import log_ndtr

from gpualign._errors import TooFewStars
from gpualign.detect._catalog import Catalog, _sigma_from_snr
from gpualign.detect._gauss_fit import fit_gaussian

__all__ = ["detect", "filter_catalog", "keep_brightest"]


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


_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
#: Least centroid uncertainty (px) of a deep catalogue's stars (see :meth:`_Pixels.catalog`).
DEEP_SIGMA_FLOOR = 0.05
#: An object wider than this many PSF FWHMs is extended: centred within a PSF window.
EXTENDED = 2.0
#: Least centroid uncertainty of an extended object's core, in PSF FWHMs: a resolved core
#: is no point source, and resampling or a change of PSF moves its centroid by about a
#: hundredth of the PSF (warped JWST cluster fields: 80% of the cores within 0.03-0.05 px
#: at a 3 px PSF, whatever their brightness).
EXTENDED_SIGMA = 0.01
#: Uncertainty added (in window sigmas) where the windowed centroid failed and the
#: isophotal one is kept.
FAILED_WINDOW_SIGMA = 0.25
#: Narrowest PSF (FWHM, px) :meth:`_Pixels.compact_fwhm` looks for: hot pixels and cosmic
#: rays measure 0.8-1.2 px.
MIN_PSF_FWHM = 1.5
#: Percentile of the detections' FWHMs taken as the stellar locus (:func:`filter_catalog`).
LOCUS_PERCENTILE = 10.0


#: Images of at least this many pixels have their background measured on every second
#: pixel of every second row (:func:`_subtract_background`).
SUBSAMPLED_BACKGROUND_MIN_PIXELS = 8_000_000
#: sep's background mesh (px, full resolution), its default.
BACKGROUND_MESH = 64


def _subtract_background(data: np.ndarray, bad_u8: np.ndarray | None) -> tuple[float, float]:
    """Subtract sep's background map from ``data`` in place; (global level, global RMS).

    A large image's background is measured on the pixels of even rows and columns, in
    meshes of the same size on the sky (:data:`BACKGROUND_MESH` full-resolution pixels):
    each mesh's sky then comes from 1024 pixels instead of 4096 (its noise 3% of the
    pixels' RMS instead of 1.6%, far below what moves a centroid), in a quarter of the
    time (with the map's subtraction, 0.2-0.45 s -> 0.10-0.12 s per 4096^2 image and
    1.5-1.7 s -> 0.41-0.49 s per 8192^2 image, ``benchmarks/results/floor.md``). The
    pixels' RMS is the same (no pixels are averaged); the map, on the sampled grid, is
    subtracted from each 2x2 block it samples (the sky varies over tens of pixels, not
    two).
    """
    if data.size < SUBSAMPLED_BACKGROUND_MIN_PIXELS or min(data.shape) < 4 * BACKGROUND_MESH:
        bkg = sep.Background(data, mask=bad_u8, bw=BACKGROUND_MESH, bh=BACKGROUND_MESH)
        bkg.subfrom(data)
        return float(bkg.globalback), float(bkg.globalrms)
    half = BACKGROUND_MESH // 2
    sub_mask = None if bad_u8 is None else np.ascontiguousarray(bad_u8[::2, ::2])
    sampled = np.ascontiguousarray(data[::2, ::2])
    bkg = sep.Background(sampled, mask=sub_mask, bw=half, bh=half)
    del sampled, sub_mask  # sep keeps its meshes only: the map is made without them
    back = bkg.back(dtype=np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            view = data[dy::2, dx::2]
            view -= back[:view.shape[0], :view.shape[1]]
    return float(bkg.globalback), float(bkg.globalrms)


class _Pixels:
    """An image made ready for sep: a private float32 copy, background subtracted.

    Extraction at several thresholds (automatic depth) reuses the background.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray | None) -> None:
        data = np.array(image, dtype=np.float32, order="C", copy=True)
        bad = ~np.isfinite(data)
        if mask is not None:
            bad |= np.asarray(mask, dtype=bool)
        if bad.all():
            raise TooFewStars("the image has no finite pixels", hint="check the input file")
        bad_u8 = None
        if bad.any():
            data[bad] = 0.0
            bad_u8 = bad.view(np.uint8)  # the same bytes: no second mask in memory
        del bad
        sky_level, rms = _subtract_background(data, bad_u8)
        if bad_u8 is not None:
            data[bad_u8.view(bool)] = 0.0
        if not np.isfinite(rms) or rms <= 0:
            good = data if bad_u8 is None else data[~bad_u8.view(bool)]
            rms = float(np.std(good)) or 1.0
        self.data, self.bad_u8, self.rms = data, bad_u8, rms
        # Effective gain from the sky: Poisson-dominated sky has variance = level / gain.
        self.gain = sky_level / rms**2 if sky_level > 5.0 * rms else np.inf
        self.shape = (int(data.shape[0]), int(data.shape[1]))

    def objects(self, thresh: float, minarea: int = 5,
                deblend_cont: float = 0.005) -> np.ndarray:
        """The objects sep extracts above ``thresh`` times the background RMS."""
        return _extract(self.data, thresh, self.rms, self.bad_u8, minarea, deblend_cont)

    def catalog(self, objects: np.ndarray, window_fwhm: float | None = None) -> Catalog:
        """Measure ``objects``: FWHM, windowed centroids, their uncertainties.

        ``window_fwhm`` (deep detections): one centroid window for every object, the
        image's PSF, uncertainties from the flux in that window (at least
        :data:`DEEP_SIGMA_FLOOR`), and no object cut by the image's edge; by default
        each object's window is its own FWHM, as SExtractor's ``XWIN_IMAGE``, except
        for extended objects (wider than :data:`EXTENDED` PSFs, the PSF from
        :meth:`compact_fwhm`), centred on their cores within a PSF window; the
        uncertainties then include how far the image's edge pulls a centroid
        (:func:`_edge_bias`).
        """
        data, bad_u8, rms = self.data, self.bad_u8, self.rms
        if objects.size == 0:
            empty = np.zeros(0)
            return Catalog(empty, empty, empty, empty, np.zeros(0, np.int64), empty,
                           self.shape)
        x0, y0 = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
        a = np.maximum(objects["a"].astype(np.float64), 0.3)
        rmax = np.clip(6.0 * a, 3.0, 50.0)
        rhalf, rflag = sep.flux_radius(
            data, x0, y0, rmax, 0.5, normflux=objects["flux"], mask=bad_u8, subpix=5
        )
        fwhm = 2.0 * np.asarray(rhalf, dtype=np.float64)
        extended = np.zeros(x0.shape, bool)
        psf = None
        if window_fwhm is None:
            window = np.clip(np.nan_to_num(fwhm, nan=2.0), 0.85, 40.0)
            psf = self.compact_fwhm(objects, fwhm)
            if psf is not None:
                # An extended object (a galaxy) is centred on its core, within a window
                # the size of the PSF: the light of its outer parts, which a change of
                # scale, distortion or PSF between two images redistributes, then hardly
                # moves the centroid.
                extended = np.nan_to_num(fwhm, nan=0.0) > EXTENDED * psf
                window[extended] = psf
            sig = window / 2.3548
        else:
            sig = np.full(x0.shape, window_fwhm / 2.3548)
        xw, yw, wflag = sep.winpos(data, x0, y0, sig, mask=bad_u8)
        moved = np.hypot(xw - x0, yw - y0) > np.maximum(2.0, fwhm)
        x = np.where(moved | (wflag != 0), x0, xw)
        y = np.where(moved | (wflag != 0), y0, yw)
        flux = objects["flux"].astype(np.float64)
        flag = objects["flag"].astype(np.int64) | (np.asarray(rflag, np.int64) << 8)
        if window_fwhm is None:
            # A faint point source's half-light radius, from its isophotal flux, is
            # smaller than the PSF's; its centroid scatters as the PSF's width says.
            width = fwhm if psf is None else np.fmax(fwhm, psf)
            area = np.pi * np.maximum(np.nan_to_num(width, nan=3.0), 1.0) ** 2
            noise = np.sqrt(area * rms**2 + np.maximum(flux, 0) / self.gain)
            sigma = _sigma_from_snr(width, flux / noise)
            if extended.any():
                # the centroid of a core measures the light within the PSF only, and
                # no better than the core's own structure allows
                core_fwhm = window[extended]
                sigma[extended] = np.hypot(_sigma_from_snr(
                    core_fwhm, self._psf_snr(x[extended], y[extended], float(core_fwhm[0]))),
                    EXTENDED_SIGMA * core_fwhm)
            sigma = np.hypot(sigma, _edge_bias(x, y, sig, self.shape))
            # a windowed centroid that failed for another reason than the edge leaves
            # the isophotal centroid, off by a tenth of a pixel or more
            failed = moved | ((wflag & ~np.int16(sep.APER_TRUNC)) != 0)
            sigma[failed] = np.hypot(sigma[failed], FAILED_WINDOW_SIGMA * sig[failed])
            return Catalog(x, y, flux, fwhm, flag, sigma, self.shape).sorted_by_flux()
        # Photon noise, and a floor for what it leaves out (the PSFs of two exposures
        # differ, faint neighbours blend in): on a real pair a few bright stars with
        # errors of 0.005 px would pin the fit and push its error onto the faint ones.
        sigma = np.hypot(_sigma_from_snr(np.full(x.shape, window_fwhm),
                                         self._psf_snr(x, y, window_fwhm)), DEEP_SIGMA_FLOOR)
        # A star cut by the image's edge has its centroid pulled inwards by up to a
        # pixel: among the few faint stars of a deep catalogue, one such star costs more
        # than it brings.
        ny, nx = self.shape
        edge = np.minimum(np.minimum(x, nx - 1 - x), np.minimum(y, ny - 1 - y))
        whole = ((objects["flag"] & sep.OBJ_TRUNC) == 0) & (edge >= window_fwhm)
        cat = Catalog(x, y, flux, fwhm, flag, sigma, self.shape)
        return cat.take(whole).sorted_by_flux()

    def _psf_snr(self, x: np.ndarray, y: np.ndarray, fwhm: float) -> np.ndarray:
        """Signal-to-noise of a PSF fit, from the flux within 0.67 FWHM of the centre.

        That aperture holds 71% of a Gaussian's flux and gives 0.9 times the SNR of a
        PSF fit (the SNR a centroid's error scales with); at least 1.
        """
        r = 0.67 * max(float(fwhm), 1.0)
        gain = None if not np.isfinite(self.gain) else self.gain
        flux, err, _ = sep.sum_circle(self.data, x, y, r, err=self.rms, gain=gain,
                                      mask=self.bad_u8, subpix=5)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.asarray(flux, np.float64) / np.asarray(err, np.float64) / 0.9
        return np.clip(np.nan_to_num(snr, nan=1.0), 1.0, None)

    def compact_fwhm(self, objects: np.ndarray, fwhm: np.ndarray, n: int = 25) -> float | None:
        """The PSF FWHM from the stack of the most compact objects, each normalised.

        On a field of galaxies the brightest objects are galaxies, and
        :meth:`psf_fwhm` measures them; the point sources are the narrowest objects,
        often faint. The ``n`` narrowest (by half-light radius) of the clean objects
        detected at 10 sigma or more and no narrower than :data:`MIN_PSF_FWHM` (hot
        pixels, cosmic rays) are stacked with equal weights and fitted with a Gaussian.
        None when fewer than 5 qualify or the fit fails.
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = objects["flux"] / (self.rms * np.sqrt(np.maximum(objects["npix"], 1)))
        clean = ((objects["flag"] & ~np.int64(sep.OBJ_MERGED)) == 0) & np.isfinite(fwhm)
        ok = clean & (snr >= 10.0) & (fwhm >= MIN_PSF_FWHM)
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(fwhm[idx], kind="stable")][:n]
        if idx.size < 5:
            return None
        return self.psf_fwhm(objects[idx], n=n, normalise=True, select=False)

    def psf_fwhm(self, objects: np.ndarray, n: int = 20, *, normalise: bool = False,
                 select: bool = True) -> float | None:
        """The image's PSF FWHM, from a Gaussian fitted to the stack of bright objects.

        The half-light radii of faint objects measure their cores only (an isophotal
        flux misses the wings); a fit to the sum of the ``n`` brightest unflagged
        objects, centred to the nearest pixel, does not. None when there are fewer
        than 3 such objects or the fit is not a compact star.
        """
        ok = objects
        if select:
            ok = objects[(objects["flag"] == 0) & np.isfinite(objects["flux"])]
            ok = ok[np.argsort(-ok["flux"], kind="stable")][:n]
        ny, nx = self.shape
        r = 8
        ix, iy = np.rint(ok["x"]).astype(np.int64), np.rint(ok["y"]).astype(np.int64)
        inside = (ix >= r) & (ix < nx - r) & (iy >= r) & (iy < ny - r)
        ix, iy = ix[inside], iy[inside]
        if ix.size < 3:
            return None
        off = np.arange(-r, r + 1)
        stamps = self.data[iy[:, None, None] + off[None, :, None],
                           ix[:, None, None] + off[None, None, :]].astype(np.float64)
        if normalise:
            # A stamp whose sky-subtracted sum is not positive (a faint object on a
            # dip of the sky) cannot be normalised: divided by its sum, it would be
            # the whole stack, and the fit arbitrary.
            sums = stamps.sum(axis=(1, 2))
            stamps = stamps[sums > 0] / sums[sums > 0][:, None, None]
            if stamps.shape[0] < 3:
                return None
        stack = stamps.sum(axis=0)
        yy, xx = np.meshgrid(off, off, indexing="ij")

        start = [max(float(stack.max()), 1e-9), 0.0, 0.0, 1.3, 0.0]
        fit = fit_gaussian(stack, xx, yy, start, [0, -2, -2, 0.4, -np.inf],
                           [np.inf, 2, 2, r / 2.0, np.inf])
        if fit is None:
            return None
        s = float(fit[3])
        if not 0.4 < s < r / 2.0 - 1e-3:
            return None
        # Centres rounded to the pixel add a uniform offset: 1/12 px^2 of variance.
        return 2.3548 * float(np.sqrt(max(s * s - 1.0 / 12.0, 0.16)))


def _edge_bias(x: np.ndarray, y: np.ndarray, window_sigma: np.ndarray,
               shape: tuple[int, int]) -> np.ndarray:
    """How far the image's edge pulls a centroid inwards: a truncated Gaussian's shift.

    A Gaussian of width ``s`` cut at a distance ``d`` from its centre has its centroid
    shifted by ``s * phi(d / s) / Phi(d / s)`` (the mean of a truncated normal
    distribution): 0.4 s at d = 0.7 s, 1e-3 s at d = 3.5 s. Added to a centroid's
    uncertainty, it keeps a bright star cut by the edge (a centroid good for matching)
    from pinning the fit.
    """
    ny, nx = shape
    d = np.minimum(np.minimum(x + 0.5, nx - 0.5 - x), np.minimum(y + 0.5, ny - 0.5 - y))
    a = np.clip(d, 0.0, None) / np.maximum(window_sigma, 1e-6)
    # the standard normal's pdf over its cdf, in logs (scipy.stats.norm's logpdf and
    # logcdf, without importing scipy.stats: 0.4 s at start-up)
    log_pdf = -a**2 / 2.0 - _LOG_SQRT_2PI
    return window_sigma * np.exp(log_pdf - log_ndtr(a))


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
    half-light radius (for a Gaussian PSF, FWHM = 2 * r_half); an extended object
    (wider than :data:`EXTENDED` times the PSF of the most compact objects) is centred
    on its core, within a PSF-sized window, with the uncertainty of that core.

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
    pixels = _Pixels(image, mask)
    return pixels.catalog(pixels.objects(sep_thresh, minarea, deblend_cont))


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
    locus, the :data:`LOCUS_PERCENTILE` th percentile of the FWHMs of the detections
    no narrower than ``min_fwhm`` (hot pixels, cosmic rays: static artefacts must not
    capture the match); objects closer than
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
        # wider); hot pixels and cosmic rays are much narrower than it. On a field of
        # galaxies the bright detections are galaxies and the point sources faint: the
        # locus is sought among all the detections no narrower than ``min_fwhm``.
        sample = fwhm[known & keep & (fwhm >= min_fwhm)]
        ref = np.percentile(sample, LOCUS_PERCENTILE) if sample.size else np.nan
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
    return keep_brightest(cat.take(keep), n_det)


def keep_brightest(cat: Catalog, n_det: float | int | None) -> Catalog:
    """The ``n_det`` brightest: a number >= 1, a fraction < 1, or None (all).

    The last step of :func:`filter_catalog`.
    """
    if n_det is None:
        return cat
    n = int(round(n_det * len(cat))) if 0 < n_det < 1 else int(n_det)
    return cat.brightest(max(n, 0))
