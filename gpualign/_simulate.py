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

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import erf

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

Shape = tuple[int, int]


@dataclass
class TrueMapping:
    """True mapping from TEMPLATE pixel coordinates to SOURCE pixel coordinates.

    Parameters
    ----------
    matrix : ndarray, shape (2, 3)
        Affine part, ``s_lin = matrix[:, :2] @ (x, y) + matrix[:, 2]``.
    center : tuple of float
        ``(cx, cy)`` centre of the radial distortion in the source frame.
    rnorm : float
        Radius (source pixels) at which ``r = 1``; the source half-diagonal.
    k1, k2 : float
        Radial distortion coefficients; positive moves points outwards.

    """

    matrix: np.ndarray
    center: tuple[float, float] = (0.0, 0.0)
    rnorm: float = 1.0
    k1: float = 0.0
    k2: float = 0.0

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64).reshape(2, 3)
        self.center = (float(self.center[0]), float(self.center[1]))
        self.rnorm = float(self.rnorm)
        self.k1 = float(self.k1)
        self.k2 = float(self.k2)

    def _radial(self, rho2: np.ndarray) -> np.ndarray:
        t = rho2 / self.rnorm**2
        return 1.0 + self.k1 * t + self.k2 * t * t

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map template coordinates ``(x, y)`` to source coordinates ``(sx, sy)``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = self.matrix
        cx, cy = self.center
        dx = m[0, 0] * x + m[0, 1] * y + m[0, 2] - cx
        dy = m[1, 0] * x + m[1, 1] * y + m[1, 2] - cy
        f = self._radial(dx * dx + dy * dy)
        return cx + dx * f, cy + dy * f

    def inverse(
        self, sx: Any, sy: Any, *, tol: float = 1e-11, max_iter: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """Map source coordinates back to template coordinates.

        The radial part is inverted with Newton iterations on the radius, the
        affine part exactly; the round trip is accurate to ~1e-9 px or better.

        Parameters
        ----------
        sx, sy : array_like
            Source pixel coordinates.
        tol : float
            Convergence tolerance on the radius, in pixels.
        max_iter : int
            Maximum number of Newton iterations.

        Returns
        -------
        x, y : ndarray
            Template pixel coordinates (float64).

        """
        sx = np.asarray(sx, dtype=np.float64)
        sy = np.asarray(sy, dtype=np.float64)
        cx, cy = self.center
        dx, dy = sx - cx, sy - cy
        big_r = np.hypot(dx, dy)
        rho = big_r.copy()
        if self.k1 != 0.0 or self.k2 != 0.0:
            a1 = self.k1 / self.rnorm**2
            a2 = self.k2 / self.rnorm**4
            for _ in range(max_iter):
                r2 = rho * rho
                g = rho * (1.0 + a1 * r2 + a2 * r2 * r2) - big_r
                dg = 1.0 + 3.0 * a1 * r2 + 5.0 * a2 * r2 * r2
                step = g / dg
                rho = rho - step
                if not np.any(np.abs(step) > tol):
                    break
        ratio = np.divide(rho, big_r, out=np.ones_like(big_r), where=big_r > 0)
        lx = cx + dx * ratio - self.matrix[0, 2]
        ly = cy + dy * ratio - self.matrix[1, 2]
        a, b, c, d = self.matrix[0, 0], self.matrix[0, 1], self.matrix[1, 0], self.matrix[1, 1]
        det = a * d - b * c
        return (d * lx - b * ly) / det, (a * ly - c * lx) / det

    def jacobian(self, x: Any, y: Any) -> np.ndarray:
        """Return the Jacobian ``d(sx, sy) / d(x, y)`` with shape ``(..., 2, 2)``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = self.matrix
        cx, cy = self.center
        dx = m[0, 0] * x + m[0, 1] * y + m[0, 2] - cx
        dy = m[1, 0] * x + m[1, 1] * y + m[1, 2] - cy
        rho2 = dx * dx + dy * dy
        f = self._radial(rho2)
        # df/d(dx) = fp * 2 dx with fp = df/d(rho2)
        fp = (self.k1 + 2.0 * self.k2 * rho2 / self.rnorm**2) / self.rnorm**2
        inner = np.empty(x.shape + (2, 2))
        inner[..., 0, 0] = f + 2.0 * fp * dx * dx
        inner[..., 0, 1] = 2.0 * fp * dx * dy
        inner[..., 1, 0] = inner[..., 0, 1]
        inner[..., 1, 1] = f + 2.0 * fp * dy * dy
        return inner @ m[:, :2]

    @property
    def determinant(self) -> float:
        """Determinant of the affine part (negative for a mirror flip)."""
        return float(np.linalg.det(self.matrix[:, :2]))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (see :meth:`from_dict`)."""
        return {
            "kind": "TrueMapping",
            "matrix": self.matrix.tolist(),
            "center": list(self.center),
            "rnorm": self.rnorm,
            "k1": self.k1,
            "k2": self.k2,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrueMapping:
        """Build a mapping from the output of :meth:`to_dict`."""
        return cls(
            matrix=np.asarray(d["matrix"]),
            center=tuple(d["center"]),
            rnorm=d["rnorm"],
            k1=d["k1"],
            k2=d["k2"],
        )


def _centre(shape: Shape) -> np.ndarray:
    return np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])


