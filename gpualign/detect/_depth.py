"""Automatic detection depth: going deeper when an image gives too few usable stars.

(And :func:`detect_many`, which detects several images at once, each with its depth.)

A faint field can hold dozens of stars that a 5-sigma threshold does not reach. When
the user's threshold gives fewer than :data:`DEPTH_TARGET` usable stars (what
:func:`~gpualign.detect.filter_catalog` keeps with the frame's settings), the image is
extracted again, with the background already measured, down a ladder of thresholds
(:data:`DEPTH_LADDER`, those below the user's), the deepest first:

* if the deepest rung (about 1.5 sigma with sep's matched filter, where noise peaks
  start to appear) adds no usable star, the image has no fainter stars and the user's
  catalogue stands, bit for bit;
* otherwise the rungs are tried from the top and the first that reaches the target is
  used for matching (the deepest when none does); when that rung is not the deepest,
  the deepest catalogue travels with it for the final fit, which, once the mapping is
  known, can use stars too faint to match by quads.

Safety comes from the quad verification (matches far above the chance rate at the
field's star density), not from the threshold. Deeper catalogues measure every object
with one centroid window, the image's PSF (the FWHM of faint objects' cores is too
small), their uncertainties from the flux in that window (at least 0.05 px, so that a
few bright stars cannot pin the fit), and leave out objects cut by the image's edge.

Every image is detected on its own (never depending on the other image), so a frame
gives the same catalogue whether its template was detected with it, before it, or
once for a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gpualign._errors import TooFewStars
from gpualign._system import fork_workers, forked_pool, usable_cores
from gpualign.detect._catalog import Catalog
from gpualign.detect._sep import _Pixels, detect, filter_catalog
from gpualign.detect._strips import detect_strips

__all__ = ["DEPTH_LADDER", "DEPTH_TARGET", "RETRY_THRESH", "Depth", "DetectedCatalog",
           "detect_auto", "detect_many", "detect_retry", "detect_strips_auto"]

#: Thresholds (sigma) tried below the user's, deepest last: about 1.5 sigma is where a
#: matched-filter extraction (sep's default 3x3 kernel, 5 pixels) starts to find noise.
DEPTH_LADDER = (4.0, 3.0, 2.5, 2.0, 1.5)
#: Usable stars an image should give before matching: the quads' brightest set
#: (``n_quad_det``, 20), and with half of them in common still more than the 6
#: matches a quad candidate must verify (``min_n_match``).
DEPTH_TARGET = 20
#: Threshold (sigma) of the second try when blind matching finds no match with the
#: user's catalogues (``gpualign.pipeline.solve_frame``): a thin overlap of a sparse
#: field holds about 50 stars of which 5 sigma leaves 6-9 usable in both images, too
#: few for a quad and its verification; 3 sigma roughly doubles them
#: (``benchmarks/results/overlap_scale.md``).
RETRY_THRESH = 3.0


@dataclass(frozen=True)
class Depth:
    """When and how far to go deeper: the frame's filter settings and the ladder.

    Attributes
    ----------
    min_fwhm, bad_flag_bits, min_sep :
        The filter that decides which detections are usable (as in
        :func:`~gpualign.detect.filter_catalog`).
    target : int
        Usable stars wanted.
    ladder : tuple of float
        Thresholds tried (only those below the user's); empty: never deeper.
    """

    min_fwhm: float = 1.0
    bad_flag_bits: int = 0
    min_sep: float | None = 10.0
    target: int = DEPTH_TARGET
    ladder: tuple[float, ...] = DEPTH_LADDER

    @property
    def key(self) -> tuple[float, int, float | None]:
        """The filter's settings (``min_fwhm``, ``bad_flag_bits``, ``min_sep``)."""
        return (self.min_fwhm, self.bad_flag_bits, self.min_sep)

    def filter(self, cat: Catalog) -> Catalog:
        """The detections of ``cat`` the frame's filter keeps."""
        return filter_catalog(cat, min_fwhm=self.min_fwhm, bad_flag_bits=self.bad_flag_bits,
                              min_sep=self.min_sep)

    def usable(self, cat: Catalog) -> int:
        """How many detections of ``cat`` the frame's filter keeps."""
        return len(self.filter(cat))


@dataclass(frozen=True)
class DetectedCatalog(Catalog):
    """A catalogue detected from pixels, with the depth it was detected at.

    Attributes
    ----------
    thresh : float
        Threshold (sigma) of the catalogue.
    deep : Catalog or None
        A deeper catalogue of the same image for the final fit (automatic depth
        stopped above its deepest rung), else None.
    steps : tuple of (float, int)
        Each extraction, in order: threshold and usable stars.
    filtered : (key, Catalog) or None
        The usable detections as :meth:`Depth.filter` with settings ``key`` found them,
        kept so that the solve does not filter the same catalogue again.
    """

    thresh: float = 5.0
    deep: Catalog | None = None
    steps: tuple[tuple[float, int], ...] = ()
    filtered: tuple[tuple[float, int, float | None], Catalog] | None = field(
        default=None, repr=False, compare=False)

    @classmethod
    def of(cls, cat: Catalog, thresh: float, deep: Catalog | None = None,
           steps: tuple[tuple[float, int], ...] = (),
           filtered: tuple[tuple[float, int, float | None], Catalog] | None = None,
           ) -> DetectedCatalog:
        """``cat`` with its depth."""
        return cls(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, cat.shape,
                   float(thresh), deep, steps, filtered)

    def with_shape(self, shape: tuple[int, int]) -> DetectedCatalog:
        """The same detections, said to belong to an image of ``shape``."""
        filtered = self.filtered
        if filtered is not None:
            c = filtered[1]
            filtered = (filtered[0], Catalog(c.x, c.y, c.flux, c.fwhm, c.flag, c.sigma, shape))
        return DetectedCatalog(self.x, self.y, self.flux, self.fwhm, self.flag, self.sigma,
                               shape, self.thresh, self.deep, self.steps, filtered)


def _ladder(first: Catalog, sep_thresh: float, depth: Depth,
            detect_at: Callable[[float], Catalog]) -> DetectedCatalog:
    """The catalogue to match with, and the deeper one for the fit (see the module)."""
    f0 = depth.filter(first)
    steps = [(float(sep_thresh), len(f0))]
    rungs = sorted((float(t) for t in depth.ladder if t < sep_thresh), reverse=True)
    if len(f0) >= depth.target or not rungs:
        return DetectedCatalog.of(first, sep_thresh, steps=tuple(steps),
                                  filtered=(depth.key, f0))
    floor = detect_at(rungs[-1])
    f_floor = depth.filter(floor)
    steps.append((rungs[-1], len(f_floor)))
    if len(f_floor) <= len(f0):  # nothing fainter to find: the user's catalogue stands
        return DetectedCatalog.of(first, sep_thresh, steps=tuple(steps),
                                  filtered=(depth.key, f0))
    for t in rungs[:-1]:
        cat = detect_at(t)
        f = depth.filter(cat)
        steps.append((t, len(f)))
        if len(f) >= depth.target:
            deep = floor if len(f_floor) > len(f) else None
            return DetectedCatalog.of(cat, t, deep, tuple(steps), (depth.key, f))
    return DetectedCatalog.of(floor, rungs[-1], steps=tuple(steps),
                              filtered=(depth.key, f_floor))


def detect_auto(image: np.ndarray, *, sep_thresh: float = 5.0,
                mask: np.ndarray | None = None, depth: Depth | None = None
                ) -> DetectedCatalog:
    """:func:`~gpualign.detect.detect`, deeper when too few stars are usable.

    Parameters
    ----------
    image : ndarray
        2-D image (never modified).
    sep_thresh : float
        The user's threshold (sigma); its catalogue is :func:`detect`'s, bit for bit.
    mask : ndarray of bool, optional
        Pixels to ignore.
    depth : Depth, optional
        When and how far to go deeper; None: never.

    Returns
    -------
    DetectedCatalog
    """
    pixels = _Pixels(image, mask)
    first = pixels.catalog(pixels.objects(sep_thresh))
    if depth is None:
        return DetectedCatalog.of(first, sep_thresh)
    window: list[float | None] = []

    def detect_at(thresh: float) -> Catalog:
        objects = pixels.objects(thresh)
        if not window:  # the deepest rung comes first: the most stars to measure it on
            window.append(pixels.psf_fwhm(objects))
        return pixels.catalog(objects, window[0])

    return _ladder(first, sep_thresh, depth, detect_at)


def detect_strips_auto(image: np.ndarray, *, sep_thresh: float = 5.0,
                       mask: np.ndarray | None = None, depth: Depth | None = None
                       ) -> DetectedCatalog:
    """:func:`~gpualign.detect.detect_strips`, deeper when too few stars are usable.

    Each rung detects the strips again (a mosaic's pixels are never copied whole).
    """

    def detect_at(thresh: float) -> Catalog:
        try:
            return detect_strips(image, sep_thresh=thresh, mask=mask)
        except TooFewStars:
            if depth is None or not depth.ladder:
                raise
            empty = np.zeros(0)
            return Catalog(empty, empty, empty, empty, np.zeros(0, np.int64), empty,
                           (int(image.shape[0]), int(image.shape[1])))

    first = detect_at(sep_thresh)
    if depth is None:
        return DetectedCatalog.of(first, sep_thresh)
    return _ladder(first, sep_thresh, depth, detect_at)


_FORKED_IMAGES: list[tuple[np.ndarray, np.ndarray | None]] = []
PARALLEL_MIN_PIXELS = 2_000_000


def _detect_one(image: np.ndarray, mask: np.ndarray | None, sep_thresh: float,
                depth: Depth | None) -> Catalog:
    if depth is None:
        return detect(image, sep_thresh=sep_thresh, mask=mask)
    return detect_auto(image, sep_thresh=sep_thresh, mask=mask, depth=depth)


def _detect_forked(index: int, sep_thresh: float, depth: Depth | None) -> Catalog:
    image, mask = _FORKED_IMAGES[index]
    return _detect_one(image, mask, sep_thresh, depth)


def detect_many(
    images: list[tuple[np.ndarray, np.ndarray | None]], *, sep_thresh: float = 5.0,
    depth: Depth | None = None,
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
    depth : Depth, optional
        Automatic depth (:func:`gpualign.detect.detect_auto`): each image gives a
        DetectedCatalog, deeper where its own stars are too few.

    Returns
    -------
    list of Catalog
    """
    big = [i for i, (im, _) in enumerate(images[:-1]) if im.size >= PARALLEL_MIN_PIXELS]
    workers = fork_workers(usable_cores() - 1, len(big))  # this process detects too
    if not workers:
        return [_detect_one(im, m, sep_thresh, depth) for im, m in images]
    _FORKED_IMAGES[:] = images
    try:
        with forked_pool(workers) as ex:
            futures = {i: ex.submit(_detect_forked, i, sep_thresh, depth) for i in big}
            out = {}
            for i, (im, m) in enumerate(images):
                if i not in futures:
                    out[i] = _detect_one(im, m, sep_thresh, depth)
            for i, fut in futures.items():
                out[i] = fut.result()
    finally:
        _FORKED_IMAGES.clear()
    return [out[i] for i in range(len(images))]


def detect_retry(image: np.ndarray, mask: np.ndarray | None = None) -> DetectedCatalog:
    """The image detected again at :data:`RETRY_THRESH`, measured as the user's catalogue.

    For the second try of a blind match that found nothing (a thin overlap holding
    too few of the stars the user's threshold keeps). Each object is measured as at
    any threshold (its own centroid window and uncertainty), so the stars both tries
    share carry the same positions and weights.
    """
    return DetectedCatalog.of(detect(image, sep_thresh=RETRY_THRESH, mask=mask), RETRY_THRESH)
