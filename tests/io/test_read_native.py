"""FITS pixels read straight into native memory: the same values as astropy.

``_read_float_pixels`` reads unscaled float images with ``readinto`` into a native
array (short reads continued, even mid-pixel) and swaps the bytes in place; scaled
integers (BZERO/BSCALE) and tile-compressed HDUs go through astropy instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from gpualign.io import _read, load_image


def _field(rng, shape, dtype):
    img = rng.normal(100.0, 30.0, shape).astype(dtype)
    img[3, 4] = -0.0
    img[5, 6] = np.float32(1e-40)  # subnormal: swapped bytes must not be normalised
    img[7, 8] = np.inf
    img[9, 1] = np.nan
    return img


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_read_equals_astropy(tmp_path, dtype):
    """Big-endian pixels come back native and bit-identical (signed zero, subnormal,
    infinity and NaN included)."""
    rng = np.random.default_rng(8100)
    img = _field(rng, (61, 47), dtype)
    path = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")]).writeto(path)
    data, header, _ = load_image(str(path))
    assert data.dtype == np.dtype(dtype) and data.dtype.isnative
    assert data.flags.c_contiguous and data.flags.writeable and data.flags.owndata
    assert header["EXTNAME"] == "SCI"
    np.testing.assert_array_equal(data.view(f"u{data.itemsize}"),
                                  img.astype(img.dtype.newbyteorder("=")).view(
                                      f"u{data.itemsize}"))


def test_short_reads_are_completed(tmp_path, monkeypatch):
    """A read that returns fewer bytes than asked (a pipe, a network file system) is
    continued; the pixels are still right."""
    rng = np.random.default_rng(8200)
    img = _field(rng, (33, 29), np.float32)
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(img).writeto(path)
    real_open = open
    calls = []

    class Trickle:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, pos):
            return self.f.seek(pos)

        def readinto(self, view):
            calls.append(len(view))
            return self.f.readinto(view[:777])  # 777: not a whole number of pixels

    def fake_open(p, mode="r", *args, **kwargs):
        f = real_open(p, mode, *args, **kwargs)
        return Trickle(f) if str(p) == str(path) and "b" in mode and kwargs.get(
            "buffering") == 0 else f

    monkeypatch.setattr(_read, "open", fake_open, raising=False)
    data = load_image(str(path))[0]
    np.testing.assert_array_equal(data.view(np.uint32), img.view(np.uint32))
    assert len(calls) >= img.nbytes // 777


def test_scaled_integers_go_through_astropy(tmp_path):
    """BZERO/BSCALE int16 pixels: the physical values astropy gives, as float32."""
    rng = np.random.default_rng(8300)
    raw = rng.integers(-30000, 30000, (40, 50)).astype(np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.25, 32768.0
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    data = load_image(str(path))[0]
    expected = fits.getdata(path).astype(np.float32)
    assert data.dtype == np.float32 and data.dtype.isnative
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(data, (raw.astype(np.float64) * 0.25 + 32768.0)
                                  .astype(np.float32))


@pytest.mark.parametrize("ctype", ["RICE_1", "GZIP_2"])
def test_compressed_images_read_whole_and_private(tmp_path, ctype):
    """Tile-compressed HDUs are decoded by astropy (no memory map of the raw bytes):
    exact integers back, in a private native array."""
    rng = np.random.default_rng(8400)
    img = rng.integers(0, 60000, (70, 90)).astype(np.int32)
    path = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.CompImageHDU(img, compression_type=ctype)]).writeto(path)
    data = load_image(str(path))[0]
    assert data.dtype == np.float32 and data.dtype.isnative
    assert data.flags.owndata and data.flags.writeable and not isinstance(data, np.memmap)
    np.testing.assert_array_equal(data, img.astype(np.float32))
    data[0, 0] = -1.0  # the file is untouched by writes to the array
    assert fits.getdata(path, 1)[0, 0] == img[0, 0]
