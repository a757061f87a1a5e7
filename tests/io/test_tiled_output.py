"""Mosaic outputs written tile by tile into the FITS file equal the in-memory warp exactly.

Any tile size and any thread count give the same pixels, footprint and mask as
:func:`gpualign.warp._resample.warp` in memory; the file is a valid FITS file with the same
HDUs and header cards the in-memory path writes; the CLI and batches switch to it
for big outputs, and the aligned stars still land on the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
import gpualign.pipeline._runner as fitsout
from gpualign.cli import app
from gpualign.io import result_hdus, write_fits_atomic
from gpualign.io._tiled import TiledFitsWriter, warp_to_fits
from gpualign.products import AlignResult
from gpualign.warp._resample import warp

S = (1024, 1024)


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(23.1, -17.4), rotation_deg=31.0, corner_distortion_px=4.0,
                     n_stars=1500, seed=19)


@pytest.fixture(scope="module")
def case(pair, solve_pair, numpy_backend):
    """Source with NaN holes and a mask, its transform, and the in-memory warp."""
    src = pair.source.copy()
    src[300:320, 500:540] = np.nan
    mask = np.zeros(src.shape, bool)
    mask[600:620, 100:180] = True
    t = solve_pair(pair).transform
    ref = warp(src, t, S, backend=numpy_backend, mask=mask)
    return src, mask, t, ref


@pytest.mark.parametrize("tile_rows,threads", [(1, 1), (7, 3), (64, 2), (333, 1),
                                                 (None, 2), (1024, 1), (5000, 4)])
def test_streamed_equals_in_memory(case, numpy_backend, tmp_path, tile_rows, threads):
    src, mask, t, ref = case
    src_before, mask_before = src.copy(), mask.copy()
    hdr = fits.Header()
    hdr["OBJECT"] = "sim"
    out = tmp_path / "o.fits"
    warp_to_fits(src, t, S, out, hdr, backend=numpy_backend, mask=mask, threads=threads,
                 tile_rows=tile_rows)
    # the inputs are untouched: values, NaN holes (only the fixture's) and mask
    np.testing.assert_array_equal(src, src_before)  # NaN where NaN
    np.testing.assert_array_equal(mask, mask_before)
    assert np.isnan(src).sum() == 20 * 40 and np.isnan(src[300:320, 500:540]).all()
    with fits.open(out) as hd:
        hd.verify("exception")
        assert [h.name for h in hd] == ["PRIMARY", "FOOTPRINT", "MASK"]
        assert hd[0].header["OBJECT"] == "sim" and hd[0].data.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(hd[0].data, ref.data)  # NaN where NaN
        np.testing.assert_array_equal(hd["FOOTPRINT"].data, ref.footprint.astype(np.uint8))
        np.testing.assert_array_equal(hd["MASK"].data, ref.mask.astype(np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["o.fits"]


def test_same_file_as_the_in_memory_writer(case, numpy_backend, tmp_path):
    """Byte for byte what astropy writes for the same HDUs."""
    src, mask, t, ref = case
    hdr = fits.Header()
    hdr["GA_RMS"] = (0.01, "fit residual")
    hdr.add_history("made by a test")
    warp_to_fits(src, t, S, tmp_path / "s.fits", hdr, backend=numpy_backend, mask=mask,
                 tile_rows=100)
    result = AlignResult(ref.data, ref.footprint, ref.mask, None, "numpy")
    write_fits_atomic(tmp_path / "m.fits", result_hdus(result, hdr))
    assert (tmp_path / "s.fits").read_bytes() == (tmp_path / "m.fits").read_bytes()


def test_interrupted_write_leaves_nothing(case, numpy_backend, tmp_path):
    src, mask, t, _ = case
    calls = []

    class Boom(Exception):
        pass

    def sink(*a):
        calls.append(1)
        if len(calls) == 3:
            raise Boom

    with pytest.raises(Boom), TiledFitsWriter(tmp_path / "o.fits", None, S) as w:
        real = w.tile
        warp(src, t, S, backend=numpy_backend, tile_rows=50, threads=1,
             sink=lambda *a: (sink(*a), real(*a)))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "o.fits").write_bytes(b"old")
    with pytest.raises(gpualign.InputError, match="exists"):
        TiledFitsWriter(tmp_path / "o.fits", None, S)
    assert (tmp_path / "o.fits").read_bytes() == b"old"


def test_cli_and_batch_stream_big_outputs(pair, numpy_backend, tmp_path, monkeypatch,
                                          accuracy):
    """Above the size threshold the CLI streams; same pixels as the in-memory path."""
    fits.writeto(tmp_path / "t.fits", pair.template)
    fits.writeto(tmp_path / "s.fits", pair.source)
    args = ["align", str(tmp_path / "s.fits"), "-t", str(tmp_path / "t.fits")]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "mem.fits")])
    assert res.exit_code == 0, res.stderr
    streamed = []
    real = fitsout.warp_to_fits
    monkeypatch.setattr(fitsout, "STREAM_MIN_PIXELS", 1000)
    monkeypatch.setattr(fitsout, "warp_to_fits", lambda *a, **k: streamed.append(1)
                        or real(*a, **k))
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "str.fits"), "-v"])
    assert res.exit_code == 0, res.stderr
    assert "warp+write" in res.stderr and streamed == [1]
    with fits.open(tmp_path / "mem.fits") as a, fits.open(tmp_path / "str.fits") as b:
        np.testing.assert_array_equal(a[0].data, b[0].data)
        np.testing.assert_array_equal(a[1].data, b[1].data)
        assert a[0].header["GA_NMAT"] == b[0].header["GA_NMAT"] > 100
    [r] = gpualign.align_batch([tmp_path / "s.fits"], tmp_path / "t.fits", tmp_path / "b",
                               processes=1, backend="numpy")
    assert r.status == "ok" and r.written and streamed == [1, 1]
    with fits.open(tmp_path / "mem.fits") as a, fits.open(r.output) as b:
        np.testing.assert_array_equal(a[0].data, b[0].data)
        assert b[0].header["GA_BATCH"]
    assert accuracy(r.solution.transform, pair)["rms"] < 0.02  # measured 0.0121 px


def test_strip_detection_finds_each_star_once(pair):
    """Detection in overlapping row strips: the bright stars once each, where whole-image
    detection puts them (the truth of the strips is the untouched image's catalogue)."""
    from gpualign.detect._sep import detect
    from gpualign.detect._strips import detect_strips

    whole = detect(pair.source)
    strips = detect_strips(pair.source, strip=200, overlap=48)
    assert strips.shape == S and np.all(np.diff(strips.flux) <= 0)
    xy = np.column_stack([strips.x, strips.y])
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert d.min() > 1.0  # no star twice (from two strips)
    bright = np.flatnonzero(whole.flux > np.percentile(whole.flux, 70))
    dist = np.hypot(whole.x[bright, None] - strips.x, whole.y[bright, None] - strips.y)
    assert np.median(dist.min(axis=1)) < 0.01 and np.mean(dist.min(axis=1) < 0.1) > 0.97


STRIPS_IN_WORKERS = """
import numpy as np
from gpualign.detect import _strips as _bigdetect
from gpualign._simulate import make_mapping, simulate_pair

m = make_mapping(source_shape=(700, 600), template_shape=(700, 600), rotation_deg=5.0)
pair = simulate_pair((700, 600), mapping=m, n_stars=900, seed=4)
source = np.ascontiguousarray(pair.source)
mask = np.zeros(source.shape, bool)
mask[100:140, 200:260] = True
assert _bigdetect._processes(2, 5) == 2  # a clean process: the strips are forked
kw = dict(strip=150, overlap=48, mask=mask)
one = _bigdetect.detect_strips(source, processes=1, **kw)
two = _bigdetect.detect_strips(source, processes=2, **kw)
for name in ("x", "y", "flux", "fwhm", "flag", "sigma"):
    np.testing.assert_array_equal(getattr(two, name), getattr(one, name))
assert len(one) > 100, len(one)
inside = (one.x > 200) & (one.x < 259) & (one.y > 100) & (one.y < 139)
assert not inside.any()  # masked pixels give no detections
assert _bigdetect._FORKED == []  # nothing of the image kept after the pool
print("ok", len(one))
"""


def test_strips_in_worker_processes_equal_one_process():
    """Forked strip workers give the sequential catalogue exactly (same strips, same
    order); a mask travels with its strip. In a fresh process, where forking is safe
    (this one may run other threads)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", STRIPS_IN_WORKERS], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok ")


def test_strip_process_count(monkeypatch):
    import threading

    from gpualign.detect._strips import _processes

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert _processes(1, 10) == 1
    assert _processes(4, 1) == 1  # one strip: nothing to share
    assert _processes(3, 2) == 2  # no more workers than strips
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert _processes(4, 10) == 1  # never fork beside another thread


def test_cli_strip_detection(pair, tmp_path, monkeypatch, accuracy):
    import gpualign.pipeline._runner as cli_align

    fits.writeto(tmp_path / "t.fits", pair.template)
    fits.writeto(tmp_path / "s.fits", pair.source)
    monkeypatch.setattr(cli_align, "STRIP_DETECT_PIXELS", 1000)
    monkeypatch.setattr(cli_align, "SEQUENTIAL_DETECT_PIXELS", 1000)
    res = CliRunner().invoke(app, ["align", str(tmp_path / "s.fits"), "-t",
                                   str(tmp_path / "t.fits"), "-o", str(tmp_path / "o.fits")])
    assert res.exit_code == 0, res.stderr
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    one = gpualign.apply_transform(sol, pair.source, S, backend="numpy")
    with fits.open(tmp_path / "o.fits") as hd:
        assert hd[0].header["GA_NMAT"] > 0.8 * sol.stats["n_match"]
        diff = np.abs(hd[0].data - one.data)[one.footprint]
        assert np.median(diff) < 0.5  # ADU; sky noise is ~10 ADU
    assert accuracy(sol.transform, pair)["rms"] < 0.02  # measured 0.0121 px


@pytest.mark.parametrize("shape", [(300, 257), (64, 1030), (1024, 1024)])
def test_prefilter_blocks_equal_whole_lines(numpy_backend, shape):
    """The prefilter's threaded row blocks and transposed column blocks give exactly the
    whole-array 1-D filters (axis 1, then axis 0, float32 between)."""
    from scipy import ndimage

    from gpualign.warp._resample import prefilter

    img = (np.random.default_rng(1).random(shape) * 1000).astype(np.float32)
    for order in (2, 3, 5):
        ref = img
        for axis in (1, 0):
            ref = ndimage.spline_filter1d(ref, order, axis=axis, output=np.float32,
                                          mode="mirror")
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(prefilter(numpy_backend, img, order, threads), ref)
        mine = img.copy()
        assert prefilter(numpy_backend, mine, order, 2, overwrite=True) is mine
        np.testing.assert_array_equal(mine, ref)
