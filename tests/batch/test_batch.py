"""Batches: many sources against one template, per-frame status, summary, resume.

The frames are one simulated source seen in several ways whose truth is exact
(as is, flipped, rotated by 90 degrees, cropped), plus broken frames (a corrupt
FITS file, a blank image). Every aligned frame must land its stars on the truth;
a broken frame fails alone; ``--skip-existing`` resumes without touching what an
earlier run wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign._simulate import bright_overlap_stars, position_errors
from gpualign.batch import make_tasks, output_name
from gpualign.cli import app

S = (512, 512)
H, W = S

# frame name -> (make the frame from the source, source px -> frame px)
VIEWS = {
    "plain": (lambda a: a, lambda x, y: (x, y)),
    "flipped": (lambda a: a[::-1], lambda x, y: (x, H - 1 - y)),
    "rot90": (lambda a: np.rot90(a), lambda x, y: (y, W - 1 - x)),
    "crop": (lambda a: a[20:, 30:], lambda x, y: (x - 30, y - 20)),
}


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    """The CLI reconfigures the gpualign logger; put it back."""
    yield


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(11.2, -6.4), rotation_deg=14.0, corner_distortion_px=2.0,
                     n_stars=600, seed=7)


@pytest.fixture(scope="module")
def frames(pair, tmp_path_factory) -> dict[str, Path]:
    """Template, the good views and two broken frames as FITS files."""
    d = tmp_path_factory.mktemp("batch")
    paths = {"template": d / "template.fits"}
    fits.writeto(paths["template"], pair.template)
    for name, (view, _) in VIEWS.items():
        paths[name] = d / f"{name}.fits"
        fits.writeto(paths[name], np.ascontiguousarray(view(pair.source)))
    paths["corrupt"] = d / "corrupt.fits"
    paths["corrupt"].write_bytes(b"SIMPLE  =   garbage " * 200)
    paths["blank"] = d / "blank.fits"
    fits.writeto(paths["blank"], np.full(S, 100.0, np.float32))
    return paths


def truth_of(name: str, pair):
    to_frame = VIEWS[name][1]

    def truth(x, y):
        return to_frame(*pair.mapping(x, y))

    return truth


def check_accuracy(transform, name: str, pair) -> float:
    """RMS landing error (template px) of the bright stars inside the frame."""
    stars = bright_overlap_stars(pair, n=100)
    fx, fy = truth_of(name, pair)(stars[:, 0], stars[:, 1])
    fh, fw = (H - 20, W - 30) if name == "crop" else (H, W)
    keep = (fx > 10) & (fx < fw - 11) & (fy > 10) & (fy < fh - 11)
    err = position_errors(transform, truth_of(name, pair), stars[keep])
    assert np.isfinite(err).all() and keep.sum() > 30
    rms = float(np.sqrt(np.mean(err**2)))
    assert rms < 0.03, (name, rms)  # measured 0.0153-0.0173 px over the frames
    return rms


def cli(*args: object, code: int):
    res = CliRunner().invoke(app, ["align", *[str(a) for a in args]])
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


def stamp(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


def test_output_names_are_predictable(tmp_path):
    assert output_name("/x/night/a.fits", tmp_path) == tmp_path / "a_aligned.fits"
    assert output_name("b.fits.gz", tmp_path) == tmp_path / "b_aligned.fits"
    assert output_name("c.FIT", tmp_path) == tmp_path / "c_aligned.fits"
    with pytest.raises(gpualign.InputError, match="both be written"):
        make_tasks([tmp_path / "a" / "s.fits", tmp_path / "b" / "s.fits"], tmp_path)


@pytest.mark.parametrize("processes", [1, 2])
def test_broken_frames_fail_alone(frames, pair, tmp_path, processes):
    """A corrupt and a blank frame fail; every other frame is aligned on the truth."""
    names = ["plain", "corrupt", "flipped", "blank", "rot90", "crop"]
    results = gpualign.align_batch([frames[n] for n in names], frames["template"],
                                   tmp_path / "out", processes=processes, backend="numpy")
    assert [r.index for r in results] == list(range(len(names)))
    by = dict(zip(names, results, strict=True))
    assert by["corrupt"].status == "failed" and "cannot read" in by["corrupt"].message
    assert by["blank"].status == "failed" and by["blank"].error == "TooFewStars"
    assert not output_name(frames["corrupt"], tmp_path / "out").exists()
    assert not output_name(frames["blank"], tmp_path / "out").exists()
    for name in VIEWS:
        r = by[name]
        assert r.status == "ok" and r.written, (name, r.message)
        check_accuracy(r.solution.transform, name, pair)
        with fits.open(r.output) as hd:
            assert hd[0].data.shape == S
            assert hd[0].header["GA_NMAT"] == r.n_match
            assert hd[0].header["GA_SRC"] == f"{name}.fits"
            assert hd["FOOTPRINT"].data.mean() > 0.5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}_aligned.fits" for n in VIEWS)


def test_batch_output_equals_single_align(frames, tmp_path):
    """A frame of a batch gets the same pixels as ``gpualign.align`` alone."""
    [r] = gpualign.align_batch([frames["rot90"]], frames["template"], tmp_path,
                               backend="numpy")
    one = gpualign.align(frames["rot90"], frames["template"], backend="numpy")
    with fits.open(r.output) as hd:
        np.testing.assert_array_equal(hd[0].data, one.data)
        np.testing.assert_array_equal(hd["FOOTPRINT"].data.astype(bool), one.footprint)


def test_in_memory_batch_and_template_detected_once(frames, pair, monkeypatch):
    """Without an output directory the results hold the images; one template detection."""
    import gpualign.detect._depth as det

    calls = []
    real = det.detect_auto
    monkeypatch.setattr(det, "detect_auto", lambda *a, **k: calls.append(1) or real(*a, **k))
    arrays = [np.ascontiguousarray(VIEWS[n][0](pair.source)) for n in ("plain", "flipped")]
    results = gpualign.align_batch(arrays, pair.template, processes=1, backend="numpy")
    assert len(calls) == 1 + len(arrays)
    for name, r in zip(("plain", "flipped"), results, strict=True):
        assert r.status == "ok" and r.output is None and not r.written
        assert r.result.data.shape == S and r.result.footprint.mean() > 0.5
        check_accuracy(r.result.transform, name, pair)


def test_template_hashed_once_per_batch(pair, monkeypatch):
    """Quads of the template are built on the first frame and reused by the others."""
    import gpualign.match._quad_match as match

    built = []
    real = match.build_quads
    monkeypatch.setattr(match, "build_quads",
                        lambda xy, *a, **k: built.append(np.array(xy)) or real(xy, *a, **k))
    monkeypatch.setattr(match, "_TEMPLATE_QUADS", type(match._TEMPLATE_QUADS)())
    arrays = [np.ascontiguousarray(VIEWS[n][0](pair.source)) for n in ("plain", "flipped")]
    arrays.append(arrays[0].copy())
    results = gpualign.align_batch(arrays, pair.template, processes=1, backend="numpy")
    assert [r.status for r in results] == ["ok"] * 3
    tmpl_xy = [xy for xy in built if any(np.array_equal(xy, o) for o in built[:1])]
    assert len(tmpl_xy) == 1  # the first build is the template's; never again
    assert len(built) == 1 + 2 * len(arrays)  # plus both parities of every source
    for r in results[1:]:
        check_accuracy(r.result.transform, "flipped" if r is results[1] else "plain", pair)


def test_cli_summary_and_exit_code(frames, pair, tmp_path):
    names = ["plain", "corrupt", "flipped", "blank"]
    res = cli(*[frames[n] for n in names], "-t", frames["template"], "-o", tmp_path / "o",
              code=1)
    lines = res.stdout.splitlines()
    assert lines[-1] == "2 aligned, 0 skipped, 2 failed"
    status = {ln.split()[0]: ln.split()[1] for ln in lines[1:-1]}
    assert status == {"plain.fits": "ok", "corrupt.fits": "FAILED", "flipped.fits": "ok",
                      "blank.fits": "FAILED"}
    assert "corrupt.fits failed" in res.stderr and "Traceback" not in res.stderr
    res = cli(frames["plain"], frames["crop"], "-t", frames["template"], "-o", tmp_path / "p",
              "-q", code=0)
    assert res.stdout == ""
    for name in ("plain", "crop"):
        with fits.open(tmp_path / "p" / f"{name}_aligned.fits") as hd:
            assert hd[0].header["GA_NMAT"] > 50


def test_existing_outputs_need_overwrite_or_skip(frames, tmp_path):
    srcs = [frames["plain"], frames["flipped"]]
    cli(*srcs, "-t", frames["template"], "-o", tmp_path, "-q", code=0)
    before = stamp(tmp_path / "plain_aligned.fits")
    res = cli(*srcs, "-t", frames["template"], "-o", tmp_path, code=1)
    assert "exists" in res.stdout and res.stdout.splitlines()[-1].endswith("2 failed")
    assert stamp(tmp_path / "plain_aligned.fits") == before
    cli(*srcs, "-t", frames["template"], "-o", tmp_path, "--overwrite", "--skip-existing",
        code=2)
    cli(*srcs, "-t", frames["template"], "-o", tmp_path, "--overwrite", "-q", code=0)
    assert stamp(tmp_path / "plain_aligned.fits") != before


def test_resume_after_interruption(frames, pair, tmp_path, monkeypatch):
    """Ctrl-C during the third frame stops the batch; --skip-existing finishes it.

    The outputs the first run wrote are left untouched (same bytes, same mtime), no
    partial file is left anywhere, and only the missing outputs are written.
    """
    import gpualign.pipeline._runner as warp_mod

    names = list(VIEWS)
    srcs = [frames[n] for n in names]
    real = warp_mod.warp
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(warp_mod, "warp", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        gpualign.align_batch(srcs, frames["template"], out, processes=1, backend="numpy")
    monkeypatch.setattr(warp_mod, "warp", real)
    first = {p.name: stamp(p) for p in out.iterdir()}
    assert sorted(first) == ["flipped_aligned.fits", "plain_aligned.fits"]
    # and a second interruption that lost one output file
    (out / "flipped_aligned.fits").unlink()
    del first["flipped_aligned.fits"]

    res = cli(*srcs, "-t", frames["template"], "-o", out, "--skip-existing", code=0)
    assert res.stdout.splitlines()[-1] == "3 aligned, 1 skipped, 0 failed"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_aligned.fits" for n in names)
    for name, st in first.items():
        assert stamp(out / name) == st
    results = gpualign.align_batch(srcs, frames["template"], out, skip_existing=True,
                                   backend="numpy")
    assert [r.status for r in results] == ["skipped"] * 4
    assert not any(r.written for r in results)
    # the resumed outputs are right
    from gpualign.detect._sep import detect

    for name in ("flipped", "crop"):
        with fits.open(out / f"{name}_aligned.fits") as hd:
            cat = detect(np.nan_to_num(hd[0].data.astype(np.float32)))
        stars = bright_overlap_stars(pair, n=40)
        d = np.hypot(cat.x[:, None] - stars[:, 0], cat.y[:, None] - stars[:, 1]).min(axis=0)
        inside = VIEWS[name][1](*pair.mapping(stars[:, 0], stars[:, 1]))
        keep = (inside[0] > 15) & (inside[1] > 15)
        assert np.median(d[keep]) < 0.1


def test_skip_existing_single_source(frames, tmp_path):
    out = tmp_path / "one.fits"
    cli(frames["plain"], "-t", frames["template"], "-o", out, code=0)
    before = stamp(out)
    cli(frames["plain"], "-t", frames["template"], "-o", out, "--skip-existing", code=0)
    assert stamp(out) == before


def test_outputs_of_another_template_are_not_skipped(frames, pair, tmp_path):
    """--skip-existing resumes the same batch; an output made against another template
    is reported, not silently kept."""
    srcs = [frames["plain"]]
    gpualign.align_batch(srcs, frames["template"], tmp_path, backend="numpy")
    other = tmp_path / "other_template.fits"
    fits.writeto(other, np.ascontiguousarray(pair.template[:, ::-1]))
    [r] = gpualign.align_batch(srcs, other, tmp_path, skip_existing=True, backend="numpy")
    assert r.status == "failed" and "another template" in r.message
    assert os.path.exists(r.output)


def die_once(task, ctx):
    """Kill the worker process the first time ``flipped`` is processed (before writing)
    and the first time ``rot90`` is (after writing); log every real write."""
    from gpualign.batch import process_frame

    root = Path(task.output).parents[1]
    stem = Path(task.source).stem
    marker = root / f"died-{stem}"
    if stem == "flipped" and not marker.exists():
        marker.touch()
        os._exit(1)
    res = process_frame(task, ctx)
    if res.written:
        with open(root / "writes.log", "a") as f:
            f.write(stem + "\n")
    if stem == "rot90" and not marker.exists():
        marker.touch()
        os._exit(1)
    return res


def test_local_worker_death_is_retried(frames, pair, tmp_path):
    """A pool worker that dies costs nothing: the lost frames run again, once each."""
    from gpualign.batch import run_batch
    from gpualign.detect import detect

    names = list(VIEWS)
    (tmp_path / "out").mkdir()
    results = run_batch([frames[n] for n in names], detect(pair.template), None, S,
                        tmp_path / "out", processes=2, frame_fn=die_once, backend="numpy")
    assert (tmp_path / "died-flipped").exists() and (tmp_path / "died-rot90").exists()
    assert [r.status for r in results] == ["ok"] * 4, [r.message for r in results]
    assert sorted((tmp_path / "writes.log").read_text().split()) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}_aligned.fits" for n in names)
    for name in ("plain", "flipped", "crop"):
        check_accuracy(results[names.index(name)].solution.transform, name, pair)


def always_dies_on_crop(task, ctx):
    """``crop`` kills every worker that takes it (as an out-of-memory frame would)."""
    from gpualign.batch import process_frame

    if Path(task.source).stem == "crop":
        os._exit(1)
    return process_frame(task, ctx)


def test_frame_that_always_kills_its_worker_fails_alone(frames, pair, tmp_path):
    from gpualign.batch import run_batch
    from gpualign.detect import detect

    names = list(VIEWS)
    (tmp_path / "out").mkdir()
    results = run_batch([frames[n] for n in names], detect(pair.template), None, S,
                        tmp_path / "out", processes=2, frame_fn=always_dies_on_crop,
                        backend="numpy")
    by = dict(zip(names, results, strict=True))
    assert by["crop"].status == "failed" and by["crop"].error == "WorkerDied"
    assert "died 2 times" in by["crop"].message
    for name in ("plain", "flipped", "rot90"):
        assert by[name].status == "ok", by[name].message
        check_accuracy(by[name].solution.transform, name, pair)
    assert not (tmp_path / "out" / "crop_aligned.fits").exists()
