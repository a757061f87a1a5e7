"""Writing results: ``output_header``, ``result_hdus``, ``write_fits_atomic``, ``TiledFitsWriter``.

The header builder is checked card by card (each GA_* card's value from the solution
and the options, the template's layout cards left out, the optional cards only when
asked for), the HDU layout plane by plane, the atomic writer by interrupting it, and
the streamed writer byte for byte against astropy writing the same HDUs.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import gpualign
from gpualign.io import (
    WEIGHT_HDU_NAMES,
    TiledFitsWriter,
    output_header,
    result_hdus,
    write_fits_atomic,
)
from gpualign.products import AlignResult, Solution
from gpualign.transform import Transform

S = (40, 56)  # (ny, nx)


def solution(**over) -> Solution:
    kw = dict(transform=Transform.from_matrix([[1, 0, 2.5], [0, 1, -1.0]]),
              inverse=Transform.from_matrix([[1, 0, -2.5], [0, 1, 1.0]]),
              template_xy=np.zeros((0, 2)), source_xy=np.zeros((0, 2)),
              stats={"n_match": 123, "rms": 0.0125}, degree=3, mirrored=True,
              cv_scores={}, source_shape=S, template_shape=S, model="similarity")
    kw.update(over)
    return Solution(**kw)


def template_header() -> fits.Header:
    hdu = fits.ImageHDU(np.zeros(S, np.int16), name="SCI")
    h = hdu.header
    h["BZERO"], h["BSCALE"], h["BLANK"] = 32768, 1.0, -32768
    h["CHECKSUM"], h["DATASUM"] = "0000000000000000", "0"
    h["OBJECT"] = ("M31", "target")
    h["EXPTIME"] = 30.0
    h["COMMENT"] = "a template comment"
    h.append(("", "a blank card"), end=True)
    return h


def build(**kw):
    args = dict(solution=solution(), source_name="/some/dir/src_frame.fits",
                backend="numpy", interp_order=3)
    args.update(kw)
    return output_header(template_header(), None, **args)


def test_ga_cards_and_their_meaning():
    h = build(conserve_flux=True, offset=(7, -3))
    assert h["GA_FLUX"] is True
    assert (h["GA_OFFX"], h["GA_OFFY"]) == (7, -3)
    assert h["GA_VERS"] == gpualign.__version__
    assert h["GA_SRC"] == "src_frame.fits"  # the name, not the directory
    assert h["GA_NMAT"] == 123 and h["GA_RMS"] == pytest.approx(0.0125)
    assert h["GA_DEG"] == 3 and h["GA_MIRR"] is True and h["GA_MODEL"] == "similarity"
    assert h["GA_BACK"] == "numpy" and h["GA_ORDER"] == 3
    assert "GA_DIST" not in h  # the default polynomial model is not stamped
    assert "GA_TRANS" not in h
    assert any("aligned src_frame.fits onto this grid" in str(c) for c in h["HISTORY"])
    assert all(h.comments[k] for k in h if k.startswith("GA_"))  # every card explained
    # defaults and edge values
    h = build(solution=solution(stats={}, mirrored=False))
    assert h["GA_FLUX"] is False and (h["GA_OFFX"], h["GA_OFFY"]) == (0, 0)
    assert h["GA_NMAT"] == 0 and h["GA_RMS"] == -1.0  # unknown rms, not NaN (FITS has none)
    assert h["GA_MIRR"] is False
    assert build(solution=solution(distortion="tps"))["GA_DIST"] == "tps"
    long_name = "x" * 80 + ".fits"
    assert len(build(source_name=long_name)["GA_SRC"]) == 60


def test_detection_thresholds_card():
    """GA_THR: the detection depth of each image (deeper than asked: automatic depth)."""
    assert "GA_THR" not in build()  # a solution without detection thresholds
    h = build(solution=solution(thresholds=(5.0, 2.0)))
    assert h["GA_THR"] == "5.0/2.0" and "source/template" in h.comments["GA_THR"]
    assert build(solution=solution(thresholds=(None, 1.5)))["GA_THR"] == "cat/1.5"
    assert build(solution=solution(thresholds=(3.25, 5.0)))["GA_THR"] == "3.25/5.0"


def test_template_cards_kept_but_layout_cards_not():
    h = build()
    for key in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "XTENSION", "PCOUNT", "GCOUNT",
                "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "SIMPLE", "EXTEND"):
        assert key not in h, key
    assert h["OBJECT"] == "M31" and h.comments["OBJECT"] == "target"
    assert h["EXPTIME"] == 30.0
    assert "a template comment" in str(h["COMMENT"])
    assert "" not in h  # blank cards are dropped
    # without a template: only gpualign's cards
    bare = output_header(None, None, solution=solution(), source_name="a.fits",
                         backend="cupy", interp_order=1)
    assert {k for k in bare if k != "HISTORY"} == {
        "GA_FLUX", "GA_OFFX", "GA_OFFY", "GA_VERS", "GA_SRC", "GA_NMAT", "GA_RMS", "GA_DEG",
        "GA_MIRR", "GA_MODEL", "GA_BACK", "GA_ORDER"}


def test_wcs_cards_override_the_templates():
    wcs = fits.Header()
    wcs["GA_WCS"] = ("source", "where the WCS came from")
    wcs["CRPIX1"] = 12.5
    tmpl = template_header()
    tmpl["CRPIX1"] = 1.0
    h = output_header(tmpl, wcs, solution=solution(), source_name="a.fits", backend="numpy",
                      interp_order=3)
    assert h["CRPIX1"] == 12.5 and h["GA_WCS"] == "source"
    assert list(h).count("CRPIX1") == 1


def test_transform_file_and_stamps_only_when_given():
    h = build(transform_file="/tmp/solutions/frame.json",
              stamps=[("GA_TPLID", "abc123", "template fingerprint"), ("GA_BATCH", 4, "id")])
    assert h["GA_TRANS"] == "frame.json"
    assert h["GA_TPLID"] == "abc123" and h.comments["GA_TPLID"] == "template fingerprint"
    assert h["GA_BATCH"] == 4
    assert any("applied frame.json to src_frame.fits" in str(c) for c in h["HISTORY"])
    plain = build()
    assert "GA_TRANS" not in plain and "GA_TPLID" not in plain


def result(*, mask=None, weight=None, weight_type=None, dtype=np.float32) -> AlignResult:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, S).astype(dtype)
    foot = rng.uniform(size=S) > 0.2
    data[~foot] = np.nan
    hdr = build()
    return AlignResult(data=data, footprint=foot, mask=mask, solution=solution(),
                       backend="numpy", weight=weight, weight_type=weight_type, header=hdr)


def test_result_hdus_layout():
    r = result()
    hdus = result_hdus(r)
    assert [type(h) for h in hdus] == [fits.PrimaryHDU, fits.ImageHDU]
    assert hdus[1].name == "FOOTPRINT" and hdus[1].data.dtype == np.uint8
    np.testing.assert_array_equal(hdus[1].data, r.footprint.astype(np.uint8))
    assert hdus[0].header["GA_NMAT"] == 123
    np.testing.assert_array_equal(hdus[0].data, r.data)
    # a boolean mask becomes uint8; a bitmask keeps its type and bits
    hdus = result_hdus(result(mask=np.eye(*S, dtype=bool)))
    assert isinstance(hdus[0], fits.PrimaryHDU)
    assert [h.name for h in hdus[1:]] == ["FOOTPRINT", "MASK"]
    assert hdus[2].data.dtype == np.uint8
    bits = (np.arange(S[0] * S[1]).reshape(S) % 7).astype(np.int16) << 10
    hdus = result_hdus(result(mask=bits))
    assert hdus[2].data.dtype == np.int16
    np.testing.assert_array_equal(hdus[2].data, bits)
    # the weight plane is named by its type and comes last
    for wtype, name in WEIGHT_HDU_NAMES.items():
        w = np.full(S, 2.0, np.float32)
        hdus = result_hdus(result(mask=np.zeros(S, bool), weight=w, weight_type=wtype))
        assert [h.name for h in hdus[1:]] == ["FOOTPRINT", "MASK", name]
    assert set(WEIGHT_HDU_NAMES.values()) == {"VARIANCE", "WEIGHT", "STDDEV"}
    hdus = result_hdus(result(weight=np.ones(S), weight_type="stddev"))
    assert [h.name for h in hdus[1:]] == ["FOOTPRINT", "STDDEV"]
    # another header may be given
    other = fits.Header({"FOO": 1})
    assert result_hdus(r, other)[0].header["FOO"] == 1


def test_write_fits_atomic_round_trip_and_no_overwrite(tmp_path):
    r = result(mask=np.zeros(S, bool), weight=np.ones(S, np.float32), weight_type="variance")
    out = tmp_path / "out.fits"
    write_fits_atomic(out, result_hdus(r))
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:]] == ["FOOTPRINT", "MASK", "VARIANCE"]
        np.testing.assert_array_equal(hdul[0].data, r.data)
        assert hdul[0].header["GA_SRC"] == "src_frame.fits"
    before = out.read_bytes()
    with pytest.raises(gpualign.InputError, match="exists"):
        write_fits_atomic(out, result_hdus(result()))
    assert out.read_bytes() == before
    write_fits_atomic(out, result_hdus(result()), overwrite=True)
    assert out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]  # no temporary left


def test_write_fits_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old contents")

    def boom(self, *a, **k):
        with open(a[0], "wb") as f:  # a partial file at the temporary name
            f.write(b"SIMPLE  =")
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    # reported as gpualign's OutputError, one line naming the file (an OSError's text)
    with pytest.raises(gpualign.OutputError, match="cannot write .*out.fits: disk full"):
        write_fits_atomic(out, result_hdus(result()), overwrite=True)
    assert out.read_bytes() == b"old contents"
    with pytest.raises(gpualign.OutputError, match="disk full"):
        write_fits_atomic(tmp_path / "new.fits", result_hdus(result()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


def test_write_fits_atomic_missing_directory(tmp_path):
    with pytest.raises(gpualign.InputError, match="directory does not exist"):
        write_fits_atomic(tmp_path / "nope" / "o.fits", result_hdus(result()))


@pytest.mark.parametrize(("mask", "weight_type", "dtype"), [
    (None, None, np.float32), ("bool", None, np.float32), ("bool", "inverse_variance", np.float32),
    (None, "stddev", np.float64),
])
def test_tiled_writer_equals_astropy_byte_for_byte(tmp_path, mask, weight_type, dtype):
    rng = np.random.default_rng(1)
    m = (rng.uniform(size=S) > 0.9) if mask == "bool" else None
    w = rng.uniform(0.5, 2.0, S).astype(np.float32) if weight_type else None
    r = result(mask=m, weight=w, weight_type=weight_type, dtype=dtype)
    write_fits_atomic(tmp_path / "mem.fits", result_hdus(r))
    name = WEIGHT_HDU_NAMES[weight_type] if weight_type else None
    with TiledFitsWriter(tmp_path / "tiled.fits", r.header, S, dtype, mask=m is not None,
                         weight=name) as tw:
        for y0 in sorted(range(0, S[0], 7), reverse=True):  # out of order, uneven last
            y1 = min(y0 + 7, S[0])
            tw.tile(y0, y1, r.data[y0:y1], r.footprint[y0:y1].astype(np.uint8),
                    None if m is None else m[y0:y1].astype(np.uint8),
                    None if w is None else w[y0:y1])
    assert (tmp_path / "tiled.fits").read_bytes() == (tmp_path / "mem.fits").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem.fits", "tiled.fits"]


def test_tiled_writer_rejects_rows_that_do_not_fit(tmp_path):
    with TiledFitsWriter(tmp_path / "o.fits", None, S) as tw:
        with pytest.raises(ValueError, match="do not fit"):
            tw.write_rows("DATA", S[0] - 2, np.zeros((3, S[1]), np.float32))
        with pytest.raises(ValueError, match="do not fit"):
            tw.write_rows("DATA", 0, np.zeros((3, S[1] + 1), np.float32))
    with pytest.raises(ValueError, match="cannot stream"):
        TiledFitsWriter(tmp_path / "p.fits", None, S, np.int32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.fits"]
