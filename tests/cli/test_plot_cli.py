"""``gpualign align --plot FILE.png`` (issue 12, item 3): one frame's fit, a batch's summary.

The plot path is checked with the other outputs before any work (nothing is created
when it is refused), written atomically after the run, and not written when a single
source fails.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from gpualign.cli import app
from gpualign.products import load_solution, plot_batch, plot_solution

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
#: Tests that draw (matplotlib is in the [test] extra); the last one runs without it.
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason='needs pip install "gpualign[plot]"')
if HAVE_MPL:
    from matplotlib.image import imread

S = (384, 384)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    """The CLI reconfigures the gpualign logger; every test here puts it back."""
    yield


def run(*args: object, code: int = 0):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("plot")
    pair = make_pair(S, shift=(9.2, -5.1), rotation_deg=12.0, n_stars=350, seed=57,
                     corner_distortion_px=2.0)
    noise = np.random.default_rng(58).normal(0, 1, S).astype(np.float32)
    for name, data in (("template", pair.template), ("source", pair.source),
                       ("source2", pair.source), ("noise", noise)):
        fits.PrimaryHDU(data).writeto(d / f"{name}.fits")
    return d


def _pixels(path):
    """The PNG's (height, width), after checking its signature."""
    assert path.read_bytes()[:8] == PNG
    return imread(path).shape[:2]


def _size(fig):
    w, h = np.round(fig.get_size_inches() * fig.dpi).astype(int)
    return int(h), int(w)


def _left(d):
    return sorted(p.name for p in d.iterdir())


@needs_mpl
def test_one_source_writes_its_fit(files, tmp_path):
    plot, saved = tmp_path / "diag.png", tmp_path / "t.json"
    run("align", files / "source.fits", "-t", files / "template.fits", "-o",
        tmp_path / "out.fits", "--backend", "numpy", "--plot", plot, "--save-transform", saved)
    assert _pixels(plot) == _size(plot_solution(load_solution(saved)))
    assert _left(tmp_path) == ["diag.png", "out.fits", "t.json"]  # no temporary left


@needs_mpl
def test_a_batch_writes_the_summary(files, tmp_path):
    plot, report = tmp_path / "batch.png", tmp_path / "r.json"
    run("align", files / "source.fits", files / "source2.fits", "-t", files / "template.fits",
        "-o", tmp_path / "out", "--backend", "numpy", "--plot", plot, "--report", report, "-q")
    # the summary (6.5 inches high), not a frame's fit (15)
    assert _pixels(plot) == _size(plot_batch(report))
    assert _left(tmp_path) == ["batch.png", "out", "r.json"]


@needs_mpl
def test_a_failed_single_source_writes_no_plot(files, tmp_path):
    plot = tmp_path / "diag.png"
    res = run("align", files / "noise.fits", "-t", files / "template.fits", "-o",
              tmp_path / "out.fits", "--backend", "numpy", "--plot", plot, code=1)
    assert "usable stars" in res.stderr
    assert _left(tmp_path) == []


@needs_mpl
def test_an_existing_plot_is_replaced_only_with_overwrite(files, tmp_path):
    plot = tmp_path / "diag.png"
    plot.write_bytes(b"keep")
    args = ("align", files / "source.fits", "-t", files / "template.fits", "-o",
            tmp_path / "out.fits", "--backend", "numpy", "--plot", plot)
    res = run(*args, code=2)
    assert "exists" in res.stderr and "--overwrite" in res.stderr
    assert plot.read_bytes() == b"keep" and _left(tmp_path) == ["diag.png"]
    run(*args, "--overwrite")
    assert plot.read_bytes()[:8] == PNG


@needs_mpl
@pytest.mark.parametrize("case", ["missing-directory", "is-the-source", "is-the-output",
                                  "is-the-report", "is-a-directory", "unknown-format"])
def test_bad_plot_paths_are_refused_before_work(case, files, tmp_path):
    out, report = tmp_path / "out.fits", tmp_path / "r.json"
    plot, extra, words = {
        "missing-directory": (tmp_path / "nodir" / "p.png", (), "nodir"),
        "is-the-source": (files / "source.fits", ("--overwrite",), "source.fits"),
        "is-the-output": (out, (), "output of the run"),
        "is-the-report": (report, ("--report", report), "output of the run"),
        "is-a-directory": (tmp_path, (), "directory"),
        "unknown-format": (tmp_path / "p.fits", (), "image format"),
    }[case]
    before = (files / "source.fits").read_bytes()
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o", out,
              "--backend", "numpy", "--plot", plot, *extra, code=2)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpualign: error: ")
    assert words in lines[0]
    assert _left(tmp_path) == []  # no output image: refused before the work
    assert (files / "source.fits").read_bytes() == before


@needs_mpl
def test_a_batch_checks_its_plot_before_any_frame(files, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = run("align", files / "source.fits", files / "source2.fits", "-t",
              files / "template.fits", "-o", outdir, "--plot", outdir / "source_aligned.fits",
              code=2)
    assert "output of the run" in res.stderr
    assert _left(tmp_path) == ["out"] and _left(outdir) == []


def test_without_matplotlib_refused_before_work(files, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    res = run("align", files / "source.fits", "-t", files / "template.fits", "-o",
              tmp_path / "out.fits", "--backend", "numpy", "--plot", tmp_path / "p.png",
              code=2)
    assert 'pip install "gpualign[plot]"' in res.stderr
    assert _left(tmp_path) == []