def make_mapping(
    *,
    source_shape: Shape,
    template_shape: Shape,
    shift: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    flip: bool = False,
    shear: float = 0.0,
    corner_distortion_px: float = 0.0,
    k2_fraction: float = 0.3,
) -> TrueMapping:
    """Build a :class:`TrueMapping` from intuitive parameters.

    The linear part is ``s_lin = cs + shift + M @ (p - ct)`` with ``ct``, ``cs``
    the template and source centres and
    ``M = scale * R(rotation_deg) @ [[1, shear], [0, 1]] @ diag(-1 if flip else 1, 1)``,
    so template distances appear ``scale`` times longer in the source.

    Parameters
    ----------
    source_shape, template_shape : tuple of int
        ``(height, width)`` of the two images.
    shift : tuple of float
        Offset ``(dx, dy)`` in source pixels of the template centre's image
        from the source centre.
    rotation_deg : float
        Counter-clockwise rotation (in the x, y plane) in degrees.
    scale : float
        Source pixels per template pixel.
    flip : bool
        Mirror the x axis (negative determinant).
    shear : float
        Shear factor.
    corner_distortion_px : float
        Radial displacement, in source pixels, of the source corners (positive
        outwards).  ``k1`` is chosen for it with ``k2 = k2_fraction * k1``.
    k2_fraction : float
        Ratio ``k2 / k1``; a nonzero value makes the field need more than a cubic.

    Returns
    -------
    TrueMapping
        The mapping template -> source.

    """
    theta = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lin = float(scale) * rot @ np.array([[1.0, shear], [0.0, 1.0]])
    if flip:
        lin = lin @ np.diag([-1.0, 1.0])
    ct, cs = _centre(template_shape), _centre(source_shape)
    offset = cs + np.asarray(shift, dtype=np.float64) - lin @ ct
    rnorm = float(np.hypot(source_shape[0] - 1, source_shape[1] - 1) / 2.0)
    k1 = float(corner_distortion_px) / (rnorm * (1.0 + k2_fraction))
    return TrueMapping(
        matrix=np.column_stack([lin, offset]),
        center=(float(cs[0]), float(cs[1])),
        rnorm=rnorm,
        k1=k1,
        k2=k2_fraction * k1,
    )


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


def bright_overlap_stars(pair: SimPair, n: int = 200, margin_fwhm: float = 3.0) -> np.ndarray:
    """Template-frame positions of the brightest stars inside both images.

    Parameters
    ----------
    pair : SimPair
        A simulated pair.
    n : int
        Maximum number of stars returned.
    margin_fwhm : float
        Stars closer than this many FWHM to an edge of either image, or with a
        NaN source pixel within that distance, are excluded.

    Returns
    -------
    ndarray, shape (M, 2)
        Positions, brightest first.

    """
    ok = _inside(pair.template_xy, pair.template.shape, margin_fwhm * pair.fwhm_template)
    ok &= _inside(pair.source_xy, pair.source.shape, margin_fwhm * pair.fwhm_source)
    idx = np.flatnonzero(ok)
    nan = ~np.isfinite(pair.source)
    if nan.any() and idx.size:
        rad = int(np.ceil(margin_fwhm * pair.fwhm_source))
        near = ndimage.maximum_filter(nan, size=2 * rad + 1)
        sxy = np.rint(pair.source_xy[idx]).astype(np.int64)
        idx = idx[~near[sxy[:, 1], sxy[:, 0]]]
    idx = idx[np.argsort(-pair.flux[idx], kind="stable")][:n]
    return pair.template_xy[idx].copy()


Mapping2D = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]


