"""Images and catalogues in the forms users hold them (issue 12, item 1).

Images: a FITS path, an image HDU (compressed too), an HDUList with an extension
(reproject's ``hdu_in``), reproject's ``(array, WCS)`` / ``(array, Header)``,
NDData, a masked array; catalogues: a Table, an ``(N, 2)`` / ``(N, 3)`` array, a
SExtractor ASCII file, a FITS_LDAC file. Each gives what the plain form gives;
anything else is one InputError saying what is accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import gpualign
from gpualign._errors import InputError
from gpualign.detect._catalog import as_catalog, read_sextractor
from gpualign.io import load_image, load_mask

SHAPE = (384, 384)
#: RMS landing error bound of the FITS_LDAC / ASCII catalogues (template px); measured
#: 0.0098 (their flux errors weight the faint stars down, though the 0.01 px scatter
#: here is the same for all).
ACC_RMS = 0.015


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(SHAPE, shift=(5.2, -3.7), rotation_deg=17.0, n_stars=300, seed=5)


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [190.0, 200.0]
    w.wcs.cdelt = [-3e-5, 3e-5]
    return w


def _same_solution(a: gpualign.Solution, b: gpualign.Solution) -> None:
    assert a.stats["n_match"] == b.stats["n_match"]
    np.testing.assert_array_equal(a.source_xy, b.source_xy)
    np.testing.assert_array_equal(a.template_xy, b.template_xy)
    grid = np.array([[0.0, 0.0], [383.0, 0.0], [0.0, 383.0], [191.5, 191.5]])
    np.testing.assert_array_equal(a.transform.map_points(grid), b.transform.map_points(grid))


# --------------------------------------------------------------------------- images


def test_array_wcs_pair_equals_the_fits_path(pair, tmp_path):
    """reproject's (array, WCS) and (array, Header) give the FITS file's pixels and WCS."""
    w = _wcs()
    path = tmp_path / "src.fits"
    fits.PrimaryHDU(pair.source, header=w.to_header(relax=True)).writeto(path)
    by_path = gpualign.align(str(path), pair.template, backend="numpy")
    assert by_path.wcs is not None  # the template has none: the source's, composed
    src = pair.source.copy()
    for given in ((pair.source, w), (pair.source, w.to_header(relax=True))):
        res = gpualign.align(given, pair.template, backend="numpy")
        np.testing.assert_array_equal(res.data, by_path.data)
        np.testing.assert_array_equal(res.footprint, by_path.footprint)
        pix = np.array([[0.0, 0.0], [100.5, 250.0], [383.0, 383.0]])
        np.testing.assert_allclose(res.wcs.all_pix2world(pix, 0),
                                   by_path.wcs.all_pix2world(pix, 0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pair.source, src)  # never modified
    data, header, mask = load_image((pair.source, w))
    assert header["CTYPE1"] == "RA---TAN" and header["CRVAL1"] == 150.1 and mask is None
    assert data.dtype == np.float32 and not np.shares_memory(data, pair.source)


def test_pair_header_of_another_size_is_refused(pair):
    hdr = fits.Header({"NAXIS": 2, "NAXIS1": 100, "NAXIS2": 100})
    with pytest.raises(InputError, match="describes 100x100 pixels but its array is 384x384"):
        load_image((pair.source, hdr))


def test_hdulist_with_ext_picks_that_hdu(pair, solve_pair):
    """The extension (source_ext/template_ext: reproject's hdu_in) chooses the HDU."""
    decoy = np.zeros(SHAPE, np.float32)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(decoy, name="DECOY"),
                         fits.ImageHDU(pair.source, name="SCI")])
    tmpl = fits.HDUList([fits.PrimaryHDU(pair.template)])
    for ext in ("SCI", 2, "2"):
        data, header, _ = load_image(hdul, ext)
        np.testing.assert_array_equal(data, pair.source)
        assert header["EXTNAME"] == "SCI"
    np.testing.assert_array_equal(load_image(hdul)[0], decoy)  # default: the first image
    sol = gpualign.find_transform(hdul, tmpl, source_ext="SCI", backend="numpy")
    _same_solution(sol, solve_pair(pair))
    with pytest.raises(InputError, match="has no extension 'WHT'"):
        load_image(hdul, "WHT", name="source")
    with pytest.raises(InputError, match="extension 0 .* is not a 2-D image"):
        load_image(hdul, 0)


