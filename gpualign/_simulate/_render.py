"""Rendering a simulated pair: stars, sky, noise, hot pixels, bad columns, NaN regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import erf

from gpualign._simulate._mapping import Shape, TrueMapping, make_mapping

__all__ = ["SimPair", "simulate_pair"]


@dataclass
class SimPair:
    """A simulated template/source pair with its truth.

    Attributes
    ----------
    template, source : ndarray
        The two images.
    mapping : TrueMapping
        True template -> source mapping.
    template_xy : ndarray, shape (N, 2)
        Positions of all sky stars in the template frame.
    flux : ndarray, shape (N,)
        Star fluxes (ADU, the same in both images).
    in_template, in_source : ndarray of bool, shape (N,)
        Whether the star centre lies inside each image.
    hot_pixel_xy : ndarray, shape (K, 2)
        Detector positions of the hot pixels (identical in both images).
    source_xy : ndarray, shape (N, 2)
        ``mapping(template_xy)``.
    bad_column_x : ndarray
        x of the elevated columns (identical in both images).
    fwhm_template, fwhm_source : float
        PSF FWHM in each image's own pixels.

    """

    template: np.ndarray
    source: np.ndarray
    mapping: TrueMapping
    template_xy: np.ndarray
    flux: np.ndarray
    in_template: np.ndarray
    in_source: np.ndarray
    hot_pixel_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    source_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    bad_column_x: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    fwhm_template: float = 3.0
    fwhm_source: float = 3.0


_SIG_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _inside(xy: np.ndarray, shape: Shape, margin: float = 0.0) -> np.ndarray:
    h, w = shape
    return (
        (xy[:, 0] >= -0.5 + margin)
        & (xy[:, 0] <= w - 0.5 - margin)
        & (xy[:, 1] >= -0.5 + margin)
        & (xy[:, 1] <= h - 0.5 - margin)
    )


def _render_stars(
    shape: Shape,
    xy: np.ndarray,
    flux: np.ndarray,
    fwhm: float,
    psf: str = "gaussian",
    moffat_beta: float = 3.0,
    chunk: int = 4000,
) -> np.ndarray:
    """Return a float64 image with the stars added (pixel-integrated PSF)."""
    h, w = shape
    img = np.zeros(h * w, dtype=np.float64)
    rad = int(np.ceil(4.0 * fwhm))
    keep = _inside(xy, shape, margin=-(rad + 1.0))
    xy, flux = xy[keep], flux[keep]
    offs = np.arange(-rad, rad + 1)
    sig = fwhm * _SIG_PER_FWHM
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / moffat_beta) - 1.0))
    for i in range(0, len(xy), chunk):
        x, y, f = xy[i : i + chunk, 0], xy[i : i + chunk, 1], flux[i : i + chunk]
        ix = np.rint(x).astype(np.int64)[:, None] + offs  # (n, k) pixel columns
        iy = np.rint(y).astype(np.int64)[:, None] + offs
        if psf == "gaussian":
            s = sig * np.sqrt(2.0)
            ex = 0.5 * (erf((ix + 0.5 - x[:, None]) / s) - erf((ix - 0.5 - x[:, None]) / s))
            ey = 0.5 * (erf((iy + 0.5 - y[:, None]) / s) - erf((iy - 0.5 - y[:, None]) / s))
            vals = f[:, None, None] * ey[:, :, None] * ex[:, None, :]
        elif psf == "moffat":
            sub = (np.arange(3) - 1.0) / 3.0  # 3x3 sub-pixel midpoint rule
            ddx = (ix[:, :, None] - x[:, None, None] + sub).reshape(len(x), 1, -1)
            ddy = (iy[:, :, None] - y[:, None, None] + sub).reshape(len(x), -1, 1)
            prof = (1.0 + (ddx**2 + ddy**2) / alpha**2) ** (-moffat_beta)
            prof = prof.reshape(len(x), len(offs), 3, len(offs), 3).mean(axis=(2, 4))
            norm = (moffat_beta - 1.0) / (np.pi * alpha**2)
            vals = f[:, None, None] * norm * prof
        else:
            raise ValueError(f"unknown psf {psf!r}")
        ok = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]
        idx = iy[:, :, None] * w + ix[:, None, :]
        np.add.at(img, idx[ok], vals[ok])
    return img.reshape(h, w)


def _add_noise(
    img: np.ndarray, gain: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Poisson (in electrons) plus Gaussian read noise; returns float32 ADU.

    Pixels expecting more than 100 electrons use the Gaussian approximation of
    the Poisson law (indistinguishable there and several times faster).
    """
    electrons = np.clip(img * gain, 0.0, None).astype(np.float32)
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    noise *= np.sqrt(electrons + np.float32(read_noise) ** 2)
    out = electrons + noise
    low = electrons < 100.0
    if np.any(low):
        lam = electrons[low]
        out[low] = rng.poisson(lam) + read_noise * rng.standard_normal(lam.size)
    out /= np.float32(gain)
    return out


