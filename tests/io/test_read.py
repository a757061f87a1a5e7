"""Reading: which HDU ``pick_hdu`` chooses, headers without pixels, mask and weight checks.

Files are built here with astropy: an empty primary, a table, a data cube and then
the images, so "the first 2-D image" has something to skip; compressed (tiled) image
HDUs are images too.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import StdDevUncertainty, VarianceUncertainty
from astropy.table import Table

import gpualign
from gpualign.io import image_shape, load_image, load_mask, load_weight, pick_hdu, read_header

SCI = np.arange(30 * 20, dtype=np.float32).reshape(30, 20)
ERR = np.full((12, 16), 2.0, np.float32)


@pytest.fixture(scope="module")
def mef(tmp_path_factory):
    """0: empty primary, 1: table, 2: cube, 3: SCI (30x20), 4: ERR (12x16)."""
    path = tmp_path_factory.mktemp("read") / "mef.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.BinTableHDU(Table({"a": [1, 2, 3]}), name="CAT"),
        fits.ImageHDU(np.zeros((2, 3, 4), np.float32), name="CUBE"),
        fits.ImageHDU(SCI, name="SCI"),
        fits.ImageHDU(ERR, name="ERR"),
    ]).writeto(path)
    return path


def names(path, ext):
    with fits.open(path) as hdul:
        return pick_hdu(hdul, ext, str(path)).name


def test_first_2d_image_skips_empty_primary_table_and_cube(mef):
    assert names(mef, None) == "SCI"
    data, header, mask = load_image(mef)
    np.testing.assert_array_equal(data, SCI)
    assert header["EXTNAME"] == "SCI" and mask is None


@pytest.mark.parametrize(("ext", "want"), [
    (3, "SCI"), (4, "ERR"), ("4", "ERR"), ("SCI", "SCI"), ("err", "ERR"), (-1, "ERR"),
    ("-1", "ERR"),
])
def test_by_number_or_name(mef, ext, want):
    assert names(mef, ext) == want


def test_missing_extension_lists_the_hdus(mef):
    for ext in (7, "NOPE", "9"):
        with pytest.raises(gpualign.InputError) as err:
            names(mef, ext)
        msg = str(err.value)
        assert f"has no extension {ext!r}" in msg
        assert "0:PRIMARY, 1:CAT, 2:CUBE, 3:SCI, 4:ERR" in msg


@pytest.mark.parametrize("ext", [0, 1, "CAT", 2])
def test_non_image_or_not_2d_extension_is_refused(mef, ext):
    with pytest.raises(gpualign.InputError, match="is not a 2-D image"):
        names(mef, ext)


def test_no_2d_image_at_all(tmp_path):
    path = tmp_path / "t.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1]}))]).writeto(path)
    with pytest.raises(gpualign.InputError, match="no 2-D image HDU") as err:
        names(path, None)
    assert "--source-ext" in err.value.hint
    with pytest.raises(gpualign.InputError, match="no 2-D image"):
        read_header(path)


def write_compressed(path, img, **kw):
    fits.HDUList([fits.PrimaryHDU(),
                  fits.CompImageHDU(img, compression_type="GZIP_1", quantize_level=0.0,
                                    **kw)]).writeto(path)


def float_image():
    return np.random.default_rng(0).normal(100, 5, (64, 48)).astype(np.float32)


def test_compressed_image_hdu_is_picked(tmp_path):
    path = tmp_path / "c.fits"
    img = float_image()
    write_compressed(path, img, name="SCI")
    assert names(path, None) == "SCI"
    assert names(path, 1) == "SCI" and names(path, "SCI") == "SCI"
    assert image_shape(path) == (64, 48)
    hdr = read_header(path)
    assert hdr["NAXIS1"] == 48 and "ZBITPIX" not in hdr  # the image's header, not the table's
    # astropy's default name: the pixels come back exactly (GZIP, no quantisation)
    write_compressed(tmp_path / "d.fits", img)
    np.testing.assert_array_equal(load_image(tmp_path / "d.fits")[0], img)
    # integer pixels (not the fast float reader) whatever the name
    img16 = (img * 10).astype(np.int16)
    write_compressed(tmp_path / "i.fits", img16, name="SCI")
    np.testing.assert_array_equal(load_image(tmp_path / "i.fits")[0], img16)


def test_compressed_float_image_with_its_own_name_reads_its_pixels(tmp_path):
    """A tile-compressed float image named SCI (fpack's output) is decompressed, not read
    as the raw bytes of its binary table (the fast float reader must not take it)."""
    path = tmp_path / "c.fits"
    img = float_image()
    write_compressed(path, img, name="SCI")
    np.testing.assert_array_equal(load_image(path)[0], img)


def test_read_header_and_shape_read_no_pixels(mef, monkeypatch):
    def no_pixels(self):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(fits.hdu.image._ImageBaseHDU, "data", property(no_pixels))
    monkeypatch.setattr(fits.CompImageHDU, "data", property(no_pixels))
    with fits.open(mef) as hdul, pytest.raises(AssertionError, match="pixels were read"):
        hdul[3].data  # noqa: B018  (the trap works)
    assert image_shape(mef) == SCI.shape
    assert image_shape(mef, "ERR") == ERR.shape
    assert image_shape(mef, 4) == ERR.shape
    hdr = read_header(mef, "SCI")
    assert (hdr["NAXIS2"], hdr["NAXIS1"]) == SCI.shape and hdr["EXTNAME"] == "SCI"
    monkeypatch.undo()
    # ... and agree with the pixels
    assert load_image(mef, "ERR")[0].shape == image_shape(mef, "ERR")


def test_read_header_is_a_copy_and_missing_files_are_input_errors(mef, tmp_path):
    a = read_header(mef)
    a["FOO"] = 1
    assert "FOO" not in read_header(mef)
    with pytest.raises(gpualign.InputError, match="mask file not found"):
        read_header(tmp_path / "nope.fits", what="mask")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"this is not FITS" * 200)
    with pytest.raises(gpualign.InputError, match="cannot read the image header"):
        read_header(bad)


# -- masks ---------------------------------------------------------------------------


def test_load_mask_keeps_bits_and_type():
    bits = np.array([[0, 1, 2], [4, 1024, 3]], dtype=">u2")  # big-endian, as FITS
    m = load_mask(bits, (2, 3))
    assert m.dtype == np.uint16 and m.dtype.byteorder in "=|"
    np.testing.assert_array_equal(m, bits)
    b = load_mask(np.eye(3, dtype=bool), (3, 3))
    assert b.dtype == bool
    f = load_mask(np.array([[0.0, 3.0], [8.0, 1.0]]), (2, 2))  # integral floats
    assert f.dtype == np.int64 and f.tolist() == [[0, 3], [8, 1]]


@pytest.mark.parametrize("bad", [
    np.array([[0.5, 0.0]]), np.array([[-1.0, 0.0]]), np.array([[np.nan, 0.0]]),
])
def test_load_mask_refuses_non_integer_floats(bad):
    with pytest.raises(gpualign.InputError, match="integers or booleans"):
        load_mask(bad, (1, 2))


def test_load_mask_refuses_other_dtypes_and_shapes():
    with pytest.raises(gpualign.InputError, match="unsupported dtype"):
        load_mask(np.zeros((2, 2), complex), (2, 2))
    with pytest.raises(gpualign.InputError, match=r"shape \(2, 3\) differs .* \(3, 2\)"):
        load_mask(np.zeros((2, 3), bool), (3, 2))


def test_load_mask_from_fits_picks_like_images(tmp_path):
    path = tmp_path / "m.fits"
    bits = (np.arange(12).reshape(3, 4) % 3).astype(np.int16)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(bits, name="DQ")]).writeto(path)
    m = load_mask(path, (3, 4))
    assert m.dtype == np.int16 and m.dtype.byteorder in "=|"
    np.testing.assert_array_equal(m, bits)
    np.testing.assert_array_equal(load_mask(str(path), (3, 4), ext="DQ"), bits)
    with pytest.raises(gpualign.InputError, match="no extension 'SCI'"):
        load_mask(path, (3, 4), ext="SCI")
    with pytest.raises(gpualign.InputError, match="mask file not found"):
        load_mask(tmp_path / "none.fits", (3, 4))


# -- weights -------------------------------------------------------------------------


def test_load_weight_is_float64_of_the_right_shape(tmp_path):
    w = load_weight(np.array([[1, 2], [3, 4]], dtype=">i4"), (2, 2))
    assert w.dtype == np.float64 and w.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    u = load_weight(VarianceUncertainty(np.full((2, 2), 9.0, np.float32)), (2, 2))
    assert u.dtype == np.float64 and (u == 9.0).all()
    s = load_weight(StdDevUncertainty(np.full((2, 2), 3.0)), (2, 2))  # the array, as given
    assert (s == 3.0).all()
    path = tmp_path / "w.fits"
    fits.PrimaryHDU(ERR).writeto(path)
    np.testing.assert_array_equal(load_weight(path, ERR.shape), ERR.astype(np.float64))
    with pytest.raises(gpualign.InputError, match=r"weight map's shape \(12, 16\) differs"):
        load_weight(path, (16, 12))
    with pytest.raises(gpualign.InputError, match="unsupported dtype"):
        load_weight(np.zeros((2, 2), complex), (2, 2))
    with pytest.raises(gpualign.InputError, match="unsupported dtype"):
        load_weight(np.array([["a", "b"]]), (1, 2))