def test_image_hdus_and_compressed_ones(pair, tmp_path):
    """PrimaryHDU, ImageHDU and CompImageHDU (in memory or from a .fz file) align alike."""
    counts = np.round(pair.source).astype(np.int32)  # integers: RICE_1 is lossless
    tmpl = np.round(pair.template).astype(np.int32)
    base = gpualign.find_transform(counts, tmpl, backend="numpy")
    comp = fits.CompImageHDU(counts, compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / "src.fits.fz")
    with fits.open(tmp_path / "src.fits.fz") as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        from_file = gpualign.find_transform(hdul[1], tmpl, backend="numpy")
        in_list = gpualign.find_transform(hdul, tmpl, backend="numpy")  # first 2-D image
    for given in (fits.PrimaryHDU(counts), fits.ImageHDU(counts), comp):
        _same_solution(gpualign.find_transform(given, fits.ImageHDU(tmpl), backend="numpy"),
                       base)
    _same_solution(from_file, base)
    _same_solution(in_list, base)
    res = gpualign.align(str(tmp_path / "src.fits.fz"), tmpl, backend="numpy")
    _same_solution(res.solution, base)


def test_hdus_are_not_modified(pair):
    hdu = fits.ImageHDU(pair.source.astype(">f4"), name="SCI")
    hdu.header["OBSERVER"] = "me"
    before_data, before_hdr = hdu.data.copy(), hdu.header.tostring()
    data, header, _ = load_image(hdu)
    data += 1.0
    header["OBSERVER"] = "someone else"
    np.testing.assert_array_equal(hdu.data, before_data)
    assert hdu.header.tostring() == before_hdr and hdu.data.dtype == np.dtype(">f4")


def test_masked_array_and_hdu_mask(pair):
    bad = np.zeros(SHAPE, bool)
    bad[10:20, 30:40] = True
    _, _, mask = load_image(np.ma.masked_array(pair.source, bad))
    np.testing.assert_array_equal(mask, bad)
    bits = bad.astype(np.int16) * 4
    np.testing.assert_array_equal(load_mask(fits.ImageHDU(bits), SHAPE), bits)
    np.testing.assert_array_equal(
        load_mask(fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(bits, name="BPM")]), SHAPE,
                  "BPM"), bits)


@pytest.mark.parametrize("obj, match", [
    (fits.PrimaryHDU(), "PrimaryHDU is not a 2-D image"),
    (fits.HDUList([fits.PrimaryHDU()]), "HDUList has no 2-D image HDU"),
    (fits.BinTableHDU(), "BinTableHDU is a table, not an image"),
    ((np.ones((16, 16)), None), "second item must be an astropy WCS or Header"),
    (object(), "must be an image, got object"),
    ({"data": 1}, "must be an image, got dict"),
])
def test_anything_else_says_what_is_accepted(obj, match):
    with pytest.raises(InputError, match=match) as err:
        gpualign.find_transform(obj, np.ones((16, 16)), backend="numpy")
    text = f"{err.value} {err.value.hint}"
    if "hdul[1]" not in text and "--source-ext" not in text:
        assert "HDUList" in err.value.hint and "(array, WCS)" in err.value.hint


def test_single_hdu_with_an_extension_is_refused(pair):
    with pytest.raises(InputError, match="single HDU, so extension 1 does not apply"):
        load_image(fits.ImageHDU(pair.source), 1)


# ----------------------------------------------------------------------- catalogues


def _truth(pair, which: str, seed: int) -> np.ndarray:
    """(N, 3) x, y, flux of the stars in one image, with a centroid scatter of 0.01 px."""
    inside = pair.in_template if which == "template" else pair.in_source
    xy = (pair.template_xy if which == "template" else pair.source_xy)[inside]
    xy = xy + np.random.default_rng(seed).normal(0.0, 0.01, xy.shape)
    return np.column_stack([xy, pair.flux[inside]])


