"""The work behind ``gpualign align``: one source through the frame runner, or a batch."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import typer

from gpualign import _progress
from gpualign._errors import InputError, record_warnings
from gpualign.backend import get_backend
from gpualign.batch import (
    FrameResult,
    make_tasks,
    output_directory,
    output_name,
    run_batch,
    summary_table,
)
from gpualign.cli._report import (
    batch_entry,
    build_report,
    check_plot,
    check_report,
    frame_entry,
    write_batch_plot,
    write_frame_plot,
    write_report,
)
from gpualign.detect import DetectSettings, read_sextractor
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings
from gpualign.pipeline import (
    FrameOptions,
    batch_retry,
    check_output_shape,
    detect_template,
    log_stats,
    prepare_template,
    run_frame,
)

log = logging.getLogger("gpualign")

__all__ = ["run_align", "SINGLE_SOURCE_OPTIONS"]

#: ``gpualign align`` options that apply to a single source only.
SINGLE_SOURCE_OPTIONS = ("source_mask", "mask_ext", "source_weight", "weight_ext",
                         "weight_type", "save_transform")
#: Options of the output that apply to every source.
EVERY_SOURCE_OPTIONS = ("conserve_flux", "preserve_footprints")


def _check_batch(sources: list[Path], output: Path, protected: tuple[Any, ...],
                 report: Path | None = None, plot: Path | None = None,
                 replace_plot: bool = False) -> None:
    """InputError, before anything is read or created, for a batch that cannot run.

    Every source must exist, ``output`` must be (or become) a directory, no two
    outputs may collide or replace an input, and the ``report`` and the ``plot``
    (when given) may be neither an input nor another output (see
    :func:`~gpualign.cli._report.check_plot` for ``replace_plot``).
    """
    for src in sources:
        if not Path(src).is_file():
            what = "is not a file" if Path(src).exists() else "not found"
            raise InputError(f"source file {what}: {src}",
                             hint="check the path; a batch is checked before any frame runs")
    outdir = Path(output).absolute()
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{output} is not a directory", hint="several sources need -o OUTDIR")
    tasks = make_tasks(sources, outdir, protected)
    outputs = [t.output for t in tasks]
    if report is not None:
        check_report(report, [*sources, *protected], [*outputs, plot])
    if plot is not None:
        check_plot(plot, [*sources, *protected], [*outputs, report], replace=replace_plot)


def _write_batch_report(report: Path, results: list[FrameResult], backend: str) -> None:
    """The ``--report`` of a batch: one frame per result, in the batch's order."""
    write_report(build_report([batch_entry(r, backend) for r in results]), report)


