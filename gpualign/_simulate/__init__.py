"""Star-field simulator with known truth, for tests, the demo and benchmarks.

The truth is a :class:`TrueMapping` from TEMPLATE pixel coordinates to SOURCE
pixel coordinates (the direction a warp needs, like ``gpualign`` transforms):
a 2x3 affine ``matrix`` followed by a radial distortion about the source centre
``c``::

    s_lin = matrix[:, :2] @ (x, y) + matrix[:, 2]
    r = |s_lin - c| / rnorm
    s = c + (s_lin - c) * (1 + k1 * r**2 + k2 * r**4)

Coordinates are 0-based pixel centres, x = column, y = row, ``image[y, x]``.

:func:`simulate_pair` renders a template and a source image of the same sky
(pixel-integrated Gaussian or Moffat stars, sky, Poisson and read noise, optional
static hot pixels, bad columns and NaN regions).  :func:`position_errors` is the
accuracy metric used everywhere: where a star lands, in template pixels, after
the source is resampled with a fitted mapping.
"""

from gpualign._simulate._mapping import TrueMapping, make_mapping
from gpualign._simulate._render import SimPair, simulate_pair
from gpualign._simulate._score import (
    bright_overlap_stars,
    error_stats,
    position_errors,
    warp_real_image,
)

__all__ = [
    "SimPair",
    "TrueMapping",
    "bright_overlap_stars",
    "error_stats",
    "make_mapping",
    "position_errors",
    "simulate_pair",
    "warp_real_image",
]
