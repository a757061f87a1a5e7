"""Progress display: a bar on a terminal only, silent with --quiet or when not a TTY,
log records still delivered while it is live, tiles of a big warp counted."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign import _progress
from gpualign.cli import app
from gpualign.warp._resample import warp

S = (512, 512)


class FakeTTY(io.StringIO):
    def __init__(self, tty: bool = True) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed file")  # as a real file does
        return self.tty


@pytest.fixture(autouse=True)
def _clean(restore_gpualign_logger, monkeypatch):
    monkeypatch.delenv("GPUALIGN_NO_PROGRESS", raising=False)
    yield
    _progress.configure(enabled=False)


@pytest.fixture
def terminal(monkeypatch):
    """stderr as seen by the progress module: a terminal we can read."""
    tty = FakeTTY(True)
    monkeypatch.setattr(_progress, "_stream", lambda: tty)
    return tty


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    pair = make_pair(S, shift=(5.5, -3.2), rotation_deg=8.0, n_stars=600, seed=3)
    d = tmp_path_factory.mktemp("progress")
    fits.writeto(d / "t.fits", pair.template)
    fits.writeto(d / "a.fits", pair.source)
    fits.writeto(d / "b.fits", np.ascontiguousarray(pair.source[::-1]))
    (d / "bad.fits").write_bytes(b"no FITS here" * 300)
    return d, pair


def test_tty_decision(monkeypatch):
    for tty, enabled, env, expect in [(True, True, None, True), (False, True, None, False),
                                      (True, False, None, False), (True, True, "1", False)]:
        if env:
            monkeypatch.setenv("GPUALIGN_NO_PROGRESS", env)
        else:
            monkeypatch.delenv("GPUALIGN_NO_PROGRESS", raising=False)
        _progress.configure(enabled=enabled)
        assert _progress.is_enabled(FakeTTY(tty)) is expect, (tty, enabled, env)
    _progress.configure(enabled=True)
    monkeypatch.delenv("GPUALIGN_NO_PROGRESS")
    closed = FakeTTY(True)
    closed.close()
    assert not _progress.is_enabled(closed)


def test_batch_bar_counts_frames(files, terminal):
    d, _ = files
    results = gpualign.align_batch([d / "a.fits", d / "bad.fits", d / "b.fits"], d / "t.fits",
                                   d / "out1", processes=1, backend="numpy", progress=True)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    shown = terminal.getvalue()
    assert "aligning" in shown and "3/3" in shown and "1 failed" in shown


def test_no_bar_when_not_a_terminal(files, monkeypatch):
    d, _ = files
    pipe = FakeTTY(False)
    monkeypatch.setattr(_progress, "_stream", lambda: pipe)
    gpualign.align_batch([d / "a.fits"], d / "t.fits", d / "out2", processes=1,
                         backend="numpy", progress=True)
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_quiet(files, terminal, tmp_path, quiet):
    d, _ = files
    args = ["align", str(d / "a.fits"), str(d / "b.fits"), "-t", str(d / "t.fits"), "-o",
            str(tmp_path)] + (["-q"] if quiet else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_aligned.fits", "b_aligned.fits"]
    if quiet:
        assert terminal.getvalue() == "" and res.stdout == ""
    else:
        assert "2/2" in terminal.getvalue()
        assert res.stdout.splitlines()[-1] == "2 aligned, 0 skipped, 0 failed"


def test_log_records_reach_handlers_under_the_bar(files, terminal):
    d, _ = files
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("gpualign")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    gpualign.align_batch([d / "a.fits", d / "bad.fits"], d / "t.fits", d / "out3",
                         processes=2, backend="numpy", progress=True)
    text = [r.getMessage() for r in records]
    assert any("bad.fits failed: cannot read" in t for t in text), text
    assert any("a.fits: " in t and "matches" in t for t in text), text  # from a worker
    assert "2/2" in terminal.getvalue()


def test_tile_progress_of_a_big_warp(files, terminal, numpy_backend):
    """A warp of many tiles shows a (transient) tile bar; pixels are unchanged by it."""
    _, pair = files
    t = gpualign.find_transform(pair.source, pair.template, backend="numpy").transform
    quiet = warp(pair.source, t, S, backend=numpy_backend, tile_rows=4)
    assert terminal.getvalue() == ""  # not enabled: library default
    _progress.configure(enabled=True)
    shown = warp(pair.source, t, S, backend=numpy_backend, tile_rows=4)
    assert "warp" in terminal.getvalue() and "tiles" in terminal.getvalue()
    np.testing.assert_array_equal(shown.data, quiet.data)


def test_plain_lines_without_rich(terminal, monkeypatch):
    """Without rich: one plain line per finished frame, with the failures counted."""
    monkeypatch.setattr(_progress, "_rich", lambda: None)
    with _progress.BatchProgress(3, enabled=True) as bar:
        bar.update(True, "a.fits")
        bar.update(False, "b.fits")
        bar.update(True, "c.fits")
    lines = terminal.getvalue().splitlines()
    assert lines[0].startswith("gpualign: aligning 1/3 frames, 0 failed, a.fits ok")
    assert lines[1].startswith("gpualign: aligning 2/3 frames, 1 failed, b.fits FAILED")
    assert lines[2] == "gpualign: aligning 3/3 frames, 1 failed, c.fits ok"
    assert (bar.done, bar.failed) == (3, 1)


def test_estimate_of_the_time_left(terminal, monkeypatch):
    """The estimate is the mean time per finished frame times the frames left."""
    monkeypatch.setattr(_progress, "_rich", lambda: None)
    clock = iter([100.0, 110.0, 120.0, 400.0, 700.0])  # start, then one per frame
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    with _progress.BatchProgress(4, enabled=True) as bar:
        for name in ("a", "b", "c", "d"):
            bar.update(True, name)
    lines = terminal.getvalue().splitlines()
    assert lines[0].endswith("a ok, about 30 s left")  # 10 s for 1 frame, 3 left
    assert lines[1].endswith("b ok, about 20 s left")  # 20 s for 2, 2 left
    assert lines[2].endswith("c ok, about 2 min left")  # 300 s for 3, 1 left: 100 s
    assert lines[3] == "gpualign: aligning 4/4 frames, 0 failed, d ok"  # none when done


def test_rich_bar_shows_elapsed_and_remaining_time(terminal):
    rp = pytest.importorskip("rich.progress")
    with _progress.BatchProgress(2, enabled=True) as bar:
        columns = bar._rich.columns
        bar.update(True, "a")
        bar.update(True, "b")
    kinds = [type(c) for c in columns]
    assert rp.TimeRemainingColumn in kinds and rp.TimeElapsedColumn in kinds
    assert rp.MofNCompleteColumn in kinds
