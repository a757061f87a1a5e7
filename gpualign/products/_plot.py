"""Diagnostic figures: one frame's fit (:func:`plot_solution`) and a batch (:func:`plot_batch`).

matplotlib is an optional dependency (``pip install "gpualign[plot]"``), imported only
when a figure is drawn, never when gpualign is imported; without it the figures raise
:class:`PlottingUnavailable`. The figures are built with matplotlib's object-oriented
API (:class:`matplotlib.figure.Figure`, no pyplot state), so they draw headless
(Agg) and leave the user's pyplot figures alone.

The solution's figure has six panels, all in the template frame unless said:

1. the matched stars over the template, with the template's outline and the source's
   footprint mapped onto it;
2. the residual vectors (source position mapped back, minus the template position,
   template px), exaggerated, with a scale bar giving the factor and a length in px;
3. and 4. the residuals' x and y components against x and against y;
5. the distortion surface: the fitted mapping minus the affine map closest to it
   (least squares over the template pixels that land on the source), in source px, as
   a magnitude image with a colourbar and arrows. The affine part removed is the one
   fitted to the mapping itself, not the transform's linear term, because polynomial
   surfaces can hold linear terms of their own;
6. the held-out RMS by distortion degree (``Solution.cv_scores``), and by linear and
   distortion model (``model_scores``, ``distortion_scores``: weighted by the centroid
   errors and computed at the final degree, so not on the same scale as the former).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign._system import publish, reporting_write_errors, temporary_beside
from gpualign.products._canvas import invert_points

__all__ = ["PlottingUnavailable", "PLOT_HINT", "PANEL_TITLES", "BATCH_TITLES",
           "plot_solution", "plot_batch", "distortion_surface", "save_figure",
           "check_plot_format"]

#: What to install for the figures.
PLOT_HINT = 'pip install "gpualign[plot]"'
#: Titles of the solution figure's panels, in order.
PANEL_TITLES = ("Matched stars (template frame)", "Residual vectors (exaggerated)",
                "Residuals against x", "Residuals against y",
                "Distortion surface (non-affine part)", "Held-out error by degree",
                "Held-out error by model")
#: Titles of the batch summary's panels.
BATCH_TITLES = ("Fit RMS per frame", "Matched stars per frame")
#: Samples of the distortion surface along the template's longer side.
SURFACE_SAMPLES = 64
#: Arrows of the distortion surface along the template's longer side.
SURFACE_ARROWS = 12
#: A distortion surface below this (source px) is drawn as none (an affine mapping's
#: rounding).
NO_DISTORTION_PX = 1e-6


class PlottingUnavailable(InputError):
    """matplotlib, which the diagnostic figures need, is not installed."""


def _matplotlib() -> Any:
    """The ``matplotlib`` module; PlottingUnavailable when it cannot be imported."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (the figures are built from it)
    except ImportError:
        raise PlottingUnavailable("the diagnostic plots need matplotlib, which is not "
                                  "installed", hint=PLOT_HINT) from None
    return matplotlib


def check_plot_format(path: str | os.PathLike) -> str:
    """The image format of ``path`` (from its suffix), checked against matplotlib's.

    Parameters
    ----------
    path : str or path
        Where the figure goes (``.png``, ``.pdf``, ``.svg``, ...).

    Returns
    -------
    str
        The format, lower case, without the dot.

    Raises
    ------
    PlottingUnavailable
        When matplotlib is not installed.
    InputError
        When the suffix names no format matplotlib writes.
    """
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in formats:
        shown = ", ".join(sorted(formats))
        raise InputError(f"cannot write a plot as {Path(path).name!r}: the suffix gives no "
                         "image format", hint=f"end the name with one of {shown}")
    return fmt


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Write ``fig`` to ``path`` atomically, in the format the suffix names.

    The figure goes to a hidden temporary file beside ``path`` that is renamed once
    complete, so a failure never leaves a half-written plot.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path
        Destination (replaced if it exists).
    """
    path = Path(path)
    fmt = check_plot_format(path)
    fd, tmp = temporary_beside(path)
    try:
        with reporting_write_errors(path), os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ geometry


def _nice(value: float, *, down: bool = True) -> float:
    """The number 1, 2 or 5 times a power of ten nearest below (or above) ``value``."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    steps = (1.0, 2.0, 5.0, 10.0)
    if down:
        return max(s for s in steps if s * power <= value * (1 + 1e-9)) * power
    return min(s for s in steps if s * power >= value * (1 - 1e-9)) * power


