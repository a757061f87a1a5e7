"""``gpualign align | demo | --version`` through typer's CliRunner, on simulated FITS files.

The output must be the template's grid (shape, header, WCS) with provenance keywords
and a footprint extension, the same pixels as the API gives with the same options,
and star positions measured in it must land where the truth says; options reach the
engine; an existing output is never replaced without --overwrite; writes are atomic.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app
from gpualign.detect._sep import detect

S = (512, 512)


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    """The CLI reconfigures the gpualign logger; every test here puts it back."""
    yield


def run(*args: object, code: int = 0):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


def template_header() -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [256.5, 250.0]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.cd = [[-5.0e-5, 1.0e-6], [1.2e-6, 5.0e-5]]
    h = w.to_header()
    h["OBJECT"] = ("COSMOS-SIM", "target")
    h["EXPTIME"] = 300.0
    h["FILTER"] = "r"
    return h


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(14.3, -9.6), rotation_deg=20.0, n_stars=600, seed=41)


@pytest.fixture(scope="module")
def files(pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fits.PrimaryHDU(pair.template, header=template_header()).writeto(d / "template.fits")
    src_hdr = fits.Header({"OBJECT": "SOURCE-FRAME", "EXPTIME": 120.0})
    fits.PrimaryHDU(pair.source, header=src_hdr).writeto(d / "source.fits")
    # multi-extension copies: pixels in a named extension after an empty primary
    for name, data in (("source", pair.source), ("template", pair.template)):
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((16, 16), np.float32),
                                                       name="DQ"),
                      fits.ImageHDU(data, name="SCI")]).writeto(d / f"{name}_mef.fits")
    return d


@pytest.fixture(scope="module")
def aligned(files):
    """The default CLI run, -v (the output and the log), done once."""
    out = files / "aligned.fits"
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
              "--backend", "numpy", "-v")
    with fits.open(out) as hdul:
        hdus = {h.name: (h.header.copy(), None if h.data is None else h.data.copy())
                for h in hdul}
    return out, res, hdus


@pytest.fixture(scope="module")
def api_result(pair):
    return gpualign.align(pair.source, pair.template, backend="numpy")


def test_output_grid_header_and_wcs(aligned, files):
    _, _, hdus = aligned
    hdr, data = hdus["PRIMARY"]
    assert data.shape == S and data.dtype == np.dtype(">f4")
    tmpl_hdr = fits.getheader(files / "template.fits")
    structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"}
    keys = [k for k in tmpl_hdr if k not in structural]
    assert {"OBJECT", "FILTER", "CTYPE1", "CRPIX2", "CRVAL1", "PC1_2"} <= set(keys)
    for key in keys:
        assert hdr[key] == tmpl_hdr[key], key
    assert hdr["OBJECT"] != "SOURCE-FRAME"
    # the WCS describes the aligned pixels exactly as it did the template's
    px = np.array([[0.0, 0.0], [511.0, 3.0], [200.5, 300.25]])
    assert np.array_equal(WCS(hdr).all_pix2world(px, 0), WCS(tmpl_hdr).all_pix2world(px, 0))


def test_provenance_keywords(aligned, api_result):
    _, _, hdus = aligned
    hdr = hdus["PRIMARY"][0]
    sol = api_result.solution
    assert hdr["GA_VERS"] == gpualign.__version__
    assert hdr["GA_SRC"] == "source.fits"
    assert hdr["GA_NMAT"] == sol.stats["n_match"]
    assert hdr["GA_RMS"] == pytest.approx(sol.stats["rms"], rel=1e-9)
    assert hdr["GA_DEG"] == sol.degree == 1
    assert hdr["GA_MIRR"] is False
    assert hdr["GA_BACK"] == "numpy"
    assert hdr["GA_ORDER"] == 3
    assert any("gpualign" in str(h) for h in hdr["HISTORY"])


def test_same_pixels_and_footprint_as_the_api(aligned, api_result):
    _, _, hdus = aligned
    assert np.array_equal(hdus["PRIMARY"][1], api_result.data, equal_nan=True)
    foot = hdus["FOOTPRINT"][1]
    assert foot.dtype == np.uint8 and set(np.unique(foot)) == {0, 1}
    assert np.array_equal(foot.astype(bool), api_result.footprint)
    assert np.isnan(hdus["PRIMARY"][1][foot == 0]).all()
    assert np.isfinite(hdus["PRIMARY"][1][foot == 1]).all()


def test_stars_in_the_output_land_on_the_truth(aligned, pair, accuracy, api_result):
    """Stars measured in the written image sit at their true template positions."""
    _, _, hdus = aligned
    data = hdus["PRIMARY"][1].astype(np.float32)
    cat = detect(data)
    bright = cat.take(np.arange(min(60, len(cat))))
    truth = pair.template_xy
    d, i = cKDTree(truth).query(bright.xy)
    ok = d < 1.0
    # keep isolated stars away from the footprint edge (no truncated profiles)
    dn, _ = cKDTree(truth).query(truth[i[ok]], k=2)
    iso = dn[:, 1] > 8
    off = (bright.xy[ok] - truth[i[ok]])[iso]
    assert len(off) >= 25
    # measured: mean offset (0.015, -0.025) px, median distance 0.027 px
    assert np.all(np.abs(off.mean(axis=0)) < 0.03), off.mean(axis=0)
    assert np.median(np.hypot(*off.T)) < 0.05
    # and the transform behind it (the API's, identical pixels) is accurate
    assert accuracy(api_result.transform, pair)["rms"] <= 0.0065  # measured 0.0033 px


def test_verbose_prints_fit_statistics(aligned, api_result):
    _, res, hdus = aligned
    line = next(x for x in res.stderr.splitlines() if "matches" in x)
    s = api_result.solution.stats
    assert f"{s['n_match']} matches" in line
    m = re.search(r"x mean (\S+) median (\S+) std (\S+), y mean (\S+) median (\S+) "
                  r"std (\S+), rms ([0-9.]+)", line)
    assert m, line
    keys = ["x_mean", "x_median", "x_std", "y_mean", "y_median", "y_std", "rms"]
    for key, value in zip(keys, m.groups(), strict=True):
        assert float(value) == pytest.approx(s[key], abs=1e-4), key
    assert "held-out RMS by degree" in res.stderr


def test_quiet_by_default(files, tmp_path):
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o",
              tmp_path / "o.fits", "--backend", "numpy")
    assert "matches" not in res.stderr
    mode = stat.S_IMODE(os.stat(tmp_path / "o.fits").st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)  # not mkstemp's private 0600


@pytest.fixture(scope="module")
def distorted_files(make_pair, tmp_path_factory):
    pair = make_pair(S, shift=(4.2, -3.1), rotation_deg=-35.0, corner_distortion_px=6.0,
                     n_stars=1000, seed=31)
    d = tmp_path_factory.mktemp("dist")
    fits.PrimaryHDU(pair.template).writeto(d / "t.fits")
    fits.PrimaryHDU(pair.source).writeto(d / "s.fits")
    return pair, d


def test_simple_is_affine_only(distorted_files, tmp_path, accuracy):
    pair, d = distorted_files
    run("align", d / "s.fits", "-t", d / "t.fits", "-o", tmp_path / "full.fits",
        "--backend", "numpy")
    run("align", d / "s.fits", "-t", d / "t.fits", "-o", tmp_path / "simple.fits",
        "--backend", "numpy", "--simple")
    assert fits.getheader(tmp_path / "full.fits")["GA_DEG"] >= 3
    assert fits.getheader(tmp_path / "simple.fits")["GA_DEG"] == 1
    api = gpualign.align(pair.source, pair.template, spline_order=0, backend="numpy")
    assert np.array_equal(fits.getdata(tmp_path / "simple.fits"), api.data, equal_nan=True)
    # affine only cannot follow a 6 px distortion; the default can
    full = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    assert accuracy(api.transform, pair)["rms"] > 0.1
    assert accuracy(full.transform, pair)["rms"] < 0.03  # measured 0.0177 px


def test_existing_output_needs_overwrite(files, tmp_path):
    out = tmp_path / "o.fits"
    out.write_bytes(b"precious")
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
              "--backend", "numpy", code=2)
    assert "exists" in res.stderr and "--overwrite" in res.stderr
    assert out.read_bytes() == b"precious"
    run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
        "--backend", "numpy", "--overwrite")
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == S and "GA_VERS" in hdul[0].header
    assert sorted(os.listdir(tmp_path)) == ["o.fits"]


def _sextractor(path, xy0, flux):
    """SExtractor ASCII_HEAD catalogue (1-based positions)."""
    head = ["#   1 NUMBER                 Running object number",
            "#   2 X_IMAGE                Object position along x                    [pixel]",
            "#   3 Y_IMAGE                Object position along y                    [pixel]",
            "#   4 FLUX_AUTO              Flux within a Kron-like elliptical aperture [count]",
            "#   5 FLUX_APER              Flux vector within fixed circular aperture(s) [count]",
            "#   6 FWHM_IMAGE             FWHM assuming a gaussian core              [pixel]",
            "#   7 FLAGS                  Extraction flags"]
    rows = [f"{k + 1:6d} {x + 1:10.4f} {y + 1:10.4f} {f:12.3f} {0.5 * f:12.3f} 3.000 0"
            for k, ((x, y), f) in enumerate(zip(xy0, flux, strict=True))]
    path.write_text("\n".join(head + rows) + "\n")


@pytest.fixture(scope="module")
def catalogues(pair, files):
    """The user's own detections of each image, as SExtractor catalogues."""
    out = {}
    for name, img in (("source", pair.source), ("template", pair.template)):
        cat = detect(img)
        _sextractor(files / f"{name}.cat", cat.xy, cat.flux)
        out[name] = files / f"{name}.cat"
    return out