def position_errors(
    fitted: Mapping2D,
    truth: Mapping2D,
    xy_template: np.ndarray,
    *,
    step: float = 1e-2,
    tol: float = 1e-9,
    max_iter: int = 50,
) -> np.ndarray:
    """Return where stars land after resampling with ``fitted``, as errors.

    A star truly at template position ``p`` is at ``s = truth(p)`` in the
    source; resampling the source with ``fitted`` shows it at the template
    position ``q`` solving ``fitted(q) = s`` (Newton iterations with a
    central-difference Jacobian of ``fitted``, starting at ``p``).

    Parameters
    ----------
    fitted : callable
        Fitted template -> source mapping, ``fitted(x, y) -> (sx, sy)``.
    truth : callable
        True template -> source mapping.
    xy_template : ndarray, shape (M, 2)
        True template positions of the stars.
    step : float
        Finite-difference step (pixels) of the Jacobian.
    tol : float
        Convergence tolerance (pixels).
    max_iter : int
        Maximum number of Newton iterations.

    Returns
    -------
    ndarray, shape (M,)
        ``|q - p|`` in template pixels; NaN where ``fitted`` is not finite or
        the iteration did not converge.

    """
    p = np.asarray(xy_template, dtype=np.float64).reshape(-1, 2)
    tx, ty = (np.asarray(v, dtype=np.float64) for v in truth(p[:, 0], p[:, 1]))

    def f(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx, fy = fitted(x, y)
        return np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)

    qx, qy = p[:, 0].copy(), p[:, 1].copy()
    converged = np.zeros(len(p), dtype=bool)
    for _ in range(max_iter):
        fx, fy = f(qx, qy)
        rx, ry = tx - fx, ty - fy
        ax, ay = f(qx + step, qy)
        bx, by = f(qx - step, qy)
        j00, j10 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        ax, ay = f(qx, qy + step)
        bx, by = f(qx, qy - step)
        j01, j11 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        det = j00 * j11 - j01 * j10
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (j11 * rx - j01 * ry) / det
            dy = (j00 * ry - j10 * rx) / det
        qx, qy = qx + dx, qy + dy
        converged = np.hypot(dx, dy) < tol
        if np.all(converged | ~np.isfinite(dx)):
            break
    err = np.hypot(qx - p[:, 0], qy - p[:, 1])
    err[~converged] = np.nan
    return err


def error_stats(errors: np.ndarray) -> dict[str, float]:
    """Summarise position errors.

    Parameters
    ----------
    errors : ndarray
        Output of :func:`position_errors`.

    Returns
    -------
    dict
        ``rms``, ``max``, ``median`` over the finite errors, ``n`` (finite
        count) and ``n_nonfinite``.

    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    fin = e[np.isfinite(e)]
    if fin.size == 0:
        nan = float("nan")
        return {"rms": nan, "max": nan, "median": nan, "n": 0, "n_nonfinite": int(e.size)}
    return {
        "rms": float(np.sqrt(np.mean(fin**2))),
        "max": float(fin.max()),
        "median": float(np.median(fin)),
        "n": int(fin.size),
        "n_nonfinite": int(e.size - fin.size),
    }


def warp_real_image(
    image: np.ndarray, mapping: TrueMapping, output_shape: Shape, *, rows_per_chunk: int = 256
) -> np.ndarray:
    """Resample a real image (the template-frame sky) into the source frame.

    ``source(s) = image(mapping.inverse(s))`` with cubic spline interpolation
    (``scipy.ndimage.map_coordinates``, order 3); NaN outside the image and
    next to NaN input pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Template-frame image.
    mapping : TrueMapping
        Template -> source mapping.
    output_shape : tuple of int
        ``(height, width)`` of the source image to produce.
    rows_per_chunk : int
        Output rows computed at a time (bounds memory).

    Returns
    -------
    ndarray, float32, shape ``output_shape``
        The distorted copy.

    """
    img = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(img)
    if bad.any():
        img = np.where(bad, np.nanmedian(img) if (~bad).any() else 0.0, img)
    coeffs = ndimage.spline_filter(img, order=3, mode="mirror")
    h, w = img.shape
    out = np.empty(output_shape, dtype=np.float32)
    xs = np.arange(output_shape[1], dtype=np.float64)
    for r0 in range(0, output_shape[0], rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, output_shape[0])
        sy, sx = np.meshgrid(np.arange(r0, r1, dtype=np.float64), xs, indexing="ij")
        x, y = mapping.inverse(sx, sy)
        vals = ndimage.map_coordinates(coeffs, [y, x], order=3, mode="mirror", prefilter=False)
        outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
        if bad.any():
            iy = np.clip(np.rint(y), 0, h - 1).astype(np.int64)
            ix = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
            outside |= bad[iy, ix]
        vals[outside] = np.nan
        out[r0:r1] = vals
    return out