@pytest.mark.parametrize("ncol", [2, 3])
def test_catalogue_arrays_equal_tables(pair, accuracy, ncol):
    """(N, 2) x, y and (N, 3) x, y, flux: the Table of the same columns, the same fit."""
    src, tmpl = _truth(pair, "source", 1)[:, :ncol], _truth(pair, "template", 2)[:, :ncol]
    if ncol == 2:  # without fluxes the rows' order ranks the stars: brightest first
        src = src[np.argsort(-_truth(pair, "source", 1)[:, 2])]
        tmpl = tmpl[np.argsort(-_truth(pair, "template", 2)[:, 2])]
    names = ("x", "y", "flux")[:ncol]
    by_table = gpualign.find_transform(None, None, source_det=Table(src, names=names),
                                       template_det=Table(tmpl, names=names),
                                       backend="numpy")
    by_array = gpualign.find_transform(None, None, source_det=src, template_det=tmpl,
                                       backend="numpy")
    _same_solution(by_array, by_table)
    # Measured 0.0014 px (x, y) and 0.0077 px (x, y, flux: the fluxes weight the faint
    # stars down, though this scatter is the same for all): the Table's, bit for bit.
    assert accuracy(by_array.transform, pair)["rms"] < {2: 0.003, 3: 0.012}[ncol]
    cat = as_catalog(src)
    np.testing.assert_array_equal(np.sort(cat.x), np.sort(src[:, 0]))  # 0-based, as given


def _write_catalogues(tmp_path, rows: np.ndarray) -> tuple:
    """The same SExtractor catalogue as ASCII_HEAD and as FITS_LDAC (1-based)."""
    n = len(rows)
    rng = np.random.default_rng(3)
    aper = rows[:, 2:3] * rng.uniform(0.2, 1.0, (n, 2))
    cols = {"NUMBER": np.arange(1, n + 1), "XWIN_IMAGE": rows[:, 0] + 1,
            "YWIN_IMAGE": rows[:, 1] + 1, "FLUX_AUTO": rows[:, 2],
            "FLUXERR_AUTO": np.sqrt(rows[:, 2]) + 10.0, "FWHM_IMAGE": np.full(n, 3.1),
            "FLAGS": (np.arange(n) % 5 == 0).astype(np.int16) * 2}
    names = ["NUMBER", "XWIN_IMAGE", "YWIN_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_APER",
             "FWHM_IMAGE", "FLAGS"]
    head = [f"#{k + 1:4d} {name}" for k, name in enumerate(names[:6])]
    head += ["#   8 FWHM_IMAGE", "#   9 FLAGS"]  # FLUX_APER takes columns 6 and 7
    lines = [f"{i + 1:6d} {cols['XWIN_IMAGE'][i]:.6f} {cols['YWIN_IMAGE'][i]:.6f} "
             f"{cols['FLUX_AUTO'][i]:.17g} {cols['FLUXERR_AUTO'][i]:.17g} {aper[i, 0]:.17g} "
             f"{aper[i, 1]:.17g} 3.1 {cols['FLAGS'][i]}" for i in range(n)]
    ascii_path = tmp_path / "cat.txt"
    ascii_path.write_text("\n".join(head + lines) + "\n")
    ldac = fits.HDUList([
        fits.PrimaryHDU(),
        fits.BinTableHDU.from_columns([fits.Column("Field Header Card", "1680A",
                                                   array=np.array(["SIMPLE  =  T"]))],
                                      name="LDAC_IMHEAD"),
        fits.BinTableHDU.from_columns([
            fits.Column("NUMBER", "J", array=cols["NUMBER"]),
            fits.Column("XWIN_IMAGE", "D", array=np.round(cols["XWIN_IMAGE"], 6)),
            fits.Column("YWIN_IMAGE", "D", array=np.round(cols["YWIN_IMAGE"], 6)),
            fits.Column("FLUX_AUTO", "D", array=cols["FLUX_AUTO"]),
            fits.Column("FLUXERR_AUTO", "D", array=cols["FLUXERR_AUTO"]),
            fits.Column("FLUX_APER", "2D", array=aper),
            fits.Column("FWHM_IMAGE", "E", array=cols["FWHM_IMAGE"]),
            fits.Column("FLAGS", "I", array=cols["FLAGS"]),
        ], name="LDAC_OBJECTS"),
    ])
    ldac_path = tmp_path / "cat.ldac"  # no .fits: told apart by its content
    ldac.writeto(ldac_path)
    return ascii_path, ldac_path, ldac


