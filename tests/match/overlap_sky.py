"""Star catalogues of two images of one sky, with a known affine mapping (no rendering).

Helpers of ``test_thin_overlap.py`` and ``test_extreme_scale.py``. Stars are uniform on
the sky region covering both images, with a power-law flux distribution (dN/dF ~ F^-2,
so N(>F) ~ 1/F: an image ten times coarser that keeps its brightest stars holds as many
per frame as the fine one). Each image keeps the stars inside its frame (less a NaN
border, where a real tile has no data), at most ``n`` of its brightest, with flux
noise (so that the two images' brightness orders differ a little) and centroid noise
growing towards faint stars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpualign.detect import Catalog

#: Centroid noise (px, per axis, own pixels) of the faintest template star; brighter
#: stars have less (sigma ~ flux^-1/2).
SIGMA_FAINT = 0.1


@dataclass
class SkyPair:
    """Two catalogues of one sky and the truth.

    Attributes
    ----------
    source, template : Catalog
        Brightest first, with their frame shapes.
    matrix : ndarray (2, 3)
        True template -> source affine mapping.
    common_template_xy : ndarray (M, 2)
        True template positions of the stars in both catalogues, brightest first.
    """

    source: Catalog
    template: Catalog
    matrix: np.ndarray
    common_template_xy: np.ndarray

    def truth(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True template -> source mapping, as ``position_errors`` wants it."""
        m = self.matrix
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def similarity(shape_src: tuple[int, int], shape_tmpl: tuple[int, int], *, shift=(0.0, 0.0),
               rotation_deg: float = 0.0, scale: float = 1.0, flip: bool = False) -> np.ndarray:
    """Template -> source similarity: the template centre lands at the source centre + shift.

    ``flip`` mirrors the template's x axis first (a mirror-image source).
    """
    t = np.deg2rad(rotation_deg)
    lin = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if flip:
        lin = lin @ np.diag([-1.0, 1.0])
    ct = np.array([(shape_tmpl[1] - 1) / 2, (shape_tmpl[0] - 1) / 2])
    cs = np.array([(shape_src[1] - 1) / 2, (shape_src[0] - 1) / 2])
    return np.column_stack([lin, cs + np.asarray(shift, float) - lin @ ct])


def _inside(xy: np.ndarray, shape: tuple[int, int], border: float) -> np.ndarray:
    ny, nx = shape
    return ((xy[:, 0] >= border) & (xy[:, 0] <= nx - 1 - border)
            & (xy[:, 1] >= border) & (xy[:, 1] <= ny - 1 - border))


def _catalog(xy: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
             shape: tuple[int, int]) -> Catalog:
    n = len(xy)
    return Catalog(x=xy[:, 0].copy(), y=xy[:, 1].copy(), flux=flux.copy(),
                   fwhm=np.full(n, 3.0), flag=np.zeros(n, np.int64), sigma=sigma.copy(),
                   shape=shape)


def sky_pair(matrix: np.ndarray, *, template_shape=(2048, 2048), source_shape=(2048, 2048),
             n_template: int = 3000, n_source: int | None = None, nan_border: float = 0.0,
             seed: int = 0) -> SkyPair:
    """Catalogues of a random sky seen by both images.

    Parameters
    ----------
    matrix : ndarray (2, 3)
        True template -> source mapping.
    template_shape, source_shape : tuple of int
        ``(ny, nx)`` of the frames.
    n_template : int
        Stars the template keeps (its depth: the sky is filled so that its frame holds
        this many).
    n_source : int, optional
        Brightest stars the source keeps (default: as many as reach the template's
        depth); the sky is filled deep enough for both.
    nan_border : float
        Width (px) of each frame's border without data.
    seed : int
        Random seed.
    """
    rng = np.random.default_rng(seed)
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ny, nx = source_shape
    corners = np.array([[0, 0], [nx, 0], [0, ny], [nx, ny]], float) - 0.5
    foot = corners @ inv[:, :2].T + inv[:, 2]
    lo = np.minimum(foot.min(axis=0), -0.5)
    hi = np.maximum(foot.max(axis=0), np.array(template_shape[::-1]) - 0.5)
    area_t = template_shape[0] * template_shape[1]
    # deep enough for both images: the source's frame covers |det| less template sky
    area_s = source_shape[0] * source_shape[1] / abs(np.linalg.det(matrix[:, :2]))
    per_area = max(n_template / area_t, (n_source or 0) / area_s)
    n_sky = int(round(per_area * np.prod(hi - lo)))
    xy_t = rng.uniform(lo, hi, (n_sky, 2))
    flux = 1.0 / rng.uniform(1e-4, 1.0, n_sky)  # N(>F) ~ 1/F, F >= 1
    xy_s = xy_t @ matrix[:, :2].T + matrix[:, 2]
    in_t = _inside(xy_t, template_shape, nan_border)
    in_s = _inside(xy_s, source_shape, nan_border)
    order = np.argsort(-flux, kind="stable")
    keep_t = order[in_t[order]][:n_template]
    keep_s = order[in_s[order]]
    if n_source is not None:
        keep_s = keep_s[:n_source]
    cats = []
    for keep, xy in ((keep_s, xy_s), (keep_t, xy_t)):
        f = flux[keep]
        sigma = SIGMA_FAINT * np.sqrt(f.min() / f)
        noisy = xy[keep] + rng.normal(size=(len(keep), 2)) * sigma[:, None]
        measured = f * np.exp(rng.normal(0, 0.05, len(keep)))  # 5% photometric noise
        o = np.argsort(-measured, kind="stable")
        shape = source_shape if xy is xy_s else template_shape
        cats.append((_catalog(noisy[o], measured[o], sigma[o], shape), keep[o]))
    (src, ids_s), (tmpl, ids_t) = cats
    common = np.intersect1d(ids_s, ids_t)
    common = common[np.argsort(-flux[common], kind="stable")]
    return SkyPair(src, tmpl, np.asarray(matrix, float), xy_t[common])


def tile_offset(fraction: float, direction: str, shape=(2048, 2048),
                border: float = 0.0) -> tuple[float, float]:
    """Shift of a source tile overlapping the template by ``fraction`` of the area.

    ``direction`` is ``"x"``, ``"y"`` or ``"diagonal"`` (a corner square). The overlap
    is that of the areas with data: frames less a ``border`` without data each side.
    """
    ny, nx = (v - 2 * border for v in shape)
    if direction == "x":
        return (-(1 - fraction) * nx, 0.0)
    if direction == "y":
        return (0.0, -(1 - fraction) * ny)
    side = np.sqrt(fraction)
    return (-(1 - side) * nx, -(1 - side) * ny)
