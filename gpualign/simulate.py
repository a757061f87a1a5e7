"""Simulated star fields and real images with a known mapping, and how accuracy is scored.

The public face of the simulator the tests, the demo and the benchmarks use.

The truth is a :class:`TrueMapping` from TEMPLATE pixel coordinates to SOURCE pixel
coordinates (the direction a warp needs, like gpualign's own transforms): a 2x3 affine
``matrix`` followed by a radial distortion about the source centre ``c``::

    s_lin = matrix[:, :2] @ (x, y) + matrix[:, 2]
    r = |s_lin - c| / rnorm
    s = c + (s_lin - c) * (1 + k1 * r**2 + k2 * r**4)

Coordinates are 0-based pixel centres, x = column, y = row, ``image[y, x]``.

- :func:`make_mapping` builds a mapping from a shift, rotation, scale, flip, shear and
  the displacement of the source corners by the distortion.
- :func:`simulate_pair` renders a template and a source image of the same sky
  (pixel-integrated Gaussian or Moffat stars, sky, Poisson and read noise, optional
  static hot pixels, bad columns and NaN regions) as a :class:`SimPair`.
- :func:`warp_real_image` puts a real image through a mapping, so a real field gets a
  known truth.
- :func:`position_errors` is the accuracy metric: where a star lands, in template
  pixels, after the source is resampled with a fitted mapping; :func:`error_stats`
  summarises it and :func:`bright_overlap_stars` picks the stars to score.

Examples
--------
>>> from gpualign.simulate import make_mapping, simulate_pair
>>> m = make_mapping(source_shape=(256, 256), template_shape=(256, 256),
...                  rotation_deg=10.0, corner_distortion_px=2.0)
>>> pair = simulate_pair((256, 256), mapping=m, n_stars=200, seed=3)
>>> pair.source.shape
(256, 256)
"""

from gpualign._simulate import (
    SimPair,
    TrueMapping,
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
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