def run_align(sources: list[Path], template: Path | None, output: Path, *,
              settings: tuple[DetectSettings, MatchSettings, FitSettings],
              source_cat: Path | None, template_cat: Path | None, source_ext: str | None,
              template_ext: str | None, output_shape: tuple[int, int] | None,
              interp_order: int, cval: float, backend: str, threads: int | None,
              overwrite: bool, skip_existing: bool = False, scheduler: str | None = None,
              workers: int | None = None, quiet: bool = False,
              extras: dict[str, Any] | None = None, max_memory: float | None = None,
              report: Path | None = None, plot: Path | None = None,
              template_mask: tuple[Path | None, str | None] = (None, None)) -> None:
    """Align each source onto the template; several sources go into a directory.

    ``extras``: the options of :data:`SINGLE_SOURCE_OPTIONS` and
    :data:`EVERY_SOURCE_OPTIONS` (None or False: not given). ``report``: write a JSON
    report of every frame there (:mod:`gpualign.cli._report`) after the run; for a
    single source only when it was aligned, for a batch also when frames failed.
    ``template_mask``: (mask file, extension) of the template, left out of its
    detection. ``plot``: likewise, a figure (:mod:`gpualign.products._plot`): one source's fit, or
    a batch's RMS and matches per frame; refused before any work when it exists
    without ``overwrite`` or ``skip_existing``.

    Raises
    ------
    typer.Exit
        With code 1 after a batch's summary when any frame failed.
    """
    det, mat, fit = settings
    extras = {k: v for k, v in (extras or {}).items() if v not in (None, False)}
    single = [k for k in extras if k in SINGLE_SOURCE_OPTIONS]
    if single and len(sources) > 1:
        raise InputError(f"--{single[0].replace('_', '-')} applies to a single "
                         "source", hint="use gpualign apply for the other images")
    if len(sources) > 1 and source_cat is not None:
        raise InputError("--source-cat applies to a single source")
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing exclude each other",
                         hint="--overwrite replaces outputs, --skip-existing keeps them")
    if len(sources) > 1:
        _check_batch(sources, output, protected=(template, template_cat, template_mask[0]),
                     report=report,
                     plot=plot, replace_plot=overwrite or skip_existing)
    elif report is not None or plot is not None:
        single_out = output_name(sources[0], output) if output.is_dir() else output
        inputs = [sources[0], template, template_cat, source_cat, template_mask[0],
                  extras.get("source_mask"), extras.get("source_weight")]
        outputs = [single_out, extras.get("save_transform")]
        if report is not None:
            check_report(report, inputs, [*outputs, plot])
        if plot is not None:
            check_plot(plot, inputs, [*outputs, report], replace=overwrite or skip_existing)
    if output_shape is not None:
        check_output_shape(output_shape, "--output-shape")
    FrameOptions(interp_order=interp_order, cval=cval, threads=threads, max_memory=max_memory,
                 weight_type=extras.get("weight_type") or "variance")  # before any work
    _progress.configure(enabled=not quiet)
    be = get_backend(backend)
    tmpl_det = None
    if template_cat is not None:
        tmpl_det = read_sextractor(template_cat, flux_col=det.flux_col)
    side = prepare_template(template, template_det=tmpl_det, ext=template_ext,
                            output_shape=output_shape, flux_col=det.flux_col,
                            max_memory=max_memory, mask=template_mask[0],
                            mask_ext=template_mask[1])
    if len(sources) == 1:
        if output.is_dir():  # an existing directory: the batch's name inside it
            output = output_name(sources[0], output)
        if skip_existing and output.exists():
            log.warning("%s exists, skipped (--skip-existing)", output)
            if report is not None:
                write_report(build_report([frame_entry(
                    sources[0], output, None, backend=be.name, seconds=0.0, warnings=[],
                    status="skipped", message="output exists")]), report)
            if plot is not None:
                log.warning("no plot written: the frame was skipped, there is no fit")
            return
        src_det = None
        if source_cat is not None:
            src_det = read_sextractor(source_cat, flux_col=det.flux_col)
        options = FrameOptions(
            interp_order=interp_order, cval=cval, threads=threads, source_ext=source_ext,
            output=output, overwrite=overwrite, max_memory=max_memory,
            protected=(template, template_cat, source_cat, template_mask[0]),
            weight_type=extras.pop("weight_type", None) or "variance", **extras)
        t0 = time.perf_counter()
        with record_warnings() as caught:  # still shown as they come
            frame = run_frame(sources[0], side, detect=det, match=mat, fit=fit, backend=be,
                              options=options, source_det=src_det)
        log_stats(Path(sources[0]).name, frame.solution)
        if report is not None:
            s = frame.solution.stats
            entry = frame_entry(sources[0], output, frame.solution, backend=be.name,
                                seconds=time.perf_counter() - t0, warnings=caught,
                                message=f"{int(s['n_match'])} matches, rms {s['rms']:.3f} px")
            write_report(build_report([entry]), report)
        if plot is not None:
            write_frame_plot(frame.solution, plot)
        return
    cat = detect_template(side, det, mat)  # once for the whole batch
    results = run_batch(
        sources, cat, side.header, side.shape, output_directory(output), detect=det, match=mat,
        fit=fit, source_ext=source_ext, interp_order=interp_order, cval=cval,
        backend=be.name, threads=threads, overwrite=overwrite, skip_existing=skip_existing,
        scheduler=scheduler, workers=workers, show=False if quiet else None,
        protected=(template, template_cat), max_memory=max_memory,
        **batch_retry(side, det), **{k: bool(extras.get(k)) for k in EVERY_SOURCE_OPTIONS})
    if report is not None:  # also when frames failed: the report says which and why
        _write_batch_report(report, results, be.name)
    if plot is not None:  # likewise: failed frames are marked
        write_batch_plot(results, plot)
    if not quiet:
        typer.echo(summary_table(results))
    if any(not r.ok for r in results):
        raise typer.Exit(1)
