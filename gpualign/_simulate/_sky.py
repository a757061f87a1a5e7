"""Two images of one simulated sky through two TAN WCSs, for the WCS-prior tests.

:func:`sky_pair` renders a template and a source from one sky catalogue, each at its own
pixel scale, seeing and rotation, so the truth (template px -> source px) is what the
two WCSs say; :func:`wrong_wcs` spoils a WCS as a user's header can be wrong. Imported
by the tests and ``benchmarks/bench_wcs_prior.py`` from this module (it loads
astropy.wcs, which :mod:`gpualign._simulate` itself does not need).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from gpualign._simulate._render import _add_noise, _render_stars

__all__ = ["CRVAL", "SkyPair", "sky_pair", "tan_wcs", "wrong_wcs"]

#: Galactic-bulge-like pointing of the simulated fields (deg).
CRVAL = (266.40, -28.94)


def tan_wcs(shape: tuple[int, int], scale_arcsec: float, crval=CRVAL, rotation_deg=0.0,
            flip: bool = False) -> WCS:
    """A TAN WCS centred on the image (north up, east left unless rotated/flipped)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    t = np.deg2rad(rotation_deg)
    cd = scale_arcsec / 3600.0 * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    if flip:
        cd[:, 0] *= -1.0
    w.wcs.cd = cd
    w.wcs.set()
    return w


@dataclass
class SkyPair:
    """Two images of one sky, their true WCSs and the true mapping."""

    template: np.ndarray
    source: np.ndarray
    template_wcs: WCS
    source_wcs: WCS
    sky_xy: np.ndarray  # template px of every sky star
    flux: np.ndarray

    def truth(self, x, y):
        """Template px -> source px through the true WCSs."""
        sky = self.template_wcs.pixel_to_world(np.asarray(x, float), np.asarray(y, float))
        return self.source_wcs.world_to_pixel(sky)

    def bright_common(self, n: int = 40) -> np.ndarray:
        """Template px of the ``n`` brightest stars well inside both images."""
        sx, sy = self.truth(*self.sky_xy.T)
        ny, nx = self.template.shape
        sny, snx = self.source.shape
        ok = ((self.sky_xy[:, 0] > 10) & (self.sky_xy[:, 0] < nx - 11)
              & (self.sky_xy[:, 1] > 10) & (self.sky_xy[:, 1] < ny - 11)
              & (sx > 3) & (sx < snx - 4) & (sy > 3) & (sy < sny - 4))
        idx = np.flatnonzero(ok)
        return self.sky_xy[idx[np.argsort(-self.flux[idx])][:n]]


def sky_pair(template_shape, template_scale, source_shape, source_scale, *, seed: int,
             offset_arcsec=(0.0, 0.0), rotation_deg=0.0, n_per_arcmin2=40.0,
             fwhm_arcsec=(1.0, 9.0), flux_range=(300.0, 1e6), index=1.75,
             sky=200.0) -> SkyPair:
    """Render a template and a source of one simulated sky through two TAN WCSs.

    The sky catalogue (``n_per_arcmin2`` stars per arcmin^2 between the fluxes of
    ``flux_range``, dN/dF ~ F^-index) covers both footprints; each image is rendered at its
    own pixel scale and seeing (``fwhm_arcsec``), with the sky per pixel scaled with the
    pixel's area (``sky`` ADU in the template), Poisson and read noise. The source's
    centre is ``offset_arcsec`` (east, north) from the template's; its WCS is rotated by
    ``rotation_deg``.
    """
    rng_sky, rng_t, rng_s = (np.random.default_rng(s)
                             for s in np.random.SeedSequence(seed).spawn(3))
    tw = tan_wcs(template_shape, template_scale)
    ra0, dec0 = CRVAL
    dra = offset_arcsec[0] / 3600.0 / np.cos(np.deg2rad(dec0))
    sw = tan_wcs(source_shape, source_scale, crval=(ra0 + dra, dec0 + offset_arcsec[1] / 3600.0),
                 rotation_deg=rotation_deg)
    # Sky stars uniform over the union of the footprints, in template pixels.
    ny, nx = source_shape
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
    tx, ty = tw.world_to_pixel(sw.pixel_to_world(*corners.T))
    pad = 20.0 * source_scale / template_scale
    lo = np.minimum([tx.min(), ty.min()], -0.5) - pad
    hi = np.maximum([tx.max(), ty.max()], [template_shape[1], template_shape[0]]) + pad
    area = np.prod(hi - lo) * (template_scale / 60.0) ** 2
    n = int(round(n_per_arcmin2 * area))
    xy = rng_sky.uniform(lo, hi, size=(n, 2))
    fmin, fmax = flux_range
    a = 1.0 - index
    flux = (fmin**a + rng_sky.random(n) * (fmax**a - fmin**a)) ** (1.0 / a)
    images = []
    for w, shape, scale, fwhm, rng in ((tw, template_shape, template_scale, fwhm_arcsec[0],
                                         rng_t),
                                        (sw, source_shape, source_scale, fwhm_arcsec[1],
                                         rng_s)):
        px, py = w.world_to_pixel(tw.pixel_to_world(*xy.T))
        img = _render_stars(shape, np.column_stack([px, py]), flux, fwhm / scale)
        img += sky * (scale / template_scale) ** 2
        images.append(_add_noise(img, 2.0, 5.0, rng))
    return SkyPair(images[0], images[1], tw, sw, xy, flux)


def wrong_wcs(w: WCS, kind: str) -> WCS:
    """A copy of ``w`` that is wrong as ``kind`` says.

    ``"3arcmin"`` or ``"2deg"`` (CRVAL moved north), ``"rot30"`` (rotated 30 deg),
    ``"mirror"`` (east and west swapped).
    """
    out = w.deepcopy()
    if kind == "3arcmin":
        out.wcs.crval = [w.wcs.crval[0], w.wcs.crval[1] + 3.0 / 60.0]
    elif kind == "2deg":
        out.wcs.crval = [w.wcs.crval[0], w.wcs.crval[1] + 2.0]
    elif kind == "rot30":
        t = np.deg2rad(30.0)
        out.wcs.cd = w.wcs.cd @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    elif kind == "mirror":
        out.wcs.cd = w.wcs.cd @ np.diag([-1.0, 1.0])
    else:
        raise ValueError(kind)
    out.wcs.set()
    return out
