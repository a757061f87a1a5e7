"""Real images (tests/data/PROVENANCE.txt, gpualign/data/PROVENANCE.txt).

* JWST NIRCam F200W, Abell 2744, two epochs (2022-06 shipped for the demo, 2022-11 in
  tests/data) resampled by the JWST pipeline onto the same pixel grid: their WCS are
  identical, so the truth is the WCS-derived mapping = the identity, up to how well
  each epoch was registered to the absolute frame.
* One epoch warped through a known rotation + radial distortion (scipy, via
  gpualign._simulate.warp_real_image), then recovered.
* Epoch 2022-11 mirrored and rotated (and distorted) through a known mapping and
  aligned against epoch 2022-06 (issue 4): truth = the known mapping composed with the
  WCS-derived relation of the two epochs.
* The sparse DECam pair (~8 sources each): aligns, or fails with a typed message.
* 2MASS J and Ks of the Galactic Centre (crowded; same grid, taken simultaneously).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy.spatial import cKDTree

import gpualign
from gpualign._simulate import (
    TrueMapping,
    error_stats,
    make_mapping,
    position_errors,
    warp_real_image,
)
from gpualign.cli._demo import demo_image_path
from gpualign.detect._sep import detect

DATA = Path(__file__).resolve().parents[1] / "data"
JWST_1 = demo_image_path()  # 2022-06
JWST_2 = DATA / "jwst_a2744_f200w_2022-11.fits"
DECAM = (DATA / "DEC-OBS18a.mini.fits", DATA / "DEC-OBS04a.mini.fits")
TWOMASS = (DATA / "gc_2mass_k.fits", DATA / "gc_2mass_j.fits")


def _image_hdu(path: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
        return np.array(hdu.data, dtype=np.float32), hdu.header.copy()


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DECam's OBSGEO fix-ups
        return WCS(header)


def deviation_from_wcs(sol: gpualign.Solution, source: Path, template: Path,
                       step: int = 16) -> np.ndarray:
    """|fitted - WCS-derived| (source px) of the template -> source mapping on a grid."""
    tdata, thdr = _image_hdu(template)
    _, shdr = _image_hdu(source)
    gy, gx = np.mgrid[0:tdata.shape[0]:step, 0:tdata.shape[1]:step].astype(np.float64)
    ra, dec = _wcs(thdr).all_pix2world(gx, gy, 0)
    wx, wy = _wcs(shdr).all_world2pix(ra, dec, 0)
    assert np.max(np.hypot(wx - gx, wy - gy)) < 1e-6  # the WCS say: identity
    sx, sy = sol.transform(gx, gy)
    return np.hypot(sx - wx, sy - wy)


@lru_cache(maxsize=1)
def point_source_offset() -> tuple[float, float]:
    """Median position of epoch 2022-11's point sources minus epoch 2022-06's (px).

    Detections no wider than 3 px (the F200W PSF of the most compact sources measures
    2.9 px here), paired within 1 px: in both epochs their centroids are those of point
    sources (a window of their own FWHM), and no fit is involved. Measured
    (0.166, 0.065) px over 24 pairs (standard error ~0.03 px): the two epochs' WCSs,
    each registered to the absolute frame on its own, disagree by ~0.17 px (5 mas).
    """
    a, b = detect(_image_hdu(JWST_1)[0]), detect(_image_hdu(JWST_2)[0])
    d, j = cKDTree(b.xy).query(a.xy)
    ok = (d < 1.0) & (a.fwhm <= 3.0)
    assert ok.sum() >= 15, ok.sum()
    off = np.median(b.xy[j[ok]] - a.xy[ok], axis=0)
    return float(off[0]), float(off[1])


@pytest.mark.parametrize("source, template", [(JWST_2, JWST_1), (JWST_1, JWST_2)],
                         ids=["11-onto-06", "06-onto-11"])
def test_jwst_epochs_identity(source, template):
    """The two epochs map onto each other as their (identical) WCS say, up to their error.

    Tolerance 0.3 px (9 mas at 0.031"/px) anywhere on the 900^2 grid, RMS 0.2 px: each
    epoch was aligned to the absolute frame separately, to a few mas, and the point
    sources of the two epochs are offset by ~0.17 px (:func:`point_source_offset`). The
    fit must find that offset: the matched pairs' median offset agrees with the point
    sources' within 0.05 px. Measured: max 0.229 px, RMS 0.159 px against the WCS;
    median offset of the matched pairs (0.139, 0.078) px (before the galaxies were
    centred on their cores: 0.143 / 0.074 px and (0.038, 0.046) px, the galaxies'
    outer light pulling towards the WCS's answer).
    """
    sol = gpualign.find_transform(source, template, backend="numpy")
    assert sol.stats["n_match"] >= 50
    assert sol.degree == 1, sol.cv_scores  # same grid: no distortion to find
    assert not sol.mirrored
    dev = deviation_from_wcs(sol, source, template)
    assert dev.max() <= 0.3, dev.max()
    assert np.sqrt(np.mean(dev**2)) <= 0.2
    # the matched pairs are offset as the point sources are
    expected = np.array(point_source_offset()) * (1.0 if source == JWST_2 else -1.0)
    d = np.median(sol.source_xy - sol.template_xy, axis=0)
    assert np.all(np.abs(d - expected) < 0.05), (d, expected)


def test_jwst_epochs_aligned_pixels_agree():
    """Epoch 2 resampled onto epoch 1's grid: where the images have signal, they agree."""
    res = gpualign.align(JWST_2, JWST_1, backend="numpy")
    ref, _ = _image_hdu(JWST_1)
    raw, _ = _image_hdu(JWST_2)
    ok = res.footprint & np.isfinite(ref)
    assert ok.mean() > 0.99
    bright = ok & (ref > np.nanpercentile(ref, 99))
    # resampling through an identity-ish map changes bright pixels far less than the
    # epochs differ from each other (noise): compare with the raw, unresampled pixels
    diff_aligned = np.median(np.abs(res.data[bright] - ref[bright]))
    diff_raw = np.median(np.abs(raw[bright] - ref[bright]))
    assert diff_aligned <= 1.1 * diff_raw, (diff_aligned, diff_raw)


def _bright_sources(image: np.ndarray, mapping, n: int = 40, margin: float = 10.0):
    """The n brightest sources of the template that land inside the source (as the demo)."""
    cat = detect(image)
    sx, sy = mapping(cat.x, cat.y)
    h, w = image.shape
    inside = ((sx > margin) & (sx < w - 1 - margin) & (sy > margin) & (sy < h - 1 - margin))
    return cat.xy[inside][:n]


# Known mappings applied to a real epoch (template -> source). Each is recovered from the
# image pair alone and scored on the 40 brightest sources against the truth.
JWST_CASES = [
    pytest.param(JWST_1, dict(rotation_deg=23.0, scale=1.05, shift=(7.3, -4.1),
                              corner_distortion_px=6.0), id="06-demo-mapping"),
    pytest.param(JWST_2, dict(rotation_deg=-61.0, scale=1.1, shift=(3.2, 9.4),
                              corner_distortion_px=-6.0), id="11-rot-61-barrel"),
    pytest.param(JWST_1, dict(rotation_deg=-61.0, scale=1.1, shift=(3.2, 9.4),
                              corner_distortion_px=-6.0), id="06-rot-61-barrel"),
    pytest.param(JWST_2, dict(rotation_deg=200.0, scale=0.95, shift=(-6.2, 3.4),
                              corner_distortion_px=8.0), id="11-rot200"),
    pytest.param(JWST_2, dict(rotation_deg=90.0, shift=(0.3, 0.4),
                              corner_distortion_px=6.0), id="11-rot90"),
    pytest.param(JWST_1, dict(rotation_deg=90.0, shift=(0.3, 0.4),
                              corner_distortion_px=6.0), id="06-rot90"),
]


#: RMS bound (px) per case: the issue's 0.03, or about 1.8x the measured value where that
#: is smaller. Measured: 06-demo-mapping 0.0147, 11-rot-61-barrel 0.0243, 06-rot-61-barrel
#: 0.0160, 11-rot200 0.0134, 11-rot90 0.0115, 06-rot90 0.0086 px (before the stellar locus
#: was sought among faint detections and galaxies were centred on their cores: 0.0277,
#: 0.0202, 0.0141, 0.154, 0.087, 0.130 px; the last three were xfails).
JWST_RMS = {"06-rot-61-barrel": 0.025}


@pytest.mark.parametrize("path, kw", JWST_CASES)
def test_jwst_known_rotation_and_distortion(path, kw, request):
    template, _ = _image_hdu(path)
    shape = template.shape
    mapping = make_mapping(source_shape=shape, template_shape=shape, **kw)
    source = warp_real_image(template, mapping, shape)
    sol = gpualign.find_transform(source, template, backend="numpy")
    assert sol.degree >= 3, sol.cv_scores  # the distortion is seen
    stats = error_stats(position_errors(sol.transform, mapping,
                                        _bright_sources(template, mapping)))
    assert stats["n"] == 40 and stats["n_nonfinite"] == 0
    assert stats["rms"] <= JWST_RMS.get(request.node.callspec.id, 0.03), stats


def test_jwst_distortion_is_needed():
    """Affine only cannot follow the demo's distortion: the surfaces do real work."""
    template, _ = _image_hdu(JWST_1)
    mapping = make_mapping(source_shape=template.shape, template_shape=template.shape,
                           rotation_deg=23.0, scale=1.05, shift=(7.3, -4.1),
                           corner_distortion_px=6.0)
    source = warp_real_image(template, mapping, template.shape)
    sol = gpualign.find_transform(source, template, spline_order=0, backend="numpy")
    stats = error_stats(position_errors(sol.transform, mapping,
                                        _bright_sources(template, mapping)))
    assert stats["rms"] > 0.3, stats


def _epoch_relation(template: Path, source: Path):
    """Template pixel -> pixel of the other epoch, through the two WCS (the epochs' truth)."""
    wt, ws = _wcs(_image_hdu(template)[1]), _wcs(_image_hdu(source)[1])

    def relation(x, y):
        ra, dec = wt.all_pix2world(x, y, 0)
        return ws.all_world2pix(ra, dec, 0)

    return relation


def _grid_in_hull(points: np.ndarray, shape: tuple[int, int], step: int = 16) -> np.ndarray:
    """Grid nodes (x, y) of a ``shape`` image inside the convex hull of ``points``."""
    from scipy.spatial import Delaunay

    gy, gx = np.mgrid[0:shape[0]:step, 0:shape[1]:step]
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
    return grid[Delaunay(points).find_simplex(grid) >= 0]


def _other_epoch_mirrored(kw: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, TrueMapping]:
    """Epoch 2022-11 mirrored through ``make_mapping(flip=True, **kw)``, 2022-06 the template.

    Returns (source, template, epoch 2022-11's own pixels, the known mapping).
    """
    template, _ = _image_hdu(JWST_1)
    other, _ = _image_hdu(JWST_2)
    mirror = make_mapping(source_shape=other.shape, template_shape=other.shape, flip=True,
                          **kw)
    return warp_real_image(other, mirror, other.shape), template, other, mirror


def test_jwst_other_epoch_mirrored_and_rotated():
    """Issue 4: one JWST epoch mirrored and rotated against the OTHER epoch.

    Epoch 2022-11 is mirrored and rotated by -35 deg (a known linear mapping, no
    distortion) and aligned against epoch 2022-06. Truth (template px -> source px) =
    the known mapping composed with the WCS-derived relation of the epochs (the
    identity). The tolerances are those of ``test_jwst_epochs_identity`` (max 0.3 px,
    RMS 0.2 px): the truth is only as good as each epoch's own registration to the
    absolute frame, and the mirror adds nothing measurable to that. Against the WCS
    relation shifted by the point sources' offset (:func:`point_source_offset`) the fit
    is held to RMS 0.12 px, max 0.25 px. Measured: RMS 0.144 px, max 0.216 px on the
    grid inside the matched sources' hull against the WCS, 0.096 / 0.160 px against the
    point sources (before the galaxies were centred on their cores: 0.068 / 0.129 px
    against the WCS, 0.165 / 0.237 px against the point sources).
    """
    source, template, other, mirror = _other_epoch_mirrored(
        dict(rotation_deg=-35.0, shift=(-2.7, 5.3)))
    relation = _epoch_relation(JWST_1, JWST_2)

    def truth(x, y):
        return mirror(*relation(x, y))

    def truth_point_sources(x, y):
        ox, oy = point_source_offset()
        rx, ry = relation(x, y)
        return mirror(rx + ox, ry + oy)

    res = gpualign.align(source, template, backend="numpy")
    sol = res.solution
    assert sol.mirrored
    assert np.linalg.det(sol.transform.matrix[:, :2]) < 0
    assert sol.stats["n_match"] >= 50
    assert sol.degree == 1, sol.cv_scores  # mirror + rotation + identity: no distortion
    grid = _grid_in_hull(sol.template_xy, template.shape)
    assert len(grid) > 1500  # the hull covers ~60% of the 900^2 field
    on_grid = error_stats(position_errors(sol.transform, truth, grid))
    at_matches = error_stats(position_errors(sol.transform, truth, sol.template_xy))
    for stats in (on_grid, at_matches):
        assert stats["n_nonfinite"] == 0, stats
        assert stats["max"] <= 0.3, (on_grid, at_matches)
        assert stats["rms"] <= 0.2, (on_grid, at_matches)
    on_grid = error_stats(position_errors(sol.transform, truth_point_sources, grid))
    assert on_grid["rms"] <= 0.12 and on_grid["max"] <= 0.25, on_grid

    # the metric sees a 1 px error: the same fit moved by 1 source px fails it everywhere
    def off_by_one(x, y):
        sx, sy = sol.transform(x, y)
        return sx + 1.0, sy

    assert np.nanmin(position_errors(off_by_one, truth, grid)) > 0.7

    # pixels: the aligned source is epoch 2022-11 resampled twice through (nearly)
    # inverse mappings, so where there is signal it matches 2022-11's own pixels far
    # better than the other epoch does. It is aligned onto 2022-06, so it lands where
    # 2022-06 has the sources: part of the epochs' ~0.17 px offset shows (measured
    # 0.0038 vs 0.0118; 0.0025 when the fit followed the WCS; a 0.3 px shift of the
    # output already gives 0.0098)
    ok = res.footprint & np.isfinite(template) & np.isfinite(res.data)
    assert ok.mean() > 0.75  # the rotated square covers ~83% of the template
    bright = ok & (other > np.percentile(other[ok], 99))
    diff_aligned = np.median(np.abs(res.data[bright] - other[bright]))
    diff_epochs = np.median(np.abs(template[bright] - other[bright]))
    assert diff_aligned <= 0.4 * diff_epochs, (diff_aligned, diff_epochs)


def test_jwst_other_epoch_mirrored_rotated_distorted():
    """Issue 4, with a known radial distortion on top of the mirror and rotation.

    Epoch 2022-11 mirrored, rotated by 140 deg, scaled by 1.03 and distorted (4 px at
    the corners), aligned against 2022-06. Looser than the undistorted case: the ~90
    matches (mostly galaxies, whose cores differ by ~0.1 px between epochs) fix a
    degree-3 surface to ~0.1 px RMS only. Against the WCS relation (tolerances as in
    ``test_jwst_epochs_identity``, plus the surface's error) and against it shifted by
    the point sources' offset (:func:`point_source_offset`). Measured here: RMS
    0.165 px, max 0.283 px on the grid inside the matched sources' hull against the
    WCS, 0.100 / 0.204 px against the point sources (before the galaxies were centred
    on their cores: 0.105 / 0.332 px against the WCS, 0.197 / 0.424 px against the
    point sources; then over 24 variants, rotations -35..200 deg, scale 1 or 1.03, +-2
    or 4 px, the RMS against the WCS was 0.10-0.32 px and the max 0.26-1.5 px).
    """
    source, template, _, mirror = _other_epoch_mirrored(
        dict(rotation_deg=140.0, scale=1.03, shift=(4.2, -3.1), corner_distortion_px=4.0))
    relation = _epoch_relation(JWST_1, JWST_2)

    def truth(x, y):
        return mirror(*relation(x, y))

    def truth_point_sources(x, y):
        ox, oy = point_source_offset()
        rx, ry = relation(x, y)
        return mirror(rx + ox, ry + oy)

    sol = gpualign.find_transform(source, template, backend="numpy")
    assert sol.mirrored
    assert sol.stats["n_match"] >= 50
    assert sol.degree >= 2, sol.cv_scores  # the distortion is seen
    grid = _grid_in_hull(sol.template_xy, template.shape)
    stats = error_stats(position_errors(sol.transform, truth, grid))
    assert stats["n_nonfinite"] == 0, stats
    assert stats["max"] <= 0.6, stats
    assert stats["rms"] <= 0.25, stats
    stats = error_stats(position_errors(sol.transform, truth_point_sources, grid))
    assert stats["max"] <= 0.4 and stats["rms"] <= 0.15, stats


@pytest.mark.parametrize("auto_depth", [True, False])
def test_decam_sparse_pair(auto_depth):
    """~8 sources each: it must align, or fail with TooFewStars/NoQuadMatch and a hint.

    What happens today: 8 usable sources at 5 sigma are fewer than 20, so automatic
    depth detects both cut-outs down to 1.5 sigma and aligns on 12 matched sources
    (without it: on 8). The WCS say identity, but those WCS are only as good as each
    exposure's astrometry: 7 of the 8 bright sources agree on a common offset of about
    (-0.5, -0.2) px (0.14" at 0.263"/px) and one (an extended source) is 0.9 px off.
    Hence a 1 px tolerance against the WCS, and a tighter check against the robust
    offset of the matched pairs at the centre (measured: 0.80 px max against the WCS,
    0.042 px at the centre; without automatic depth 0.86 and 0.064 px).
    """
    try:
        sol = gpualign.find_transform(*DECAM, auto_depth=auto_depth, backend="numpy")
    except (gpualign.TooFewStars, gpualign.NoQuadMatch) as exc:  # the other allowed outcome
        assert exc.hint and "\n" not in str(exc)
        pytest.fail(f"the DECam pair used to align; now: {exc}")
    if auto_depth:
        assert sol.thresholds == (1.5, 1.5)
        assert 10 <= sol.stats["n_match"] <= 14
    else:
        assert sol.thresholds == (5.0, 5.0)
        assert 6 <= sol.stats["n_match"] <= 8
    assert sol.degree == 1  # so few pairs cannot support a distortion surface
    dev = deviation_from_wcs(sol, *DECAM)
    assert dev.max() <= 1.0, dev.max()
    offset = np.median(sol.source_xy - sol.template_xy, axis=0)
    sx, sy = sol.transform(127.5, 127.5)
    assert np.hypot(sx - 127.5 - offset[0], sy - 127.5 - offset[1]) <= 0.12


def test_decam_sparse_pair_cli(tmp_path, restore_gpualign_logger):
    from typer.testing import CliRunner

    from gpualign.cli import app

    out = tmp_path / "o.fits"
    res = CliRunner().invoke(app, ["align", str(DECAM[0]), "-t", str(DECAM[1]), "-o",
                                   str(out), "--backend", "numpy"])
    # it aligns (test_decam_sparse_pair fails if the API does not): the CLI must too
    assert res.exit_code == 0, res.stderr
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (256, 256)
        assert hdul[0].header["CTYPE1"] == "RA---TPV"  # the template's TPV WCS kept
        assert 10 <= hdul[0].header["GA_NMAT"] <= 14  # automatic depth: 1.5 sigma
        assert hdul[0].header["GA_THR"] == "1.5/1.5"


def test_2mass_j_vs_k():
    """Crowded Galactic Centre, J and Ks (observed simultaneously, same grid).

    At 5"/px the blends differ between J and Ks (red giants dominate Ks), which shifts
    centroids by a few hundredths of a pixel coherently; measured max 0.027 px over the
    grid (RMS 0.019 px) with ~800 matches, hence 0.05 px (0.25") anywhere.
    """
    sol = gpualign.find_transform(*TWOMASS, backend="numpy")
    assert sol.stats["n_match"] >= 400
    assert sol.degree == 1, sol.cv_scores
    dev = deviation_from_wcs(sol, *TWOMASS)
    assert dev.max() <= 0.05, dev.max()