def test_fits_ldac_gives_the_ascii_catalogue(pair, tmp_path):
    ascii_path, ldac_path, ldac = _write_catalogues(tmp_path, _truth(pair, "source", 1))
    for flux_col in (None, "FLUX_APER", "FLUX_APER_1"):
        want = read_sextractor(ascii_path, flux_col=flux_col)
        for cat in (read_sextractor(ldac_path, flux_col=flux_col),
                    as_catalog(ldac_path, flux_col=flux_col),
                    as_catalog(str(ldac_path), flux_col=flux_col),
                    as_catalog(ldac, flux_col=flux_col)):
            assert len(cat) == len(want) > 100
            for name in ("x", "y", "flux", "fwhm", "flag", "sigma"):
                np.testing.assert_allclose(getattr(cat, name), getattr(want, name),
                                           rtol=1e-6, atol=1e-6, err_msg=name)
    cat = read_sextractor(ldac_path)
    truth = _truth(pair, "source", 1)
    order = np.argsort(-truth[:, 2], kind="stable")
    np.testing.assert_allclose(cat.x, truth[order, 0], atol=1e-6)  # 1-based -> 0-based
    assert set(np.unique(cat.flag)) == {0, 2}


def test_fits_ldac_through_the_api_and_the_cli(pair, tmp_path, accuracy,
                                               restore_gpualign_logger):
    from typer.testing import CliRunner

    from gpualign.cli import app

    (tmp_path / "s").mkdir()
    (tmp_path / "t").mkdir()
    _, src_ldac, _ = _write_catalogues(tmp_path / "s", _truth(pair, "source", 1))
    tmpl_ascii, _, _ = _write_catalogues(tmp_path / "t", _truth(pair, "template", 2))
    sol = gpualign.find_transform(None, None, source_det=src_ldac, template_det=tmpl_ascii,
                                  backend="numpy")
    assert accuracy(sol.transform, pair)["rms"] < ACC_RMS
    fits.PrimaryHDU(pair.source).writeto(tmp_path / "s.fits")
    out = tmp_path / "o.fits"
    res = CliRunner().invoke(app, ["align", str(tmp_path / "s.fits"), "--source-cat",
                                   str(src_ldac), "--template-cat", str(tmpl_ascii),
                                   "--output-shape", "384", "384", "-o", str(out),
                                   "--backend", "numpy"])
    assert res.exit_code == 0, res.stderr
    with fits.open(out) as hdul:
        assert hdul[0].header["GA_NMAT"] == sol.stats["n_match"]


def test_fits_without_ldac_objects_is_refused(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.ones((8, 8))).writeto(path)
    with pytest.raises(InputError, match="holds no LDAC_OBJECTS table") as err:
        as_catalog(path)
    assert "FITS_LDAC" in err.value.hint


@pytest.mark.parametrize("obj, match", [
    (np.ones((10, 4)), r"must be \(N, 2\) x, y or \(N, 3\) x, y, flux of numbers, got shape"),
    (np.ones(10), "got shape"),
    (np.array([["a", "b"]] * 10), "got shape"),
    ({"x": [1.0]}, "a catalogue cannot be a dict"),
    (3.5, "a catalogue cannot be a float"),
])
def test_other_catalogues_say_what_is_accepted(obj, match):
    with pytest.raises(InputError, match=match) as err:
        gpualign.find_transform(None, None, source_det=obj, template_det=np.ones((10, 2)),
                                backend="numpy")
    assert "FITS_LDAC" in err.value.hint and "(N, 2)" in err.value.hint
