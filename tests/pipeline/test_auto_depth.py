"""Automatic detection depth through the whole pipeline (issue 11, item 1).

A faint field: 1024^2, about 40 stars whose peaks in sep's detection image (the
3x3-filtered image over the background RMS, the unit of ``sep_thresh``) lie at 3-8
sigma; aperture SNRs (radius 1 FWHM) of 7-18. The default 5 sigma finds a few usable
stars in each image (0-9, about 4 typically), so registration used to stop with "only
N usable stars" or "no quad match" (29 of 30 seeds). Automatic depth detects each image
again down to 1.5 sigma, matches at the first threshold that gives 20 usable stars and
fits with the deepest catalogue.

Accuracy is limited by the photons here, not by the method: centroids of these stars
are uncertain by 0.1-0.25 px per axis, and a fit of every common star with centroids
at the Cramer-Rao limit (and the stars' own photon noise) would give a median of
0.059 px over seeds, 7% of them above 0.1 px; gpualign gives a median of 0.056 px over
30 seeds, 27 of them at most 0.1 px, the worst 0.125 px. The fainter field the
issue's author met (most stars at aperture SNR 3-8, 1.5-5 sigma in sep's detection
image: 5 sigma finds none, 2 sigma gave 0.2 px, 1.5 sigma 0.13 px) aligns to 0.12 px
median over 30 seeds (every common star at the photon limit: 0.11 px).

Safety rests on the quad verification: unrelated faint fields must not match. Normal
fields are untouched: the same solution, bit for bit, with or without automatic depth.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy.spatial import cKDTree

import gpualign
from gpualign.detect import DEPTH_LADDER, Depth, detect, filter_catalog

SHAPE = (1024, 1024)
RMS = np.sqrt(200.0 * 2.0 + 5.0**2) / 2.0  # the simulator's sky 200 ADU, gain 2, 5 e-
SIG = 3.0 / 2.3548  # PSF sigma (FWHM 3 px)
#: Peak of a star in sep's detection image, per unit flux, over the background RMS:
#: the 3x3 kernel adds 1/2 px^2 of variance per axis, pixel integration 1/12.
PEAK_PER_FLUX = 1.0 / (RMS * 2 * np.pi * (SIG**2 + 1.0 / 12.0 + 0.5))
FAINT = (3.0 / PEAK_PER_FLUX, 8.0 / PEAK_PER_FLUX)  # ~430-1140 ADU
#: The fainter field of the issue: most stars at aperture SNR 3-8 (1.5-5 sigma peaks).
FAINTER = (220.0, 700.0)


def faint_pair(make_pair, seed: int, flux_range=FAINT, **kw):
    kw = dict(dict(shift=(5.3, -2.7), rotation_deg=3.0), **kw)
    return make_pair(SHAPE, n_stars=40, flux_range=flux_range, seed=seed, **kw)


def usable_at_5_sigma(img: np.ndarray) -> int:
    return len(filter_catalog(detect(img), min_sep=10.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faint_field_aligns(seed, make_pair, solve_pair, accuracy):
    """Each seed: the default cannot align it, automatic depth can.

    Per seed the bound is 0.15 px: the photon noise of such a field puts about 7% of
    its realisations above 0.1 px even for an estimator at the Cramer-Rao limit (with
    the photon noise of the stars themselves); the median is checked below.
    """
    pair = faint_pair(make_pair, seed)
    # the field of the issue: a few stars pass 5 sigma, 30-40 common stars at 3-8 sigma
    # (5 sigma gives 0-9 usable stars per image, median 4, over 30 seeds)
    assert usable_at_5_sigma(pair.template) < 10 and usable_at_5_sigma(pair.source) < 10
    common = pair.in_template & pair.in_source
    peak = pair.flux * PEAK_PER_FLUX
    assert 30 <= int(np.sum(common & (peak >= 3) & (peak <= 8))) <= 42
    sol = solve_pair(pair)
    src_thr, tmpl_thr = sol.thresholds
    assert DEPTH_LADDER[-1] < src_thr < 5.0 and DEPTH_LADDER[-1] < tmpl_thr < 5.0
    assert sol.stats["n_match"] >= 30  # the final fit used the deepest catalogues
    assert sol.degree == 1 and sol.model == "similarity"
    acc = accuracy(sol.transform, pair)
    # measured (RMS / max): seed 0 0.069 / 0.106, seed 1 0.074 / 0.139, seed 2 0.077 / 0.136
    assert acc["rms"] <= 0.15, acc
    assert acc["max"] <= 0.3, acc
    # without automatic depth: "only N usable stars" or "no quad match" (29 of 30 seeds),
    # or a poor fit of the few bright stars (0.36 px on the 30th)
    try:
        off = gpualign.find_transform(pair.source, pair.template, auto_depth=False,
                                      backend="numpy")
    except (gpualign.TooFewStars, gpualign.NoQuadMatch):
        return
    assert accuracy(off.transform, pair)["rms"] > 2 * acc["rms"]


def test_faint_field_median_is_under_a_tenth_of_a_pixel(make_pair, accuracy):
    """The issue's target, over seeds 10-19: 0.1 px RMS or better, typically."""
    rms = []
    for seed in range(10, 20):
        pair = faint_pair(make_pair, seed)
        sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
        rms.append(accuracy(sol.transform, pair)["rms"])
    # measured: median 0.049, 9 of 10 at most 0.1, the worst 0.115 px (over 30 seeds:
    # median 0.056, 27 at most 0.1, the worst 0.125; at the photon limit: 0.059, 93%)
    assert np.median(rms) <= 0.07, rms
    assert sum(r <= 0.1 for r in rms) >= 8, rms
    assert max(rms) <= 0.15, rms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_issues_fainter_field_aligns(seed, make_pair, solve_pair, accuracy):
    """5 sigma finds nothing; aligned at the photon limit (~0.1 px, 0.2 px at worst)."""
    pair = faint_pair(make_pair, seed, FAINTER)
    assert usable_at_5_sigma(pair.template) == usable_at_5_sigma(pair.source) == 0
    sol = solve_pair(pair)
    assert sol.thresholds == (1.5, 1.5)
    acc = accuracy(sol.transform, pair)
    # measured: seed 0 0.172, seed 1 0.163, seed 2 0.060 px (30 seeds: median 0.118, worst
    # 0.24; the Cramer-Rao limit with every common star is 0.096 px on average)
    assert acc["rms"] <= 0.25, acc


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_unrelated_faint_fields_do_not_match(seed, make_pair):
    """Deep catalogues of two different skies: the verification must refuse every quad."""
    a = make_pair(SHAPE, n_stars=40, flux_range=FAINTER, seed=500 + seed)
    b = make_pair(SHAPE, n_stars=100, flux_range=FAINT, seed=600 + seed)
    for src, tmpl in ((a.source, b.template), (b.source, a.template)):
        for cat in (src, tmpl):  # both went deeper, to 20-100 stars
            deep = gpualign.detect.detect_auto(cat, depth=Depth())
            assert deep.thresh < 5.0 and 20 <= len(deep if deep.deep is None else deep.deep)
        with pytest.raises(gpualign.NoQuadMatch) as info:
            gpualign.find_transform(src, tmpl, backend="numpy")
        assert "no quad match" in str(info.value) and "\n" not in str(info.value)
        assert "overlap" in info.value.hint