@pytest.mark.parametrize("which", ["source", "template", "both"])
def test_catalogue_options(which, files, catalogues, tmp_path, pair, accuracy):
    out = tmp_path / "o.fits"
    args = ["align", files / "source.fits", "-t", files / "template.fits", "-o", out,
            "--backend", "numpy", "--flux-col", "FLUX_APER"]
    kw = {}
    if which in ("source", "both"):
        args += ["--source-cat", catalogues["source"]]
        kw["source_det"] = catalogues["source"]
    if which in ("template", "both"):
        args += ["--template-cat", catalogues["template"]]
        kw["template_det"] = catalogues["template"]
    run(*args)
    api = gpualign.align(pair.source, pair.template, flux_col="FLUX_APER", backend="numpy",
                         **kw)
    # measured: source 0.0035, template 0.0034, both 0.0072 px
    bound = {"source": 0.0065, "template": 0.0065, "both": 0.013}[which]
    assert accuracy(api.transform, pair)["rms"] <= bound
    assert np.array_equal(fits.getdata(out), api.data, equal_nan=True)
    assert fits.getheader(out)["GA_NMAT"] == api.solution.stats["n_match"]


def test_template_catalogue_without_template_image(files, catalogues, tmp_path, pair,
                                                   accuracy):
    out = tmp_path / "o.fits"
    res = run("align", files / "source.fits", "--template-cat", catalogues["template"],
              "-o", out, "--backend", "numpy", code=2)
    assert "--output-shape" in res.stderr
    run("align", files / "source.fits", "--template-cat", catalogues["template"], "-o", out,
        "--backend", "numpy", "--output-shape", "512", "512")
    api = gpualign.align(pair.source, None, template_det=catalogues["template"],
                         output_shape=S, backend="numpy")
    assert accuracy(api.transform, pair)["rms"] <= 0.0065  # measured 0.0034 px
    data = fits.getdata(out)
    assert data.shape == S
    assert np.array_equal(data, api.data, equal_nan=True)


