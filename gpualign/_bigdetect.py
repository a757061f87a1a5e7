"""Detection of images too big to copy whole: sep on overlapping row strips.

:func:`gpualign._detect.detect` works on a private float32 copy of the image (sep
subtracts the background in place); for a 30000^2 source that copy alone is 3.6 GB
next to the image itself. Here the image is detected in strips of ``strip`` rows,
each with ``overlap`` rows of context on both sides (the background mesh and the
objects crossing a boundary), and an object is kept by the one strip whose core
holds its centre. Positions are shifted to image rows; the result is one Catalog,
brightest first. Each strip has its own background and noise level, which for
registration is as good as (and on a varying sky better than) one global level.
"""

from __future__ import annotations

import numpy as np

from ._catalog import Catalog
from ._detect import detect
from ._errors import TooFewStars

__all__ = ["detect_strips", "STRIP_DETECT_PIXELS"]

#: Images of more than this many pixels are detected in strips by the CLI.
STRIP_DETECT_PIXELS = 1 << 28


def detect_strips(image: np.ndarray, *, sep_thresh: float = 5.0,
                  mask: np.ndarray | None = None, strip: int = 2048,
                  overlap: int = 128) -> Catalog:
    """Detect sources in row strips of ``image`` (bounded extra memory).

    Parameters
    ----------
    image : ndarray
        2-D image (never modified).
    sep_thresh : float
        Detection threshold in units of each strip's background RMS.
    mask : ndarray of bool, optional
        Pixels to ignore.
    strip : int
        Rows per strip (the core; at least ``2 * overlap``).
    overlap : int
        Rows of context added on each side of a strip.

    Returns
    -------
    Catalog
    """
    ny = image.shape[0]
    strip = max(int(strip), 2 * int(overlap), 16)
    parts: list[Catalog] = []
    for c0 in range(0, ny, strip):
        c1 = min(c0 + strip, ny)
        a, b = max(0, c0 - overlap), min(ny, c1 + overlap)
        try:
            cat = detect(image[a:b], sep_thresh=sep_thresh,
                         mask=None if mask is None else mask[a:b])
        except TooFewStars:
            continue
        y = cat.y + a
        keep = (y >= c0 - 0.5) & (y < c1 - 0.5) if c1 < ny else (y >= c0 - 0.5)
        parts.append(Catalog(cat.x[keep], y[keep], cat.flux[keep], cat.fwhm[keep],
                             cat.flag[keep], cat.sigma[keep], None))
    if not parts:
        raise TooFewStars("no sources found in the image",
                          hint="lower sep_thresh, or check the image")
    cat = Catalog(*(np.concatenate([getattr(p, k) for p in parts])
                    for k in ("x", "y", "flux", "fwhm", "flag", "sigma")),
                  tuple(int(v) for v in image.shape))
    return cat.sorted_by_flux()
