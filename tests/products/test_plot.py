"""Diagnostic figures (issue 12, item 3): ``result.plot()`` and the batch summary.

Rendered with Agg (matplotlib's object-oriented API, no pyplot). The panels must be
there with labelled axes, the residual vectors must carry a scale bar naming the
factor, the distortion map a colourbar in px; what each panel draws is compared with
the solution it comes from, and the distortion map of a simulated distorted field
with the true mapping's non-affine part.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpualign
from gpualign import GpuAlignError
from gpualign._simulate import make_mapping, simulate_pair
from gpualign.products import PlottingUnavailable, Solution, fit_statistics, plot_batch
from gpualign.transform import Transform

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
#: Tests that draw (matplotlib is in the [test] extra); the others run without it.
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason='needs pip install "gpualign[plot]"')
if HAVE_MPL:
    from matplotlib.image import imread
    from matplotlib.quiver import Quiver, QuiverKey

S = (512, 512)
CORNER_PX = 4.0
TITLES = ("Matched stars (template frame)", "Residual vectors (exaggerated)",
          "Residuals against x", "Residuals against y",
          "Distortion surface (non-affine part)", "Held-out error by degree",
          "Held-out error by model")


@pytest.fixture(scope="module")
def pair():
    m = make_mapping(source_shape=S, template_shape=S, shift=(6.0, -4.0), rotation_deg=15.0,
                     corner_distortion_px=CORNER_PX)
    return simulate_pair(S, mapping=m, n_stars=600, seed=83)


@pytest.fixture(scope="module")
def result(pair):
    return gpualign.align(pair.source, pair.template, backend="numpy")


@pytest.fixture(scope="module")
def fig(result):
    return result.plot()


def _axes(fig, title):
    (ax,) = [a for a in fig.axes if a.get_title() == title]
    return ax


@needs_mpl
def test_the_panels_are_there_with_labelled_axes(fig):
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert sorted(ax.get_title() for ax in titled) == sorted(TITLES)
    for ax in titled:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    for title in (TITLES[0], TITLES[1], TITLES[4]):
        ax = _axes(fig, title)
        assert "template px" in ax.get_xlabel() and "template px" in ax.get_ylabel()


@needs_mpl
def test_matched_stars_and_outlines(fig, result):
    ax = _axes(fig, TITLES[0])
    (stars,) = [ln for ln in ax.lines if ln.get_label().endswith("matched stars")]
    np.testing.assert_array_equal(stars.get_xdata(), result.solution.template_xy[:, 0])
    np.testing.assert_array_equal(stars.get_ydata(), result.solution.template_xy[:, 1])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "template" in legend and "source footprint" in legend
    (footprint,) = [ln for ln in ax.lines if ln.get_label() == "source footprint"]
    # the outline mapped into the template frame lands on the source's edges
    fx, fy = footprint.get_xdata(), footprint.get_ydata()
    sx, sy = result.transform(fx, fy)
    edge = np.minimum.reduce([np.abs(sx + 0.5), np.abs(sx - (S[1] - 0.5)),
                              np.abs(sy + 0.5), np.abs(sy - (S[0] - 0.5))])
    assert np.max(edge) < 1e-6


@needs_mpl
def test_residual_vectors_and_scale_bar(fig, result):
    ax = _axes(fig, TITLES[1])
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    (key,) = [a for a in ax.artists if isinstance(a, QuiverKey)]
    table = result.residuals_table()
    np.testing.assert_allclose(quiver.U, table["dx_template"])
    np.testing.assert_allclose(quiver.V, table["dy_template"])
    factor = 1.0 / quiver.scale
    assert quiver.scale_units == "xy"  # arrows in data units: factor x residual
    label = key.text.get_text()
    assert f"×{factor:g}" in label and f"{key.U:g} px" in label
    # the default factor is round and makes the large residuals visible on the field
    mantissa = factor / 10 ** np.floor(np.log10(factor))
    assert mantissa in (1.0, 2.0, 5.0)
    p95 = np.percentile(np.hypot(table["dx_template"], table["dy_template"]), 95)
    assert 0.02 * S[0] < p95 * factor <= 0.08 * S[0] + 1e-9
    assert p95 <= key.U < 2.5 * p95  # the bar's length is a typical large residual


@needs_mpl
def test_exaggeration_can_be_chosen(result):
    ax = _axes(result.solution.plot(exaggerate=250), TITLES[1])
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    (key,) = [a for a in ax.artists if isinstance(a, QuiverKey)]
    assert quiver.scale == pytest.approx(1 / 250)
    assert "×250" in key.text.get_text()
    with pytest.raises(GpuAlignError, match="exaggerate"):
        result.plot(exaggerate=-1)


@needs_mpl
def test_residuals_against_x_and_y(fig, result):
    table = result.residuals_table()
    for title, coord in ((TITLES[2], "x_template"), (TITLES[3], "y_template")):
        ax = _axes(fig, title)
        lines = {ln.get_label(): ln for ln in ax.lines}
        for comp in "xy":
            line = lines[f"{comp} residual"]
            np.testing.assert_array_equal(line.get_xdata(), table[coord])
            np.testing.assert_allclose(line.get_ydata(), table[f"d{comp}_template"])
        assert ax.get_ylabel() == "residual (template px)"


def _image_grid(image):
    """The sample positions of an image drawn with ``extent`` (pixel centres)."""
    ny, nx = image.get_array().shape
    x0, x1, y0, y1 = image.get_extent()
    hx, hy = (x1 - x0) / (2 * nx), (y1 - y0) / (2 * ny)
    return np.linspace(x0 + hx, x1 - hx, nx), np.linspace(y0 + hy, y1 - hy, ny)


def _true_non_affine(pair, xs, ys):
    """|truth - closest affine| (source px) on a grid, NaN off the source (own least squares)."""
    x, y = np.meshgrid(xs, ys)
    sx, sy = pair.mapping(x, y)
    on = (sx >= -0.5) & (sx <= S[1] - 0.5) & (sy >= -0.5) & (sy <= S[0] - 0.5)
    a = np.column_stack([x[on], y[on], np.ones(on.sum())])
    b = np.column_stack([sx[on], sy[on]])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    out = np.full(x.shape, np.nan)
    out[on] = np.hypot(*(b - a @ coef).T)
    return out


@needs_mpl
def test_distortion_map_follows_the_true_distortion(fig, pair):
    ax = _axes(fig, TITLES[4])
    (image,) = ax.images
    assert image.colorbar is not None
    assert image.colorbar.ax.get_ylabel() == "non-affine displacement (source px)"
    fitted = np.ma.filled(image.get_array().astype(float), np.nan)
    truth = _true_non_affine(pair, *_image_grid(image))
    both = np.isfinite(fitted) & np.isfinite(truth)
    assert both.mean() > 0.7  # the rotated source covers most of the template
    assert np.nanmax(truth) > 0.25 * CORNER_PX  # a distortion worth seeing
    # the peak (at the footprint's corners, where the fit extrapolates) and the map
    assert np.nanmax(fitted) == pytest.approx(np.nanmax(truth), rel=0.12)
    rms = np.sqrt(np.mean((fitted[both] - truth[both]) ** 2))
    assert rms < 0.05 * np.nanmax(truth), rms
    assert image.colorbar.vmax == pytest.approx(np.nanmax(fitted))
    quivers = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 1 and len(quivers[0].U) > 50


@needs_mpl
def test_an_affine_solution_maps_no_distortion():
    rng = np.random.default_rng(84)
    tmpl = rng.uniform(0, 300, (40, 2))
    matrix = np.array([[0.9, -0.2, 12.0], [0.2, 0.9, -7.0]])
    t = Transform.from_matrix(matrix)
    inv = Transform.from_matrix(np.linalg.inv(np.vstack([matrix, [0, 0, 1]])))
    src = t.map_points(tmpl) + rng.normal(0, 0.05, tmpl.shape)
    sol = Solution(transform=t, inverse=inv, template_xy=tmpl, source_xy=src,
                   stats=fit_statistics(inv, tmpl, src), degree=1, mirrored=False,
                   cv_scores={}, source_shape=(300, 300), template_shape=(300, 300))
    fig = sol.plot()
    ax = _axes(fig, TITLES[4])
    assert float(np.ma.max(ax.images[0].get_array())) < 1e-9
    assert any("no distortion" in t.get_text() for t in ax.texts)
    assert any("not cross-validated" in t.get_text() for t in _axes(fig, TITLES[5]).texts)


@needs_mpl
def test_held_out_errors(fig, result):
    sol = result.solution
    ax = _axes(fig, TITLES[5])
    lines = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
    degrees = sorted(sol.cv_scores)
    np.testing.assert_array_equal(lines[0].get_xdata(), degrees)
    np.testing.assert_allclose(lines[0].get_ydata(), [sol.cv_scores[d] for d in degrees])
    (chosen,) = [ln for ln in ax.lines if ln.get_label().startswith("chosen")]
    assert list(chosen.get_xdata()) == [sol.degree]
    ax = _axes(fig, TITLES[6])
    scores = {**sol.model_scores, **sol.distortion_scores}
    assert scores, "the fit compares linear models by default"
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, list(scores.values()))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert f"{sol.model} *" in labels


@needs_mpl
def test_saved_png_and_pdf_are_readable_and_nothing_else_is_left(result, tmp_path):
    png = tmp_path / "diag.png"
    fig = result.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(png).shape[:2]
    assert (width, height) == tuple(np.round(fig.get_size_inches() * fig.dpi).astype(int))
    pdf = tmp_path / "diag.pdf"
    result.plot(pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(GpuAlignError, match="image format"):
        result.plot(tmp_path / "diag.fits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diag.pdf", "diag.png"]


@needs_mpl
def test_batch_summary_has_one_point_per_frame(result, tmp_path):
    sol = result.solution
    failed = {"source": "night/c.fits", "status": "failed", "n_match": None, "rms": None}
    skipped = {"source": "night/d.fits", "status": "skipped", "n_match": 31, "rms": 0.2}
    fig = plot_batch([result, sol, failed, skipped])
    for title, key, value in (("Fit RMS per frame", "rms", 0.2),
                              ("Matched stars per frame", "n_match", 31)):
        ax = _axes(fig, title)
        (fitted,) = [ln for ln in ax.lines if ln.get_label() == "fitted"]
        (crosses,) = [ln for ln in ax.lines if ln.get_label() == "failed"]
        assert len(fitted.get_xdata()) + len(crosses.get_xdata()) == 4
        np.testing.assert_array_equal(fitted.get_xdata(), [0, 1, 3])
        np.testing.assert_allclose(fitted.get_ydata(), [sol.stats[key], sol.stats[key], value])
        assert list(crosses.get_xdata()) == [2]
        assert ax.get_xlabel() or title.startswith("Fit")  # the frame axis is shared
        assert ax.get_ylabel()
    assert [t.get_text() for t in _axes(fig, "Matched stars per frame").get_xticklabels()] \
        == ["0", "1", "c", "d"]


@needs_mpl
def test_batch_summary_from_a_report_file(tmp_path):
    from gpualign.cli._report import build_report, frame_entry, write_report

    frames = [frame_entry(f"f{k}.fits", None, None, backend="numpy", seconds=1.0,
                          warnings=[], index=k) for k in range(3)]
    for k, f in enumerate(frames):
        f.update(n_match=100 + k, rms=0.01 * (k + 1))
    path = tmp_path / "r.json"
    write_report(build_report(frames), path)
    fig = plot_batch(path)
    (line,) = [ln for ln in _axes(fig, "Matched stars per frame").lines]
    np.testing.assert_array_equal(line.get_ydata(), [100, 101, 102])
    with pytest.raises(GpuAlignError, match="frames"):
        plot_batch({"gpualign": "0"})


def test_without_matplotlib_a_clear_error(result, monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    for call in (lambda: result.plot(), lambda: result.solution.plot(tmp_path / "x.png"),
                 lambda: plot_batch([result])):
        with pytest.raises(PlottingUnavailable) as info:
            call()
        assert isinstance(info.value, GpuAlignError)
        assert 'pip install "gpualign[plot]"' in str(info.value)
        assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_importing_gpualign_does_not_import_matplotlib():
    code = ("import sys\nimport gpualign, gpualign.cli\nfrom gpualign.cli import main\n"
            "try:\n    main(['align', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent)
    assert res.returncode == 0, res.stderr
    assert "--plot" in res.stdout


@needs_mpl
def test_a_failed_write_leaves_no_plot_and_no_temporary(result, tmp_path):
    import errno

    from gpualign.products._plot import save_figure

    fig = result.plot()

    def full_disk(f, **kw):
        f.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError(errno.ENOSPC, "No space left on device")

    fig.savefig = full_disk
    with pytest.raises(GpuAlignError, match="disk is full"):
        save_figure(fig, tmp_path / "diag.png")
    assert not list(tmp_path.iterdir())