@pytest.mark.parametrize("kw", [
    dict(n_stars=2000, seed=1, rotation_deg=30.0),
    dict(n_stars=8, flux_range=(3e4, 3e5), seed=0),  # 8 stars, none fainter: 5 sigma stands
], ids=["normal", "eight-bright-stars"])
def test_normal_fields_are_untouched(kw, make_pair, caplog):
    shape = (1024, 1024) if kw["n_stars"] > 8 else (512, 512)
    pair = make_pair(shape, shift=(5.3, -2.7), **kw)
    with caplog.at_level(logging.INFO, logger="gpualign"):
        on = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    off = gpualign.find_transform(pair.source, pair.template, auto_depth=False,
                                  backend="numpy")
    assert on.thresholds == off.thresholds == (5.0, 5.0)
    for name in ("transform", "inverse"):
        a, b = getattr(on, name), getattr(off, name)
        assert a.matrix.tobytes() == b.matrix.tobytes() and a.coeffs.tobytes() == b.coeffs.tobytes()
    assert on.template_xy.tobytes() == off.template_xy.tobytes()
    assert on.source_xy.tobytes() == off.source_xy.tobytes()
    assert on.stats == off.stats
    deeper = [r.getMessage() for r in caplog.records if "sigma" in r.getMessage()]
    if kw["n_stars"] > 8:
        assert not deeper  # not even a look deeper
    else:  # one look at the deepest rung, which adds nothing
        assert len(deeper) == 6, deeper
        assert sum("keeping the 5-sigma catalogue" in m for m in deeper) == 2


@pytest.mark.parametrize("n_det", [None, 50, 0.5])
def test_the_filter_automatic_depth_kept_is_the_solves_own(n_det, make_pair):
    """The solve reuses the usable stars the ladder counted: the same as filtering anew."""
    from gpualign.pipeline._solve import solve

    pair = make_pair((1024, 1024), shift=(5.3, -2.7), n_stars=2000, seed=1, rotation_deg=30.0)
    kept = gpualign.find_transform(pair.source, pair.template, n_det=n_det, backend="numpy")
    plain = solve(detect(pair.source), detect(pair.template),
                  detect=gpualign.DetectSettings(n_det=n_det), backend="numpy")
    assert kept.transform.matrix.tobytes() == plain.transform.matrix.tobytes()
    assert kept.source_xy.tobytes() == plain.source_xy.tobytes()
    assert plain.thresholds is None and kept.thresholds == (5.0, 5.0)


