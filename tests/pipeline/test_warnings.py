"""GpuAlignWarning: each doubtful result warns once, in one line; a good pair never does."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from typer.testing import CliRunner

import gpualign
from gpualign import backend as backend_module
from gpualign.cli._app import app
from gpualign.detect import Catalog, detect
from gpualign.pipeline._solve import warn_weak_fit
from gpualign.products._wcs import compose_wcs

SHAPE = (512, 512)


def _ours(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, gpualign.GpuAlignWarning)]


def _solve(pair, **kw) -> tuple[gpualign.Solution, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sol = gpualign.find_transform(pair.source, pair.template, backend="numpy", **kw)
    msgs = _ours(record)
    assert all("\n" not in m for m in msgs)
    return sol, msgs


def test_is_an_astropy_user_warning():
    from astropy.utils.exceptions import AstropyUserWarning

    assert issubclass(gpualign.GpuAlignWarning, AstropyUserWarning)


@pytest.mark.parametrize("kw", [dict(shift=(4.2, -3.1), rotation_deg=12.0),
                                dict(shift=(10.0, -5.0), rotation_deg=30.0,
                                     corner_distortion_px=5.0)])
def test_good_pair_warns_nothing(make_pair, kw):
    pair = make_pair((1024, 1024), **kw, n_stars=800, seed=1)
    sol, msgs = _solve(pair)
    assert msgs == []
    assert sol.stats["n_match"] > 100


def test_mirrored(make_pair):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=20.0, flip=True, n_stars=500, seed=1)
    with pytest.warns(gpualign.GpuAlignWarning, match="solution is mirrored"):
        sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    assert sol.mirrored


def test_few_matches(make_pair):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=10.0, n_stars=8, seed=3,
                     flux_range=(3e4, 3e5))
    with pytest.warns(gpualign.GpuAlignWarning, match=r"only \d matched stars"):
        sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    assert sol.stats["n_match"] < 10


def test_high_residuals(make_pair):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=10.0, n_stars=500, seed=1)
    cat = detect(pair.source)
    rng = np.random.default_rng(0)
    jit = Catalog(cat.x + rng.normal(0, 1.0, len(cat)), cat.y + rng.normal(0, 1.0, len(cat)),
                  cat.flux, cat.fwhm, cat.flag, cat.sigma, cat.shape)
    with pytest.warns(gpualign.GpuAlignWarning, match="high fit residuals"):
        gpualign.find_transform(pair.source, pair.template, source_det=jit, backend="numpy",
                                max_match_dist=8.0)


def test_extrapolated_beyond_the_stars(make_pair):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=10.0, n_stars=1500, seed=1)
    source = pair.source.copy()
    source[200:, :] = np.nan  # only the bottom strip of the source holds stars
    with pytest.warns(gpualign.GpuAlignWarning, match="extrapolated up to"):
        gpualign.find_transform(source, pair.template, backend="numpy")


def test_degree_at_its_cap(make_pair):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=10.0, n_stars=500, seed=1)
    sol, _ = _solve(pair)
    capped = dataclasses.replace(sol, degree=gpualign.fit.MAX_DEGREE)
    with pytest.warns(gpualign.GpuAlignWarning, match="is the cap"):
        warn_weak_fit(capped)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gpualign.GpuAlignWarning)
        warn_weak_fit(capped, degree_chosen=False)  # the user's degree: no warning


def test_cupy_installed_but_unusable(monkeypatch):
    def broken():
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(backend_module, "_import_cupy", broken)
    with pytest.warns(gpualign.GpuAlignWarning, match="CuPy is installed but unusable.*"
                      "insufficient"):
        assert gpualign.get_backend("auto").name == "numpy"


def test_cupy_not_installed_is_silent(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'cupy'")

    monkeypatch.setattr(backend_module, "_import_cupy", missing)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gpualign.GpuAlignWarning)
        assert gpualign.get_backend("auto").name == "numpy"


def test_wcs_fit_above_tolerance(make_pair):
    pair = make_pair((1024, 1024), shift=(4.0, 3.0), rotation_deg=10.0,
                     corner_distortion_px=30.0, n_stars=800, seed=1)
    sol, _ = _solve(pair, max_match_dist=15.0)
    assert sol.degree >= 3
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [512.0, 512.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    with pytest.warns(gpualign.GpuAlignWarning, match="output WCS .* is off by"):
        _, err = compose_wcs(w, sol.transform, (1024, 1024), max_order=2)
    assert err > 0.01


def test_cli_prints_one_warning_line_and_exits_0(make_pair, tmp_path, restore_gpualign_logger):
    pair = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=20.0, flip=True, n_stars=500, seed=1)
    fits.writeto(tmp_path / "s.fits", pair.source)
    fits.writeto(tmp_path / "t.fits", pair.template)
    args = ["align", str(tmp_path / "s.fits"), "-t", str(tmp_path / "t.fits"),
            "-o", str(tmp_path / "out.fits"), "--backend", "numpy"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpualign: warning: the solution is mirrored")


def test_batch_warnings_reach_the_parent_and_the_report(make_pair, tmp_path,
                                                        restore_gpualign_logger):
    """A batch: the mirrored frame's warning, raised in a worker process, is one stderr
    line of the parent and sits in that frame's report entry; the good frame has none."""
    import json

    flipped = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=20.0, flip=True,
                        n_stars=500, seed=1)
    good = make_pair(SHAPE, shift=(4.0, 3.0), rotation_deg=20.0, n_stars=500, seed=1)
    # one sky (same seed): the templates differ only where edge stars fall differently
    assert np.median(np.abs(flipped.template - good.template)) == 0
    fits.writeto(tmp_path / "a_good.fits", good.source)
    fits.writeto(tmp_path / "b_flipped.fits", flipped.source)
    fits.writeto(tmp_path / "t.fits", good.template)
    args = ["align", str(tmp_path / "a_good.fits"), str(tmp_path / "b_flipped.fits"),
            "-t", str(tmp_path / "t.fits"), "-o", str(tmp_path / "out"), "--backend",
            "numpy", "--report", str(tmp_path / "r.json"), "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("gpualign: warning:")]
    assert len(ours) == 1 and "mirrored" in ours[0], res.stderr
    frames = {Path(f["source"]).name: f for f in json.loads((tmp_path / "r.json").read_text())
              ["frames"]}
    assert frames["a_good.fits"]["warnings"] == []
    assert any("mirrored" in w for w in frames["b_flipped.fits"]["warnings"])
