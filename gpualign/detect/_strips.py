"""Detection of images too big to copy whole: sep on overlapping row strips.

:func:`gpualign.detect.detect` works on a private float32 copy of the image (sep
subtracts the background in place); for a 30000^2 source that copy alone is 3.6 GB
next to the image itself. Here the image is detected in strips of ``strip`` rows,
each with ``overlap`` rows of context on both sides (the background mesh and the
objects crossing a boundary), and an object is kept by the one strip whose core
holds its centre. Positions are shifted to image rows; the result is one Catalog,
brightest first. Each strip has its own background and noise level, which for
registration is as good as (and on a varying sky better than) one global level.

sep holds the GIL, so on a machine with several cores the strips are detected in
forked worker processes, which read the image the parent holds (copy-on-write, never
written) and each copy only their strip: a mosaic is detected on every core with one
strip copy per core instead of one whole-image copy. The catalogue does not depend on
the number of processes.
"""

from __future__ import annotations

import numpy as np

from gpualign._errors import TooFewStars
from gpualign._system import fork_workers, forked_pool, usable_cores
from gpualign.detect._catalog import Catalog
from gpualign.detect._sep import detect

__all__ = ["detect_strips", "STRIP_DETECT_PIXELS"]

#: Images of more than this many pixels are detected in strips.
STRIP_DETECT_PIXELS = 1 << 28
#: Pixels of one strip's core (1024 rows of a 16384-pixel-wide mosaic); with the
#: overlap, each worker's private copy is about this many float32 pixels.
STRIP_PIXELS = 1 << 24

_FORKED: list = []  # (image, mask) for forked strip workers, set only around a pool


def _strip(image: np.ndarray, mask: np.ndarray | None, c0: int, c1: int, overlap: int,
           sep_thresh: float) -> Catalog | None:
    """The detections whose centre lies in rows ``c0:c1``, in image rows (or None)."""
    ny = image.shape[0]
    a, b = max(0, c0 - overlap), min(ny, c1 + overlap)
    try:
        cat = detect(image[a:b], sep_thresh=sep_thresh,
                     mask=None if mask is None else mask[a:b])
    except TooFewStars:
        return None
    y = cat.y + a
    keep = (y >= c0 - 0.5) & (y < c1 - 0.5) if c1 < ny else (y >= c0 - 0.5)
    return Catalog(cat.x[keep], y[keep], cat.flux[keep], cat.fwhm[keep], cat.flag[keep],
                   cat.sigma[keep], None)


def _forked_strip(job: tuple[int, int, int, float]) -> Catalog | None:
    image, mask = _FORKED[0]
    return _strip(image, mask, *job)


def _processes(requested: int | None, n_jobs: int) -> int:
    """Worker processes for the strips (1: this process alone).

    One where forking is unsafe or pointless (:func:`gpualign._system.fork_workers`).
    """
    n = usable_cores() if requested is None else int(requested)
    if n < 2 or n_jobs < 2:
        return 1
    return fork_workers(n, n_jobs) or 1


def detect_strips(image: np.ndarray, *, sep_thresh: float = 5.0,
                  mask: np.ndarray | None = None, strip: int | None = None,
                  overlap: int = 128, processes: int | None = None) -> Catalog:
    """Detect sources in row strips of ``image`` (bounded extra memory).

    Parameters
    ----------
    image : ndarray
        2-D image (never modified).
    sep_thresh : float
        Detection threshold in units of each strip's background RMS.
    mask : ndarray of bool, optional
        Pixels to ignore.
    strip : int, optional
        Rows per strip (the core; at least ``2 * overlap``). Default: about
        :data:`STRIP_PIXELS` pixels.
    overlap : int
        Rows of context added on each side of a strip.
    processes : int, optional
        Worker processes (forked; default: the usable cores). 1 detects in this
        process. The result is the same either way.

    Returns
    -------
    Catalog
    """
    ny, nx = image.shape
    if strip is None:
        strip = STRIP_PIXELS // max(int(nx), 1)
    strip = max(int(strip), 2 * int(overlap), 16)
    jobs = [(c0, min(c0 + strip, ny), int(overlap), float(sep_thresh))
            for c0 in range(0, ny, strip)]
    n = _processes(processes, len(jobs))
    if n == 1:
        found = [_strip(image, mask, *job) for job in jobs]
    else:
        _FORKED[:] = [(image, mask)]
        try:
            with forked_pool(n) as ex:
                found = list(ex.map(_forked_strip, jobs))
        finally:
            _FORKED.clear()
    parts = [p for p in found if p is not None]
    if not parts:
        raise TooFewStars("no sources found in the image",
                          hint="lower sep_thresh, or check the image")
    cat = Catalog(*(np.concatenate([getattr(p, k) for p in parts])
                    for k in ("x", "y", "flux", "fwhm", "flag", "sigma")),
                  tuple(int(v) for v in image.shape))
    return cat.sorted_by_flux()
