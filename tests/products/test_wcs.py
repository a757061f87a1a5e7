"""World coordinates of the aligned image.

* With a template WCS, the output carries it.
* Without one, the output's WCS is the source's composed with the fitted mapping: for
  every output pixel, pixel -> sky must equal the source WCS at T(x, y), to better
  than 1e-3 source pixel, in memory and after writing and reading the FITS header
  (a plain TAN when T is affine and the source undistorted; TAN-SIP otherwise).
* Real headers: DECam's TPV (tests/data, PROVENANCE.txt) and JWST's i2d WCS; the
  JWST epochs share one grid, so the composed WCS must also agree with the epoch's
  own WCS to the registration's accuracy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS, FITSFixedWarning

import gpualign
from gpualign.cli._demo import demo_image_path
from gpualign.products._wcs import celestial_wcs, compose_wcs
from gpualign.transform._transform import Transform

DATA = Path(__file__).resolve().parents[1] / "data"


def tan_wcs(crpix=(200.0, 180.0), crval=(150.1, 2.2), sip: bool = False) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval)
    w.wcs.cd = [[-5e-5, 1e-6], [1.2e-6, 5e-5]]
    if sip:
        from astropy.wcs import Sip

        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[1, 1], a[0, 3] = 2e-5, -1e-5, 3e-8
        b[0, 2], b[2, 1] = 1.5e-5, -2e-8
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def sky_error_px(out: WCS, src: WCS, t: Transform, shape, step: int = 7) -> float:
    """max |src^-1(out(p)) - T(p)| over output pixels, in source pixels."""
    gy, gx = np.mgrid[0:shape[0]:step, 0:shape[1]:step].astype(float)
    gx, gy = gx.ravel(), gy.ravel()
    sx, sy = t(gx, gy)
    ra, dec = out.all_pix2world(gx, gy, 0)
    ra0, dec0 = src.all_pix2world(sx, sy, 0)
    # compare on the sky, expressed in source pixels (local pixel scale)
    scale = np.sqrt(abs(np.linalg.det(src.pixel_scale_matrix)))
    d = np.hypot((ra - ra0) * np.cos(np.deg2rad(dec0)), dec - dec0) / scale
    return float(d.max())


def from_header(w: WCS) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(w.to_header(relax=True).tostring()))


def similarity(deg=33.0, scale=1.07, flip=True, shift=(250.0, -40.0)) -> np.ndarray:
    th = np.deg2rad(deg)
    lin = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    if flip:
        lin = lin @ np.diag([-1.0, 1.0])
    return np.column_stack([lin, shift])


def distorted(shape=(300, 320)) -> Transform:
    coeffs = np.zeros((2, 4, 4))
    coeffs[0, 2, 0], coeffs[0, 1, 1], coeffs[1, 0, 3], coeffs[1, 2, 1] = 1.5, -0.8, 0.6, 0.4
    cx, cy = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    return Transform(similarity(), coeffs, (cx, cy, shape[1] / 2, shape[0] / 2),
                     (-1.1, 1.1, -1.1, 1.1))


@pytest.mark.parametrize("case", ["affine", "distorted", "sip-source", "sip+distorted"])
def test_composed_wcs_reproduces_source_wcs_at_t(case):
    shape = (300, 320)
    t = Transform.from_matrix(similarity()) if case in ("affine", "sip-source") else \
        distorted(shape)
    src = tan_wcs(sip=case.startswith("sip"))
    out, err = compose_wcs(src, t, shape)
    assert err < 1e-3
    assert sky_error_px(out, src, t, shape) < 1e-3
    assert sky_error_px(from_header(out), src, t, shape) < 1e-3  # astropy writes it
    assert (out.sip is None) == (case == "affine")


def test_output_carries_template_wcs(make_pair):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, n_stars=250, seed=12)
    tw = tan_wcs((128.0, 128.0))
    sw = tan_wcs((100.0, 90.0), crval=(150.3, 2.1))
    res = gpualign.align(NDData(pair.source, wcs=sw), NDData(pair.template, wcs=tw),
                         backend="numpy")
    assert res.header["GA_WCS"] == "template"
    gy, gx = np.mgrid[0:256:17, 0:256:17]
    np.testing.assert_allclose(np.array(res.wcs.all_pix2world(gx, gy, 0)),
                               np.array(tw.all_pix2world(gx, gy, 0)), atol=1e-12)


def test_source_wcs_composed_when_template_has_none(make_pair):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, flip=True,
                     corner_distortion_px=3.0, n_stars=400, seed=13)
    sw = tan_wcs((100.0, 90.0))
    res = gpualign.align(NDData(pair.source, wcs=sw), pair.template, backend="numpy")
    assert res.header["GA_WCS"] == "source+transform"
    t = res.transform
    assert t.has_distortion
    # within the box where the surfaces are defined (not clipped) the SIP is exact
    cx, cy, hx, hy = t.norm
    x0, x1 = int(np.ceil(cx + t.clip[0] * hx)), int(np.floor(cx + t.clip[1] * hx))
    y0, y1 = int(np.ceil(cy + t.clip[2] * hy)), int(np.floor(cy + t.clip[3] * hy))
    gy, gx = np.mgrid[max(y0, 0):min(y1, 255):5, max(x0, 0):min(x1, 255):5].astype(float)
    sx, sy = t(gx, gy)
    ra, dec = res.wcs.all_pix2world(gx, gy, 0)
    px, py = sw.all_world2pix(ra, dec, 0)
    assert np.max(np.hypot(px - sx, py - sy)) < 1e-3
    # whole grid, clipped edges included: there the frozen surfaces have a kink that no
    # polynomial follows (0.2 px at the outermost corner pixels here); recorded honestly
    assert res.header["GA_WCSER"] < 0.5
    # in the header that gets written
    w2 = celestial_wcs(fits.Header.fromstring(res.header.tostring()))
    ra2, dec2 = w2.all_pix2world(gx, gy, 0)
    np.testing.assert_allclose(ra2, ra, atol=1e-10)
    np.testing.assert_allclose(dec2, dec, atol=1e-10)
    # ... and the truth: the output's sky is where the source's WCS puts the true position
    tx, ty = pair.mapping(gx, gy)
    ra_t, dec_t = sw.all_pix2world(tx, ty, 0)
    scale = np.sqrt(abs(np.linalg.det(sw.pixel_scale_matrix)))
    d = np.hypot((ra - ra_t) * np.cos(np.deg2rad(dec_t)), dec - dec_t) / scale
    assert np.sqrt(np.mean(d**2)) < 0.06  # the fit itself, 400 stars on 256^2 (0.032 px)


def test_no_wcs_anywhere(make_pair):
    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, n_stars=250, seed=12)
    res = gpualign.align(pair.source, pair.template, backend="numpy")
    assert res.wcs is None and res.header["GA_WCS"] == "none"


def test_real_decam_tpv_composed(tmp_path):
    """DECam's TPV header composed with a known flip + rotation, through gpualign apply."""
    path = DATA / "DEC-OBS18a.mini.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        src = celestial_wcs(fits.getheader(path))
        data = fits.getdata(path)
    t = Transform.from_matrix(similarity(30.0, 1.0, True, (200.0, -50.0)))
    assert sky_error_px(src, src, Transform.from_matrix(np.eye(2, 3)), data.shape) == 0
    res = gpualign.apply_transform(t, str(path), data.shape, backend="numpy")
    assert res.header["GA_WCS"] == "source+transform"
    assert sky_error_px(res.wcs, src, t, data.shape, step=5) < 1e-3
    # the TPV really matters here: the plain linear composition would be off
    from gpualign.products._wcs import _linear_core

    assert sky_error_px(_linear_core(src, t), src, t, data.shape) > 0.01
    t.save(tmp_path / "t.json")
    from typer.testing import CliRunner

    from gpualign.cli import app

    out = tmp_path / "o.fits"
    r = CliRunner().invoke(app, ["apply", str(tmp_path / "t.json"), str(path), "-o", str(out),
                                 "--output-shape", "256", "256", "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(fits.getheader(out))
    assert sky_error_px(w, src, t, data.shape, step=5) < 1e-3


def test_real_jwst_epochs_composed_wcs_matches_the_epochs_own():
    """Epoch 2 (with its WCS) onto epoch 1's pixels given without WCS: the composed WCS
    reproduces epoch 2's WCS through T (1e-3 px) and agrees with epoch 1's own WCS (the
    same grid) to the registration's accuracy (0.25 px, as test_real_images)."""
    src_path = DATA / "jwst_a2744_f200w_2022-11.fits"
    tmpl_data = np.asarray(fits.getdata(demo_image_path()), np.float32)
    res = gpualign.align(src_path, tmpl_data, backend="numpy")
    assert res.header["GA_WCS"] == "source+transform"
    with fits.open(src_path) as hdul:
        hdr = next(h for h in hdul if h.data is not None and h.data.ndim == 2).header
    src = celestial_wcs(hdr)
    shape = tmpl_data.shape
    assert sky_error_px(res.wcs, src, res.transform, shape, step=15) < 1e-3
    with fits.open(demo_image_path()) as hdul:
        own = celestial_wcs(next(h for h in hdul if h.data is not None and h.data.ndim == 2)
                            .header)
    gy, gx = np.mgrid[0:shape[0]:30, 0:shape[1]:30].astype(float)
    ra, dec = res.wcs.all_pix2world(gx, gy, 0)
    px, py = own.all_world2pix(ra, dec, 0)
    assert np.max(np.hypot(px - gx, py - gy)) < 0.25  # measured 0.140 px


def test_cli_align_composes_the_source_wcs(make_pair, tmp_path, restore_gpualign_logger):
    """gpualign align with a template without WCS: the written header has the source's
    WCS composed with the fitted mapping."""
    from typer.testing import CliRunner

    from gpualign.cli import app

    pair = make_pair((256, 256), shift=(3.1, -4.2), rotation_deg=12.0, flip=True,
                     n_stars=400, seed=14)
    sw = tan_wcs((100.0, 90.0))
    fits.writeto(tmp_path / "s.fits", pair.source, header=sw.to_header())
    fits.writeto(tmp_path / "t.fits", pair.template)
    r = CliRunner().invoke(app, ["align", str(tmp_path / "s.fits"), "-t", str(tmp_path / "t.fits"),
                                 "-o", str(tmp_path / "o.fits"), "--backend", "numpy", "-q",
                                 "--save-transform", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["align", str(tmp_path / "s.fits"), "-t", str(tmp_path / "t.fits"),
                                 "-o", str(tmp_path / "p.fits"), "--backend", "numpy", "-q"])
    assert r.exit_code == 0, r.output
    t = gpualign.Transform.load(tmp_path / "t.json")
    for out in ("o.fits", "p.fits"):  # the extras path and the plain path
        hdr = fits.getheader(tmp_path / out)
        assert hdr["GA_WCS"] == "source+transform"
        assert sky_error_px(celestial_wcs(hdr), sw, t, (256, 256)) < 1e-3