def _source_footprint_in_template(mapping: TrueMapping, shape: Shape) -> np.ndarray:
    """Template-frame points along the source boundary, shape (M, 2)."""
    h, w = shape
    t = np.linspace(0.0, 1.0, 65)
    xs = -0.5 + t * w
    ys = -0.5 + t * h
    bx = np.concatenate([xs, xs, np.full_like(ys, -0.5), np.full_like(ys, w - 0.5)])
    by = np.concatenate([np.full_like(xs, -0.5), np.full_like(xs, h - 0.5), ys, ys])
    x, y = mapping.inverse(bx, by)
    return np.column_stack([x, y])


def _hot_pixels(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    xy = np.column_stack([rng.integers(1, w - 1, n), rng.integers(1, h - 1, n)])
    n_pairs = n // 5  # a few 2-pixel clusters
    nb = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
    extra = xy[:n_pairs] + nb[rng.integers(0, 4, n_pairs)]
    return np.unique(np.vstack([xy, extra]), axis=0)


def _nan_mask(shape: Shape, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Columns and round blobs covering about ``fraction`` of the pixels."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    target = fraction * h * w
    count = 0
    while count < target:
        remaining = target - count
        if rng.random() < 0.5:
            width = int(rng.integers(1, 9))
            length = int(min(h, max(1, remaining // width)))
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h - length + 1))
            mask[y0 : y0 + length, x0 : x0 + width] = True
        else:
            r = min(rng.uniform(0.02, 0.08) * min(h, w), np.sqrt(remaining / np.pi) + 1)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        count = int(mask.sum())
    return mask


def simulate_pair(
    template_shape: Shape = (1024, 1024),
    source_shape: Shape | None = None,
    *,
    mapping: TrueMapping | None = None,
    n_stars: int = 2000,
    fwhm_template: float = 3.0,
    fwhm_source: float = 3.0,
    sky: float = 200.0,
    gain: float = 2.0,
    read_noise: float = 5.0,
    flux_range: tuple[float, float] = (300.0, 3e5),
    power_law_index: float = 2.0,
    psf: str = "gaussian",
    moffat_beta: float = 3.0,
    noise: bool = True,
    n_hot_pixels: int = 0,
    n_bad_columns: int = 0,
    nan_fraction: float = 0.0,
    seed: int = 0,
    dtype: Any = np.float32,
) -> SimPair:
    """Render a template/source image pair of the same star field.

    Stars are uniform on the sky region covering both images (in template
    coordinates: the template plus the inverse-mapped source footprint, padded
    by the PSF stamp radius); the source position of a star is
    ``mapping(template position)``.

    Parameters
    ----------
    template_shape : tuple of int
        ``(height, width)`` of the template.
    source_shape : tuple of int, optional
        ``(height, width)`` of the source; defaults to ``template_shape``.
    mapping : TrueMapping, optional
        Template -> source truth; default identity (about the centres).
    n_stars : int
        Star density, expressed as the number of stars over the template
        area; the whole sky region is filled at that density.
    fwhm_template, fwhm_source : float
        PSF FWHM in each image's own pixels.
    sky : float
        Sky level (ADU) in both images.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    flux_range : tuple of float
        Minimum and maximum total star flux (ADU).
    power_law_index : float
        Flux distribution ``dN/dF ~ F**-power_law_index``.
    psf : {"gaussian", "moffat"}
        PSF profile, integrated over pixels.
    moffat_beta : float
        Moffat beta (when ``psf="moffat"``).
    noise : bool
        Add Poisson and read noise.
    n_hot_pixels : int
        Static hot pixels (plus a few 2-pixel clusters) at the same detector
        positions in both images.
    n_bad_columns : int
        Elevated columns at the same x in both images.
    nan_fraction : float
        Approximate fraction of source pixels set to NaN (columns and blobs).
    seed : int
        Seed; the stars, noise and artefacts use independent streams.
    dtype : numpy dtype
        Output image dtype.

    Returns
    -------
    SimPair
        Images and truth.

    """
    source_shape = tuple(template_shape) if source_shape is None else tuple(source_shape)
    template_shape = tuple(template_shape)
    if mapping is None:
        mapping = make_mapping(source_shape=source_shape, template_shape=template_shape)
    rng_stars, rng_nt, rng_ns, rng_art = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )

    # sky region (template frame) covering both images
    foot = _source_footprint_in_template(mapping, source_shape)
    ht, wt = template_shape
    scale = np.sqrt(abs(mapping.determinant))
    pad = 4.0 * max(fwhm_template, fwhm_source / scale) + 1.0
    x0 = min(-0.5, foot[:, 0].min()) - pad
    x1 = max(wt - 0.5, foot[:, 0].max()) + pad
    y0 = min(-0.5, foot[:, 1].min()) - pad
    y1 = max(ht - 0.5, foot[:, 1].max()) + pad
    n_total = int(round(n_stars * (x1 - x0) * (y1 - y0) / (wt * ht)))
    xy = np.column_stack([rng_stars.uniform(x0, x1, n_total), rng_stars.uniform(y0, y1, n_total)])
    fmin, fmax = flux_range
    u = rng_stars.random(n_total)
    if abs(power_law_index - 1.0) < 1e-12:
        flux = fmin * (fmax / fmin) ** u
    else:
        a = 1.0 - power_law_index
        flux = (fmin**a + u * (fmax**a - fmin**a)) ** (1.0 / a)
    sx, sy = mapping(xy[:, 0], xy[:, 1])
    sxy = np.column_stack([sx, sy])

    images = []
    for shape, pos, fwhm, rng in (
        (template_shape, xy, fwhm_template, rng_nt),
        (source_shape, sxy, fwhm_source, rng_ns),
    ):
        img = _render_stars(shape, pos, flux, fwhm, psf=psf, moffat_beta=moffat_beta)
        img += sky
        images.append(_add_noise(img, gain, read_noise, rng) if noise else img)
    template, source = images

    common = (min(ht, source_shape[0]), min(wt, source_shape[1]))
    hot = np.zeros((0, 2), dtype=np.int64)
    if n_hot_pixels > 0:
        hot = _hot_pixels(n_hot_pixels, common, rng_art)
        level = rng_art.uniform(2e4, 6e4, len(hot))
        for img in images:
            img[hot[:, 1], hot[:, 0]] += level
    bad_x = np.zeros(0, dtype=np.int64)
    if n_bad_columns > 0:
        bad_x = rng_art.choice(common[1], size=n_bad_columns, replace=False)
        level = rng_art.uniform(50.0, 300.0, n_bad_columns)
        for img in images:
            img[:, bad_x] += level
    source = source.astype(dtype, copy=False)
    if nan_fraction > 0:
        source[_nan_mask(source_shape, nan_fraction, rng_art)] = np.nan

    return SimPair(
        template=template.astype(dtype, copy=False),
        source=source,
        mapping=mapping,
        template_xy=xy,
        flux=flux,
        in_template=_inside(xy, template_shape),
        in_source=_inside(sxy, source_shape),
        hot_pixel_xy=hot.astype(np.float64),
        source_xy=sxy,
        bad_column_x=np.sort(bad_x),
        fwhm_template=float(fwhm_template),
        fwhm_source=float(fwhm_source),
    )