@pytest.mark.parametrize("ext", [["--source-ext", "SCI", "--template-ext", "SCI"],
                                 ["--source-ext", "2", "--template-ext", "2"],
                                 ["--source-ext", "sci", "--template-ext", "2"]])
def test_extensions_named_and_numbered(ext, files, aligned, tmp_path):
    out = tmp_path / "o.fits"
    run("align", files / "source_mef.fits", "-t", files / "template_mef.fits", "-o", out,
        "--backend", "numpy", *ext)
    assert np.array_equal(fits.getdata(out), aligned[2]["PRIMARY"][1], equal_nan=True)


def test_extension_defaults_to_first_image(files, aligned, tmp_path):
    """Without --*-ext the first 2-D image HDU is read (here DQ, a blank 16x16)."""
    out = tmp_path / "o.fits"
    res = run("align", files / "source_mef.fits", "-t", files / "template_mef.fits", "-o",
              out, "--backend", "numpy", code=1)
    assert "usable stars" in res.stderr


def test_interp_order_cval_output_shape(files, pair, tmp_path):
    out = tmp_path / "o.fits"
    run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
        "--backend", "numpy", "--interp-order", "1", "--cval", "-999", "--output-shape",
        "300", "600")
    api = gpualign.align(pair.source, pair.template, interp_order=1, cval=-999.0,
                         output_shape=(300, 600), backend="numpy")
    with fits.open(out) as hdul:
        data, foot, hdr = hdul[0].data, hdul["FOOTPRINT"].data, hdul[0].header
    assert data.shape == (300, 600) and hdr["GA_ORDER"] == 1
    assert np.array_equal(data, api.data)
    assert (foot == 0).sum() > 1000  # the grid runs past the source's right edge
    assert np.all(data[foot == 0] == -999.0) and np.all(data[foot == 1] != -999.0)
    # order 1 really is linear interpolation: compare with scipy at the mapped positions
    from scipy import ndimage

    yy, xx = np.mgrid[100:110, 200:210]
    sx, sy = api.transform(xx.astype(float), yy.astype(float))
    ref = ndimage.map_coordinates(pair.source.astype(np.float64), [sy, sx], order=1)
    assert np.allclose(data[100:110, 200:210], ref, rtol=1e-5, atol=1e-3)