def test_each_step_is_logged(make_pair, caplog):
    pair = faint_pair(make_pair, 0)
    with caplog.at_level(logging.INFO, logger="gpualign"):
        sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    text = [r.getMessage() for r in caplog.records]
    for name, thr in zip(("source", "template"), sol.thresholds, strict=True):
        mine = [t for t in text if t.startswith(f"{name}: ")]
        assert "fewer than 20: detecting deeper" in mine[0] and "at 5 sigma" in mine[0]
        assert f"at {DEPTH_LADDER[-1]:g} sigma" in mine[1]
        assert f"matching with the {thr:g}-sigma catalogue" in mine[-1]
        assert "final fit down to 1.5 sigma" in mine[-1]
    assert any(t.startswith("final fit with the deeper catalogues") for t in text)


def test_thresholds_in_the_header_and_the_solution_file(make_pair, tmp_path):
    pair = faint_pair(make_pair, 1)
    res = gpualign.align(pair.source, pair.template, backend="numpy")
    src_thr, tmpl_thr = res.solution.thresholds
    assert res.header["GA_THR"] == f"{src_thr:.1f}/{tmpl_thr:.1f}"
    assert "source/template" in res.header.comments["GA_THR"]
    path = tmp_path / "t.json"
    res.solution.save(path)
    assert gpualign.Solution.load(path).thresholds == (src_thr, tmpl_thr)
    # a file of an earlier version (no thresholds) still loads, with none
    d = json.loads(path.read_text())
    del d["thresholds"]
    path.write_text(json.dumps(d))
    assert gpualign.Solution.load(path).thresholds is None
    d["thresholds"] = [5.0, -1]
    path.write_text(json.dumps(d))
    with pytest.raises(gpualign.InputError, match="thresholds must be two positive numbers"):
        gpualign.Solution.load(path)


def test_a_given_catalogue_has_no_threshold(make_pair):
    """The source's stars as a table: 'cat' in GA_THR; the template still goes deep."""
    from astropy.table import Table

    pair = faint_pair(make_pair, 2)
    cat = gpualign.detect.detect_auto(pair.source, depth=Depth()).deep
    table = Table({"x": cat.x, "y": cat.y, "flux": cat.flux})
    res = gpualign.align(pair.source, pair.template, source_det=table, backend="numpy")
    assert res.solution.thresholds[0] is None and res.solution.thresholds[1] < 5.0
    assert res.header["GA_THR"].startswith("cat/")


def test_a_batch_frame_equals_the_single_alignment(make_pair):
    """The template is detected once for a batch, on its own: the same catalogue."""
    pair = faint_pair(make_pair, 0)
    single = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    (res,) = gpualign.align_batch([pair.source], pair.template, backend="numpy", processes=1)
    assert res.ok, res.message
    assert res.solution.thresholds == single.thresholds
    assert res.solution.transform.matrix.tobytes() == single.transform.matrix.tobytes()
    assert res.result.header["GA_THR"] == "/".join(f"{t:.1f}" for t in single.thresholds)


def test_too_few_stars_down_to_the_floor_says_so(make_pair):
    noise = np.random.default_rng(0).normal(100.0, 10.0, (256, 256)).astype(np.float32)
    good = faint_pair(make_pair, 0)
    with pytest.raises(gpualign.TooFewStars) as info:
        gpualign.find_transform(noise, good.template, backend="numpy")
    assert "only 0 usable stars in the source (0 detected at 5 sigma)" in str(info.value)
    assert "no more usable stars down to 1.5 sigma" in info.value.hint
    assert "sep_thresh" in info.value.hint
    with pytest.raises(gpualign.TooFewStars) as info:
        gpualign.find_transform(noise, good.template, auto_depth=False, backend="numpy")
    assert info.value.hint == "lower sep_thresh, min_fwhm or min_sep"


def test_cross_matched_pairs_of_the_final_fit_are_real(make_pair, solve_pair):
    """Every pair of the final fit is one true star seen in both images."""
    pair = faint_pair(make_pair, 1)
    sol = solve_pair(pair)
    dt, jt = cKDTree(pair.template_xy).query(sol.template_xy)
    ds, js = cKDTree(pair.source_xy).query(sol.source_xy)
    assert (jt == js).all() and dt.max() < 1.5 and ds.max() < 1.5


def test_cli_logs_each_step_at_v_and_writes_ga_thr(make_pair, tmp_path, restore_gpualign_logger):
    from astropy.io import fits
    from typer.testing import CliRunner

    from gpualign.cli import app

    pair = faint_pair(make_pair, 0)
    src, tmpl, out = tmp_path / "src.fits", tmp_path / "tmpl.fits", tmp_path / "out.fits"
    fits.writeto(src, pair.source)
    fits.writeto(tmpl, pair.template)
    res = CliRunner().invoke(app, ["align", str(src), "-t", str(tmpl), "-o", str(out), "-v"])
    assert res.exit_code == 0, res.stderr
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    for line in ("INFO: source: 6 usable stars at 5 sigma, fewer than 20: detecting deeper",
                 f"INFO: template: matching with the {sol.thresholds[1]:g}-sigma catalogue"):
        assert line in res.stderr, res.stderr
    assert fits.getheader(out)["GA_THR"] == "/".join(f"{t:.1f}" for t in sol.thresholds)
