"""The Cramer-Rao floor of a star-based registration on a simulated pair.

Each common star's centroid can be measured no better than the Cramer-Rao bound of its
pixels: for a pixel-integrated Gaussian PSF of flux ``F`` on a sky ``b`` (ADU, gain
``g``, read noise ``r`` electrons) the Fisher information of its x position is
``sum_i (F dp_i/dx)^2 / var_i`` with ``var_i = (b + F p_i) / g + (r / g)^2``
(van Trees 1968; for astronomical centroids, e.g. Mendez et al. 2013, PASP 125, 580).
Drawing both images' centroids at that bound and fitting the model by weighted least
squares gives the landing error that no unbiased method reaches on average; the median
over many draws is the floor of the field, the spread how far one image's noise moves
it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["centroid_bound", "similarity_floor"]


def _pixel_profile(offset: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis pixel fractions of a unit Gaussian and their derivative in the centre."""
    q = sigma * np.sqrt(2.0)
    lo, hi = (offset - 0.5) / q, (offset + 0.5) / q
    p = 0.5 * (erf(hi) - erf(lo))
    dp = (np.exp(-lo**2) - np.exp(-hi**2)) / (q * np.sqrt(np.pi))  # d p / d centre
    return p, dp


def centroid_bound(flux: np.ndarray, fwhm: float, *, sky: float, gain: float,
                   read_noise: float, phases: int = 8) -> np.ndarray:
    """Cramer-Rao bound (px, per axis) of each star's centroid.

    Averaged over sub-pixel phases of the star's centre (the bound varies by a few
    percent with where in its pixel the star falls).
    """
    flux = np.asarray(flux, np.float64)
    sigma = fwhm / 2.3548
    rad = int(np.ceil(4 * fwhm))
    pix = np.arange(-rad, rad + 1, dtype=np.float64)
    info = np.zeros_like(flux)
    for phase in (np.arange(phases) + 0.5) / phases - 0.5:
        px, dpx = _pixel_profile(pix - phase, sigma)
        py, _ = _pixel_profile(pix, sigma)
        prof = py[:, None] * px[None, :]  # rows y, columns x
        dprof = py[:, None] * dpx[None, :]
        var = (sky + flux[:, None, None] * prof) / gain + (read_noise / gain) ** 2
        info += np.sum((flux[:, None, None] * dprof) ** 2 / var, axis=(1, 2))
    return 1.0 / np.sqrt(info / phases)


def _similarity(t: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = np.zeros((2 * len(t), 4))
    a[0::2, 0], a[0::2, 1], a[0::2, 2] = t[:, 0], -t[:, 1], 1.0
    a[1::2, 0], a[1::2, 1], a[1::2, 3] = t[:, 1], t[:, 0], 1.0
    rw = np.sqrt(np.repeat(w, 2))
    return np.linalg.lstsq(a * rw[:, None], s.ravel() * rw, rcond=None)[0]


def similarity_floor(template_xy: np.ndarray, source_xy: np.ndarray,
                     sigma_template: np.ndarray, sigma_source: np.ndarray,
                     eval_template: np.ndarray, eval_source: np.ndarray, *,
                     scale: float = 1.0, draws: int = 200, seed: int = 0) -> dict:
    """RMS landing error of a similarity fitted to centroids at their bounds.

    Parameters
    ----------
    template_xy, source_xy : ndarray, shape (N, 2)
        True positions of the stars both images hold (the fit's stars).
    sigma_template, sigma_source : ndarray, shape (N,)
        Their centroid bounds, px per axis, each in its own image's pixels.
    eval_template, eval_source : ndarray, shape (M, 2)
        The evaluation stars (template px, and their true source px).
    scale : float
        Source px per template px (carries a template error into the source frame).
    draws : int
        Noise draws.

    Returns
    -------
    dict
        ``median``, ``p10`` and ``p90`` of the draws' RMS landing errors (template
        px, the evaluation's unit), and ``n_stars``.
    """
    rng = np.random.default_rng(seed)
    t0, s0 = np.asarray(template_xy, float), np.asarray(source_xy, float)
    st, ss = np.asarray(sigma_template, float), np.asarray(sigma_source, float)
    w = 1.0 / ((scale * st) ** 2 + ss**2)
    et, es = np.asarray(eval_template, float), np.asarray(eval_source, float)
    rms = []
    for _ in range(draws):
        t = t0 + rng.normal(size=t0.shape) * st[:, None]
        s = s0 + rng.normal(size=s0.shape) * ss[:, None]
        c = _similarity(t, s, w)
        mx = c[0] * et[:, 0] - c[1] * et[:, 1] + c[2]
        my = c[1] * et[:, 0] + c[0] * et[:, 1] + c[3]
        # source-frame miss, back to template px
        rms.append(np.sqrt(np.mean((mx - es[:, 0]) ** 2 + (my - es[:, 1]) ** 2)) / scale)
    rms = np.asarray(rms)
    return {"median": float(np.median(rms)), "p10": float(np.percentile(rms, 10)),
            "p90": float(np.percentile(rms, 90)), "n_stars": int(len(t0))}
