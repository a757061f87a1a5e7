"""The WCS prior on catalogues (gpualign.match._prior): right WCSs match, wrong ones fail.

Stars are drawn on the sky and projected through each image's TRUE WCS (the source's
with a SIP distortion), with centroid noise and stars seen in one image only; the
truth (template px -> source px) is the true WCSs' relation. The prior is handed the
true WCSs or wrong ones (off by 3 arcmin or 2 deg, rotated 30 deg, mirrored); a wrong
one must fail verification (the caller then matches blind), never give a mapping.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, Sip

import gpualign
from gpualign._simulate._sky import tan_wcs, wrong_wcs
from gpualign.detect import Catalog
from gpualign.match import MatchSettings
from gpualign.match._cross import apply_matrix
from gpualign.match._prior import WcsPrior, celestial_wcs, wcs_prior_match

CRVAL = (150.1, 2.2)


#: :func:`tan_wcs` centred on this module's pointing
_tan = partial(tan_wcs, crval=CRVAL)


def _with_sip(w: WCS, shape, corner_px: float) -> WCS:
    """``w`` with a quadratic SIP distortion moving the corners by about ``corner_px``."""
    out = w.deepcopy()
    out.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    r = shape[1] / 2.0
    a = np.zeros((3, 3))
    b = np.zeros((3, 3))
    a[2, 0] = corner_px / r**2
    b[0, 2] = 0.7 * corner_px / r**2
    out.sip = Sip(a, b, None, None, out.wcs.crpix)
    out.wcs.set()
    return out


def _catalog(xy: np.ndarray, flux: np.ndarray, shape) -> Catalog:
    ny, nx = shape
    ok = (xy[:, 0] > -0.5) & (xy[:, 0] < nx - 0.5) & (xy[:, 1] > -0.5) & (xy[:, 1] < ny - 0.5)
    xy, flux = xy[ok], flux[ok]
    order = np.argsort(-flux)
    n = len(order)
    return Catalog(xy[order, 0], xy[order, 1], flux[order], np.full(n, 3.0), np.zeros(n, int),
                   np.full(n, 0.05), tuple(shape))


def _pair(tw: WCS, sw: WCS, t_shape, s_shape, *, seed: int, n_sky: int = 3000,
          field_deg: float = 0.25, src_keep: float = 0.7, noise: float = 0.05):
    """Catalogues of one sky through two WCSs: the source sees the brighter stars only."""
    rng = np.random.default_rng(seed)
    ra = CRVAL[0] + rng.uniform(-field_deg, field_deg, n_sky) / np.cos(np.deg2rad(CRVAL[1]))
    dec = CRVAL[1] + rng.uniform(-field_deg, field_deg, n_sky)
    flux = 10 ** rng.uniform(2, 5, n_sky)
    txy = np.column_stack(tw.all_world2pix(ra, dec, 0)) + rng.normal(0, noise, (n_sky, 2))
    sxy = np.column_stack(sw.all_world2pix(ra, dec, 0)) + rng.normal(0, noise, (n_sky, 2))
    bright = flux > np.quantile(flux, 1 - src_keep)
    return _catalog(txy, flux, t_shape), _catalog(sxy[bright], flux[bright], s_shape)


def _truth(tw: WCS, sw: WCS, xy: np.ndarray) -> np.ndarray:
    ra, dec = tw.all_pix2world(xy[:, 0], xy[:, 1], 0)
    return np.column_stack(sw.all_world2pix(ra, dec, 0))


T_SHAPE, S_SHAPE = (800, 800), (600, 700)


@pytest.fixture(scope="module")
def wcs_pair():
    tw = _tan(T_SHAPE, 0.5)
    sw = _with_sip(_tan(S_SHAPE, 0.6, crval=(CRVAL[0] + 0.01, CRVAL[1] - 0.008),
                        rotation_deg=12.0), S_SHAPE, 3.0)
    tmpl, src = _pair(tw, sw, T_SHAPE, S_SHAPE, seed=5)
    return tw, sw, tmpl, src


def _check_right(sol, tw, sw, tmpl):
    """The initial affine lands the template's stars within 3 source px of the truth
    (an affine cannot follow the SIP distortion, 3 px at the corners: the fit's job;
    measured 2.1 px; a wrong match is off by tens of px at least)."""
    assert sol is not None
    xy = tmpl.xy[:300]
    err = np.hypot(*(apply_matrix(sol.matrix, xy) - _truth(tw, sw, xy)).T)
    inside = np.all((_truth(tw, sw, xy) > 0) & (_truth(tw, sw, xy) < [700, 600]), axis=1)
    assert inside.sum() > 100
    assert np.max(err[inside]) < 3.0, np.max(err[inside])


def test_true_wcs_with_sip_matches(wcs_pair):
    tw, sw, tmpl, src = wcs_pair
    prior = WcsPrior.from_headers(tw.to_header(), sw.to_header(relax=True))
    assert prior is not None and "SIP" in prior.source_wcs.wcs.ctype[0]
    found = wcs_prior_match(src, tmpl, prior)
    _check_right(found.solution, tw, sw, tmpl)
    assert found.solution.n_match >= 50
    assert not found.solution.mirrored


def test_a_small_wcs_error_is_absorbed(wcs_pair):
    """Off by 20 arcsec, rotated 0.3 deg and scaled by 0.4%: within the uncertainty."""
    tw, sw, tmpl, src = wcs_pair
    off = sw.deepcopy()
    t = np.deg2rad(0.3)
    off.wcs.cd = 1.004 * sw.wcs.cd @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    off.wcs.crval = [sw.wcs.crval[0] + 20 / 3600.0, sw.wcs.crval[1]]
    off.wcs.set()
    found = wcs_prior_match(src, tmpl, WcsPrior(tw, off))
    _check_right(found.solution, tw, sw, tmpl)


@pytest.mark.parametrize("kind", ["3arcmin", "2deg", "rot30", "mirror"])
def test_a_wrong_wcs_fails_verification(wcs_pair, kind):
    tw, sw, tmpl, src = wcs_pair
    found = wcs_prior_match(src, tmpl, WcsPrior(tw, wrong_wcs(sw, kind)))
    assert found.solution is None, found
    assert found.reason and "\n" not in found.reason


def test_unrelated_fields_never_match():
    """Same density, same claimed sky, different stars: no false match (5 fields)."""
    tw, sw = _tan(T_SHAPE, 0.5), _tan(S_SHAPE, 0.5, rotation_deg=3.0)
    for seed in range(20, 25):
        tmpl, _ = _pair(tw, sw, T_SHAPE, S_SHAPE, seed=seed)
        _, src = _pair(tw, sw, T_SHAPE, S_SHAPE, seed=seed + 100)
        found = wcs_prior_match(src, tmpl, WcsPrior(tw, sw))
        assert found.solution is None, (seed, found)


def test_a_mirrored_pair_with_right_wcs():
    """A flipped camera with a WCS that says so: matched, mirrored; refused without mirrors."""
    tw = _tan(T_SHAPE, 0.5)
    sw = _tan(S_SHAPE, 0.5, crval=(CRVAL[0] + 0.005, CRVAL[1]), rotation_deg=40.0, flip=True)
    tmpl, src = _pair(tw, sw, T_SHAPE, S_SHAPE, seed=8)
    found = wcs_prior_match(src, tmpl, WcsPrior(tw, sw))
    _check_right(found.solution, tw, sw, tmpl)
    assert found.solution.mirrored
    refused = wcs_prior_match(src, tmpl, WcsPrior(tw, sw), allow_mirror=False)
    assert refused.solution is None and "mirror" in refused.reason


def test_coarse_source_on_a_fine_template():
    """20x (5"/px onto 0.25"/px): the deep template is cut to the source's depth."""
    tw = _tan((2000, 2000), 0.25)
    sw = _tan((300, 300), 5.0, crval=(CRVAL[0] + 0.02, CRVAL[1] - 0.03), rotation_deg=-7.0)
    tmpl, src = _pair(tw, sw, (2000, 2000), (300, 300), seed=9, n_sky=40000, field_deg=0.25,
                      src_keep=0.05, noise=0.03)
    found = wcs_prior_match(src, tmpl, WcsPrior(tw, sw))
    sol = found.solution
    assert sol is not None, found.reason
    xy = tmpl.xy[:200]
    err = np.hypot(*(apply_matrix(sol.matrix, xy) - _truth(tw, sw, xy)).T)
    assert np.max(err) < 0.3  # source px (6 template px)


def test_celestial_wcs_of_headers():
    assert celestial_wcs(None) is None
    assert celestial_wcs(fits.Header()) is None
    linear = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0,
                          "CDELT2": 1.0})
    assert celestial_wcs(linear) is None
    broken = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": 0.0,
                          "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.0})
    assert celestial_wcs(broken) is None  # singular: not usable
    w = celestial_wcs(_tan(T_SHAPE, 0.5).to_header())
    assert w is not None and w.has_celestial


def test_setting_validates():
    assert MatchSettings().wcs_prior == "auto"
    assert MatchSettings(wcs_prior="OFF").wcs_prior == "off"
    with pytest.raises(gpualign.InputError, match="wcs_prior must be one of auto, off"):
        MatchSettings(wcs_prior="on")
