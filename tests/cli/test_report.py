"""``gpualign align --report FILE.json``: one frame or a batch, as standard JSON (issue 12).

The report's values must be the Solution's (matches, residuals, degree, depth), a
batch's frames must come in order with the failure's message, the report must be
written when frames failed (exit 1), a frame's GpuAlignWarnings must be in it and
still shown, and non-finite numbers must be encoded so that ``json.loads`` reads it.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from gpualign.cli import app
from gpualign.cli._report import build_report, frame_entry, write_report
from gpualign.products import load_solution

S = (512, 512)


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    """The CLI reconfigures the gpualign logger; every test here puts it back."""
    yield


def run(*args: object, code: int = 0):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


def _load(path) -> dict:
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # standard JSON only
    return json.loads(text)


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    pair = make_pair(S, shift=(14.3, -9.6), rotation_deg=20.0, n_stars=600, seed=41)
    flipped = make_pair(S, shift=(4.0, 3.0), rotation_deg=20.0, flip=True, n_stars=500, seed=1)
    for name, data in (("template", pair.template), ("source", pair.source),
                       ("flip_template", flipped.template), ("flip_source", flipped.source),
                       ("noise", np.random.default_rng(3).normal(0, 1, S).astype(np.float32))):
        fits.PrimaryHDU(data).writeto(d / f"{name}.fits")
    return d


def test_single_source_report_holds_the_solution(files, tmp_path):
    report, saved = tmp_path / "r.json", tmp_path / "t.json"
    run("align", files / "source.fits", "-t", files / "template.fits", "-o",
        tmp_path / "out.fits", "--backend", "numpy", "--save-transform", saved,
        "--report", report)
    sol = load_solution(saved)
    rep = _load(report)
    assert set(rep) == {"gpualign", "versions", "frames"}
    assert {"numpy", "scipy", "astropy", "sep"} <= set(rep["versions"])
    (frame,) = rep["frames"]
    assert frame["status"] == "ok" and frame["error"] is None
    assert frame["source"] == str(files / "source.fits")
    assert frame["output"] == str(tmp_path / "out.fits")
    assert frame["backend"] == "numpy"
    assert frame["n_match"] == sol.stats["n_match"] == frame["stats"]["n_match"]
    assert frame["rms"] == sol.stats["rms"] == frame["stats"]["rms"]
    assert frame["degree"] == sol.degree
    assert frame["model"] == sol.model and frame["distortion"] == sol.distortion
    assert frame["mirrored"] is False
    assert frame["thresholds"] == {"source": sol.thresholds[0], "template": sol.thresholds[1]}
    assert {int(k): v for k, v in frame["cv_scores"].items()} == pytest.approx(sol.cv_scores)
    assert frame["model_scores"] == pytest.approx(sol.model_scores)
    assert set(frame["timings"]) == set(sol.timings) and frame["seconds"] > 0
    assert frame["warnings"] == []


def test_mirrored_pair_lists_its_warning(files, tmp_path):
    report = tmp_path / "r.json"
    res = run("align", files / "flip_source.fits", "-t", files / "flip_template.fits", "-o",
              tmp_path / "out.fits", "--backend", "numpy", "--report", report)
    assert "gpualign: warning: the solution is mirrored" in res.stderr  # still shown
    (frame,) = _load(report)["frames"]
    assert frame["mirrored"] is True
    assert any(w.startswith("the solution is mirrored") for w in frame["warnings"])


def test_batch_with_a_broken_frame(files, tmp_path):
    report, outdir = tmp_path / "r.json", tmp_path / "out"
    sources = [files / "flip_source.fits", files / "noise.fits", files / "source.fits"]
    res = run("align", *sources, "-t", files / "flip_template.fits", "-o", outdir,
              "--backend", "numpy", "--report", report, code=1)
    frames = _load(report)["frames"]
    assert [f["source"] for f in frames] == [str(s) for s in sources]
    assert [f["index"] for f in frames] == [0, 1, 2]
    assert frames[0]["status"] == "ok" and frames[0]["mirrored"] is True
    assert any(w.startswith("the solution is mirrored") for w in frames[0]["warnings"])
    assert "the solution is mirrored" in res.stderr
    broken = frames[1]
    assert broken["status"] == "failed" and broken["error"]
    assert "usable stars" in broken["message"]
    assert broken["n_match"] is None and broken["stats"] is None
    assert broken["output"] == str(outdir / "noise_aligned.fits")
    assert frames[2]["status"] == "failed"  # another field than the template's
    with fits.open(outdir / "flip_source_aligned.fits") as hdul:
        assert hdul[0].header["GA_NMAT"] == frames[0]["n_match"]


def test_non_finite_numbers_round_trip(tmp_path):
    path = tmp_path / "r.json"
    entry = frame_entry("a.fits", None, None, backend="numpy", seconds=float("nan"),
                        warnings=["w"], status="failed", message="m", error="TooFewStars")
    entry["stats"] = {"rms": float("nan"), "x_mean": float("inf"), "y_mean": -np.inf}
    write_report(build_report([entry]), path)
    (frame,) = _load(path)["frames"]
    assert frame["seconds"] == "nan"
    assert frame["stats"] == {"rms": "nan", "x_mean": "inf", "y_mean": "-inf"}
    assert math.isnan(float(frame["seconds"]))
    assert frame["output"] is None and frame["warnings"] == ["w"]


@pytest.mark.parametrize("processes", [1, 2])
def test_batch_results_keep_each_frames_warnings(make_pair, processes, caplog):
    """In this process and in worker processes: FrameResult.warnings, frame by frame.

    Still shown as before: a warning here, a log record replayed from a worker.
    """
    import gpualign

    flipped = make_pair(S, shift=(4.0, 3.0), rotation_deg=20.0, flip=True, n_stars=500, seed=1)
    noise = np.random.default_rng(3).normal(0, 1, S).astype(np.float32)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always", gpualign.GpuAlignWarning)
        results = gpualign.align_batch([flipped.source, noise], flipped.template,
                                       processes=processes, backend="numpy")
    seen = [str(w.message) for w in shown] + [r.getMessage() for r in caplog.records]
    assert any("the solution is mirrored" in m for m in seen)
    assert [r.status for r in results] == ["ok", "failed"]
    assert any(w.startswith("the solution is mirrored") for w in results[0].warnings)
    assert results[1].warnings == []


@pytest.mark.parametrize("target", ["template.fits", "out/source_aligned.fits", "nodir/r.json",
                                    "out"])
def test_batch_refuses_a_bad_report_before_any_work(files, tmp_path, target):
    """Onto an input, onto a frame's output, in a missing folder, a folder: exit 2."""
    (tmp_path / "out").mkdir()
    (tmp_path / "template.fits").write_bytes((files / "template.fits").read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = run("align", files / "source.fits", files / "flip_source.fits", "-t",
              tmp_path / "template.fits", "-o", tmp_path / "out", "--backend", "numpy",
              "--report", tmp_path / target, code=2)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpualign: error:"), res.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_single_source_that_fails_writes_no_report(files, tmp_path):
    run("align", files / "noise.fits", "-t", files / "template.fits", "-o",
        tmp_path / "out.fits", "--backend", "numpy", "--report", tmp_path / "r.json", code=1)
    assert list(tmp_path.iterdir()) == []