def _grid(shape: tuple[int, int], samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions over a ``(ny, nx)`` grid, ``samples`` along the longer side."""
    ny, nx = shape
    step = max(ny, nx) / max(samples - 1, 1)
    gx = max(2, int(round((nx - 1) / step)) + 1) if nx > 1 else 1
    gy = max(2, int(round((ny - 1) / step)) + 1) if ny > 1 else 1
    return np.linspace(0.0, nx - 1.0, gx), np.linspace(0.0, ny - 1.0, gy)


def distortion_surface(mapping: Any, template_shape: tuple[int, int],
                       source_shape: tuple[int, int] | None = None, *,
                       samples: int = SURFACE_SAMPLES
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The non-affine part of a template -> source mapping over the template grid.

    The mapping is sampled on a grid over the template; the affine map closest to it
    (least squares over the samples that land on the source, all samples when
    ``source_shape`` is None) is subtracted.

    Parameters
    ----------
    mapping : callable
        ``mapping(x, y) -> (sx, sy)``, template px to source px (a
        :class:`~gpualign.transform.Transform`, or a simulator's truth).
    template_shape : tuple of int
        ``(ny, nx)`` of the template.
    source_shape : tuple of int, optional
        ``(ny, nx)`` of the source: samples mapped outside it are NaN.
    samples : int
        Samples along the template's longer side.

    Returns
    -------
    xs, ys : ndarray
        Sample positions along x and y (template px).
    dx, dy : ndarray, shape (len(ys), len(xs))
        The non-affine displacement (source px); NaN off the source.
    """
    xs, ys = _grid(template_shape, samples)
    x, y = np.meshgrid(xs, ys)
    sx, sy = (np.asarray(v, dtype=np.float64) for v in mapping(x, y))
    inside = np.isfinite(sx) & np.isfinite(sy)
    if source_shape is not None:
        h, w = source_shape
        inside &= (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    design = np.column_stack([x.ravel(), y.ravel(), np.ones(x.size)])
    dx = np.full(x.shape, np.nan)
    dy = np.full(x.shape, np.nan)
    use = inside.ravel()
    if np.count_nonzero(use) >= 3:
        target = np.column_stack([sx.ravel(), sy.ravel()])
        coef, *_ = np.linalg.lstsq(design[use], target[use], rcond=None)
        rest = np.where(use[:, None], target - design @ coef, np.nan)
        dx, dy = rest[:, 0].reshape(x.shape), rest[:, 1].reshape(x.shape)
    return xs, ys, dx, dy


def _footprint_loop(transform: Any, source_shape: tuple[int, int], per_edge: int = 60
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The source's outline, mapped into the template frame, as one closed loop."""
    h, w = source_shape
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    left, right, bottom, top = -0.5, w - 0.5, -0.5, h - 0.5
    bx = np.concatenate([left + t * w, np.full_like(t, right), right - t * w,
                         np.full_like(t, left), [left]])
    by = np.concatenate([np.full_like(t, bottom), bottom + t * h, np.full_like(t, top),
                         top - t * h, [bottom]])
    with np.errstate(all="ignore"):
        return invert_points(transform, bx, by)


def _template_shape(solution: Any) -> tuple[int, int]:
    """The template's ``(ny, nx)``; from the matched stars when the solution has none."""
    if solution.template_shape is not None:
        return tuple(int(v) for v in solution.template_shape)
    xy = np.asarray(solution.template_xy, dtype=np.float64).reshape(-1, 2)
    if not len(xy):
        return (1, 1)
    return (int(math.ceil(np.nanmax(xy[:, 1]))) + 1, int(math.ceil(np.nanmax(xy[:, 0]))) + 1)


def _residuals(solution: Any) -> tuple[np.ndarray, np.ndarray]:
    """Template positions of the pairs and their residuals (template px), as (N, 2)."""
    tmpl = np.asarray(solution.template_xy, dtype=np.float64).reshape(-1, 2)
    src = np.asarray(solution.source_xy, dtype=np.float64).reshape(-1, 2)
    if not len(tmpl):
        return tmpl, np.empty((0, 2))
    return tmpl, solution.inverse.map_points(src) - tmpl


# ------------------------------------------------------------------------ panels


def _frame_axes(ax: Any, shape: tuple[int, int]) -> None:
    """Template axes: equal aspect, y up (as ds9 shows a FITS image), labelled."""
    ny, nx = shape
    pad = 0.04 * max(nx, ny)
    ax.set_xlim(-0.5 - pad, nx - 0.5 + pad)
    ax.set_ylim(-0.5 - pad, ny - 0.5 + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("x (template px)")
    ax.set_ylabel("y (template px)")


def _outlines(ax: Any, solution: Any, shape: tuple[int, int]) -> None:
    """The template's outline and the source's footprint on it."""
    from matplotlib.patches import Rectangle

    ny, nx = shape
    ax.add_patch(Rectangle((-0.5, -0.5), nx, ny, fill=False, color="0.3", lw=1.2,
                           label="template"))
    if solution.source_shape is not None:
        fx, fy = _footprint_loop(solution.transform, tuple(solution.source_shape))
        ax.plot(fx, fy, color="tab:orange", lw=1.2, ls="--", label="source footprint")


def _pairs_panel(ax: Any, solution: Any, shape: tuple[int, int], tmpl: np.ndarray) -> None:
    _outlines(ax, solution, shape)
    ax.plot(tmpl[:, 0], tmpl[:, 1], "o", ms=3, mfc="none", color="tab:blue",
            label=f"{len(tmpl)} matched stars")
    _frame_axes(ax, shape)
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    ax.set_title(PANEL_TITLES[0])


def _exaggeration(res: np.ndarray, shape: tuple[int, int]) -> float:
    """A round factor that makes the typical large residual 8% of the field."""
    size = np.hypot(res[:, 0], res[:, 1]) if len(res) else np.empty(0)
    size = size[np.isfinite(size)]
    typical = float(np.percentile(size, 95)) if len(size) else 0.0
    if typical <= 0:
        return 1.0
    return _nice(0.08 * max(shape) / typical)


def _vectors_panel(ax: Any, solution: Any, shape: tuple[int, int], tmpl: np.ndarray,
                   res: np.ndarray, exaggerate: float | None) -> float:
    factor = float(exaggerate) if exaggerate is not None else _exaggeration(res, shape)
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"exaggerate must be a positive number, got {exaggerate!r}")
    _outlines(ax, solution, shape)
    size = np.hypot(res[:, 0], res[:, 1]) if len(res) else np.empty(0)
    finite = size[np.isfinite(size)]
    length = _nice(float(np.percentile(finite, 95)) if len(finite) else 0.0, down=False)
    if len(res):
        q = ax.quiver(tmpl[:, 0], tmpl[:, 1], res[:, 0], res[:, 1], angles="xy",
                      scale_units="xy", scale=1.0 / factor, width=0.004, color="tab:red")
        ax.quiverkey(q, 0.84, 0.05, length, f"{length:g} px (×{factor:g})",
                     labelpos="N", coordinates="axes", fontproperties={"size": "small"})
    _frame_axes(ax, shape)
    ax.set_title(PANEL_TITLES[1])
    return factor


def _against_panel(ax: Any, coord: np.ndarray, res: np.ndarray, axis: str,
                   title: str) -> None:
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.plot(coord, res[:, 0], ".", ms=4, color="tab:blue", label="x residual")
    ax.plot(coord, res[:, 1], ".", ms=4, color="tab:orange", label="y residual")
    ax.set_xlabel(f"{axis} (template px)")
    ax.set_ylabel("residual (template px)")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title)


def _surface_panel(fig: Any, ax: Any, solution: Any, shape: tuple[int, int]) -> None:
    ny, nx = shape
    xs, ys, dx, dy = distortion_surface(solution.transform, shape, solution.source_shape)
    mag = np.hypot(dx, dy)
    top = float(np.nanmax(mag)) if np.isfinite(mag).any() else 0.0
    if top < NO_DISTORTION_PX:  # rounding of an affine mapping
        mag = np.where(np.isfinite(mag), 0.0, np.nan)
        top = 0.0
    half_x = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 0.5
    half_y = (ys[1] - ys[0]) / 2 if len(ys) > 1 else 0.5
    extent = (xs[0] - half_x, xs[-1] + half_x, ys[0] - half_y, ys[-1] + half_y)
    image = ax.imshow(np.ma.masked_invalid(mag), origin="lower", extent=extent,
                      cmap="viridis", vmin=0.0, vmax=top if top > 0 else 1.0,
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, label="non-affine displacement (source px)", shrink=0.85)
    every = max(1, int(round(len(xs) / SURFACE_ARROWS)))
    ax_, ay_ = np.meshgrid(xs[::every], ys[::every])
    adx, ady = dx[::every, ::every], dy[::every, ::every]
    keep = np.isfinite(adx) & np.isfinite(ady)
    if top > 0 and keep.any():
        scale = (max(nx, ny) / SURFACE_ARROWS) / top  # the longest arrow: one arrow cell
        ax.quiver(ax_[keep], ay_[keep], adx[keep], ady[keep], angles="xy",
                  scale_units="xy", scale=1.0 / scale, color="white", width=0.004)
    if solution.source_shape is not None:
        fx, fy = _footprint_loop(solution.transform, tuple(solution.source_shape))
        ax.plot(fx, fy, color="tab:orange", lw=1.0, ls="--")
    if top == 0:
        ax.text(0.5, 0.5, "affine only: no distortion", transform=ax.transAxes,
                ha="center", va="center", color="white")
    _frame_axes(ax, shape)
    ax.set_title(PANEL_TITLES[4])


def _degree_panel(ax: Any, solution: Any) -> None:
    scores = {int(k): float(v) for k, v in solution.cv_scores.items()}
    ax.set_xlabel("distortion degree (1 = affine)")
    ax.set_ylabel("held-out RMS (source px)")
    ax.set_title(PANEL_TITLES[5])
    if not scores:
        ax.text(0.5, 0.5, "degree given:\nnot cross-validated", transform=ax.transAxes,
                ha="center", va="center")
        return
    degrees = sorted(scores)
    ax.plot(degrees, [scores[d] for d in degrees], "o-", color="tab:blue")
    if solution.degree in scores:
        ax.plot([solution.degree], [scores[solution.degree]], "*", ms=14, color="tab:red",
                label=f"chosen: {solution.degree}")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xticks(degrees)


def _model_panel(ax: Any, solution: Any) -> None:
    ax.set_xlabel("model (linear | distortion)")
    ax.set_ylabel("weighted held-out RMS (source px)")
    ax.set_title(PANEL_TITLES[6])
    bars = [(name, float(v), "tab:blue", name == solution.model)
            for name, v in solution.model_scores.items()]
    bars += [(name, float(v), "tab:green", name == solution.distortion)
             for name, v in solution.distortion_scores.items()]
    if not bars:
        ax.text(0.5, 0.5, f"{solution.model}+{solution.distortion}:\nno other model tried",
                transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
        return
    pos = np.arange(len(bars))
    ax.bar(pos, [b[1] for b in bars], color=[b[2] for b in bars],
           edgecolor=["black" if b[3] else "none" for b in bars], linewidth=2)
    ax.set_xticks(pos, [b[0] + (" *" if b[3] else "") for b in bars], fontsize="small",
                  rotation=30, ha="right")


def _summary(solution: Any) -> str:
    stats = solution.stats
    model = solution.model if solution.degree <= 1 else f"{solution.model}+{solution.distortion}"
    mirrored = ", mirrored" if solution.mirrored else ""
    return (f"{int(stats.get('n_match', len(solution.template_xy)))} matches, rms "
            f"{float(stats.get('rms', float('nan'))):.4f} px, {model} degree "
            f"{solution.degree}{mirrored}  (* chosen)")


def plot_solution(solution: Any, *, fig: Any = None, exaggerate: float | None = None) -> Any:
    """The diagnostic figure of one fit (six panels, see the module's description).

    Parameters
    ----------
    solution : Solution or AlignResult
        The fit (an AlignResult's ``solution`` is used).
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared first); default: a new 12 x 15 inch figure.
    exaggerate : float, optional
        Factor the residual vectors are drawn longer by; default: a round factor that
        makes the 95th-percentile residual 8% of the field.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    PlottingUnavailable
        When matplotlib is not installed (``pip install "gpualign[plot]"``).
    """
    _matplotlib()
    from matplotlib.figure import Figure

    solution = getattr(solution, "solution", solution)
    if fig is None:
        fig = Figure(figsize=(12, 15), layout="constrained")
    else:
        fig.clear()
    axes = fig.subplot_mosaic([["pairs", "pairs", "vectors", "vectors"],
                               ["x", "x", "y", "y"],
                               ["surface", "surface", "degree", "model"]])
    shape = _template_shape(solution)
    tmpl, res = _residuals(solution)
    _pairs_panel(axes["pairs"], solution, shape, tmpl)
    _vectors_panel(axes["vectors"], solution, shape, tmpl, res, exaggerate)
    _against_panel(axes["x"], tmpl[:, 0], res, "x", PANEL_TITLES[2])
    _against_panel(axes["y"], tmpl[:, 1], res, "y", PANEL_TITLES[3])
    _surface_panel(fig, axes["surface"], solution, shape)
    _degree_panel(axes["degree"], solution)
    _model_panel(axes["model"], solution)
    fig.suptitle(_summary(solution))
    return fig


# ------------------------------------------------------------------------ batches


def _frame_of(item: Any, index: int) -> dict[str, Any]:
    """``{label, status, n_match, rms}`` of a report frame, FrameResult, result or solution."""
    if isinstance(item, dict):
        src = item.get("source")
        return {"label": Path(src).stem if src else str(index),
                "status": item.get("status", "ok"), "n_match": item.get("n_match"),
                "rms": item.get("rms")}
    if hasattr(item, "status") and hasattr(item, "n_match"):  # a batch's FrameResult
        return {"label": Path(str(item.source)).stem, "status": item.status,
                "n_match": item.n_match, "rms": item.rms}
    sol = getattr(item, "solution", item)
    if not hasattr(sol, "stats"):
        raise InputError(f"cannot summarise a {type(item).__name__}",
                         hint="give a report (dict or JSON file), FrameResults, "
                              "AlignResults or Solutions")
    return {"label": str(index), "status": "ok", "n_match": sol.stats.get("n_match"),
            "rms": sol.stats.get("rms")}


def _frames(reports_or_results: Any) -> list[dict[str, Any]]:
    items = reports_or_results
    if isinstance(items, (str, os.PathLike)):
        try:
            items = json.loads(Path(items).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the report {items}: {exc}") from None
    if isinstance(items, dict):
        if "frames" not in items:
            raise InputError("a report holds 'frames'; this dict does not",
                             hint="give what gpualign align --report writes")
        items = items["frames"]
    if not isinstance(items, Iterable):
        items = [items]
    return [_frame_of(item, k) for k, item in enumerate(items)]


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def plot_batch(reports_or_results: Any, *, fig: Any = None) -> Any:
    """A batch summary: fit RMS and matched stars per frame.

    Parameters
    ----------
    reports_or_results : dict, path, or iterable
        A report (what ``gpualign align --report`` writes, as a dict or its JSON file),
        or frames: report frames, :class:`~gpualign.batch.FrameResult`,
        :class:`AlignResult` or :class:`Solution` objects, in order.
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared first).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the frame axis; each frame with a fit is one point of each
        panel, each failed frame a red cross at the foot of both.

    Raises
    ------
    PlottingUnavailable
        When matplotlib is not installed.
    """
    _matplotlib()
    from matplotlib.figure import Figure

    frames = _frames(reports_or_results)
    n = len(frames)
    if fig is None:
        fig = Figure(figsize=(max(6.0, min(16.0, 0.35 * n + 4)), 6.5), layout="constrained")
    else:
        fig.clear()
    ax_rms, ax_n = fig.subplots(2, 1, sharex=True)
    index = np.arange(n)
    fitted = np.array([f["status"] != "failed" for f in frames], dtype=bool)
    rms = np.array([_number(f["rms"]) for f in frames])
    nmatch = np.array([_number(f["n_match"]) for f in frames])
    for ax, values, title, label in ((ax_rms, rms, BATCH_TITLES[0], "fit RMS (template px)"),
                                     (ax_n, nmatch, BATCH_TITLES[1], "matched stars")):
        ax.plot(index[fitted], values[fitted], "o-", color="tab:blue", label="fitted")
        if (~fitted).any():
            ax.plot(index[~fitted], np.full(int((~fitted).sum()), 0.04), "x", ms=9, mew=2,
                    color="tab:red", label="failed", transform=ax.get_xaxis_transform())
            ax.legend(loc="upper right", fontsize="small")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(label)
        ax.set_title(title)
    ax_n.set_xlabel("frame")
    if n <= 40:
        ax_n.set_xticks(index, [f["label"] for f in frames], rotation=45, ha="right",
                        fontsize="small")
    failed = int((~fitted).sum())
    fig.suptitle(f"{n} frames, {n - failed} fitted, {failed} failed")
    return fig
