"""Sizes are checked before anything is allocated or written."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app
from gpualign.io import load_image

HUGE = 1_000_000  # a side: 4 TB of float32, more than any test machine has


def _huge_header_file(path):
    h = fits.Header()
    h["SIMPLE"], h["BITPIX"], h["NAXIS"] = True, -32, 2
    h["NAXIS1"] = h["NAXIS2"] = 200_000
    path.write_bytes(h.tostring().encode("ascii") + b"\0" * 2880)
    return path


def test_header_declaring_more_pixels_than_the_file_holds(tmp_path):
    path = _huge_header_file(tmp_path / "huge.fits")
    with pytest.raises(gpualign.InputError, match=r"declares 200000x200000 pixels \(149 GiB\)"):
        load_image(path)


def test_truncated_file_is_named_as_such(tmp_path):
    data = np.ones((300, 300), np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "ok.fits")
    raw = (tmp_path / "ok.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(gpualign.InputError, match="truncated"):
        load_image(tmp_path / "cut.fits")


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    pair = make_pair((160, 160), shift=(2.0, 1.0), n_stars=150, seed=9)
    d = tmp_path_factory.mktemp("sizes")
    fits.PrimaryHDU(pair.source).writeto(d / "s.fits")
    fits.PrimaryHDU(pair.template).writeto(d / "t.fits")
    return d


def test_output_shape_beyond_memory(files):
    with pytest.raises(gpualign.InputError, match="output needs .* GiB, more than"):
        gpualign.align(files / "s.fits", files / "t.fits", backend="numpy",
                       output_shape=(HUGE, HUGE))


def test_output_file_beyond_the_disk(files, tmp_path, restore_gpualign_logger):
    res = CliRunner().invoke(app, ["align", str(files / "s.fits"), "-t", str(files / "t.fits"),
                                   "-o", str(tmp_path / "o.fits"), "--output-shape",
                                   str(HUGE), str(HUGE), "--backend", "numpy"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "free on the output's disk" in lines[0], lines
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