def test_backend_numpy(aligned):
    assert aligned[2]["PRIMARY"][0]["GA_BACK"] == "numpy"


def test_version():
    res = run("--version")
    assert res.stdout.strip() == f"gpualign {gpualign.__version__}"


def test_demo(tmp_path):
    """The demo's real JWST image, warped through a known distortion and recovered."""
    res = run("demo", "--outdir", tmp_path / "demo", "--backend", "numpy")
    m = re.search(r"error vs truth: RMS ([0-9.]+) px, max ([0-9.]+) px", res.stdout)
    assert m, res.stdout
    rms, worst = float(m.group(1)), float(m.group(2))
    assert rms <= 0.03, res.stdout  # the bound for distorted fields; measured 0.0277
    assert worst <= 0.15, res.stdout  # measured 0.137 px
    for name in ("template.fits", "source_distorted.fits", "aligned.fits"):
        assert (tmp_path / "demo" / name).is_file()
    assert fits.getdata(tmp_path / "demo" / "aligned.fits").shape == (900, 900)
    assert "temporary directory" not in res.stdout


def test_demo_writes_to_a_new_temporary_directory_by_default(tmp_path, monkeypatch):
    """Without --outdir nothing lands in the current directory: a fresh
    ``gpualign-demo-*`` directory in the system's temporary directory, named in the report."""
    import tempfile

    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    res = run("demo", "--backend", "numpy")
    m = re.search(r"files *: (.+)/template\.fits, source_distorted\.fits, aligned\.fits",
                  res.stdout)
    assert m, res.stdout
    outdir = Path(m.group(1))
    assert outdir.parent == tmp and outdir.name.startswith("gpualign-demo-"), outdir
    assert "temporary directory" in res.stdout
    assert sorted(p.name for p in outdir.iterdir()) == [
        "aligned.fits", "source_distorted.fits", "template.fits"]
    assert list(cwd.iterdir()) == []
    assert len(list(tmp.iterdir())) == 1


class _Boom(OSError):
    pass


def _failing_writeto(self, name, *args, **kwargs):
    """Write half a FITS file, then fail as a full disk would."""
    with open(name, "wb") as f:
        f.write(b"SIMPLE  =                    T" + b" " * 2000)
    raise _Boom("No space left on device")


def test_atomic_write_new_output(files, tmp_path, monkeypatch):
    monkeypatch.setattr(fits.HDUList, "writeto", _failing_writeto)
    out = tmp_path / "o.fits"
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
              "--backend", "numpy", code=1)
    assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
    assert os.listdir(tmp_path) == []  # no partial output, no temporary file


def test_atomic_write_keeps_the_old_output(files, tmp_path, monkeypatch):
    out = tmp_path / "o.fits"
    out.write_bytes(b"previous result")
    monkeypatch.setattr(fits.HDUList, "writeto", _failing_writeto)
    run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
        "--backend", "numpy", "--overwrite", code=1)
    assert out.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["o.fits"]


def test_atomic_write_on_interrupt(tmp_path, monkeypatch):
    from gpualign.io import write_fits_atomic

    def interrupted(self, name, *a, **k):
        with open(name, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_fits_atomic(tmp_path / "o.fits", [fits.PrimaryHDU(np.zeros((8, 8)))])
    assert os.listdir(tmp_path) == []


def test_inputs_not_modified_by_the_cli(files, catalogues, tmp_path):
    inputs = [files / "source.fits", files / "template.fits", files / "source_mef.fits",
              catalogues["source"], catalogues["template"]]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in inputs]
    run("align", files / "source.fits", "-t", files / "template.fits", "-o",
        tmp_path / "a.fits", "--backend", "numpy")
    run("align", files / "source_mef.fits", "-t", files / "template.fits", "-o",
        tmp_path / "b.fits", "--backend", "numpy", "--source-ext", "SCI", "--source-cat",
        catalogues["source"], "--template-cat", catalogues["template"])
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in inputs] == before
