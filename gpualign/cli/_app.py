"""Command line: ``gpualign align | apply | demo | info``.

Parses options into settings, calls the pipeline or the batch, prints; no algorithm
code lives here, and ``typer.Exit`` and ``echo`` live only in this subpackage. Every
failure the user can fix is one line on stderr and a non-zero exit code
(1: registration failed, 2: bad input or unusable backend); a traceback only with -vv.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gpualign._version import __version__

# Only typer and the version are imported here: `gpualign --version` and `--help` must
# start in a fraction of a second, so NumPy, astropy and the engine are imported by
# the commands that use them.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Register astronomical images onto a template's pixel grid using stars as tie-points.",
    pretty_exceptions_enable=False,
)
log = logging.getLogger("gpualign")

# Help panels: each option of a command is listed under one of these titles.
INPUT = "Input"
DETECTION = "Detection"
MATCHING = "Matching"
FIT = "Fit"
RESAMPLING = "Resampling"
OUTPUT = "Output"
BATCH = "Batch"
BACKEND = "Backend"

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


def _setup_logging(verbose: int) -> None:
    """Set the log level and the warning display of a command about to run.

    Also stops NumPy's huge-page advice (:func:`_no_hugepage_advice`): every command
    that works on images starts here.
    """
    from gpualign._errors import GpuAlignWarning

    _no_hugepage_advice()
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    import warnings

    if verbose <= 0:
        # Library noise (astropy's and NumPy's warnings, astropy's log) only at -v: by
        # default a failure is the one line of `fail`.
        warnings.simplefilter("ignore")
        logging.getLogger("astropy").setLevel(logging.ERROR)
    # gpualign's own warnings always: one stderr line each, every time.
    warnings.filterwarnings("always", category=GpuAlignWarning)
    if not getattr(warnings.showwarning, "_gpualign", False):
        warnings.showwarning = _show_warning(warnings.showwarning)


class _Format(logging.Formatter):
    """Log lines as ``LEVEL: message``; a batch worker's GpuAlignWarning as a warning.

    A GpuAlignWarning raised in a worker process reaches the parent as a log record;
    it is printed as the single-frame CLI prints one: ``gpualign: warning: ...``.
    """

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "gpualign_warning", None) is not None:
            return f"gpualign: warning: {record.getMessage()}"
        return super().format(record)


def _show_warning(previous: Any) -> Any:
    """A ``warnings.showwarning`` printing a GpuAlignWarning as one stderr line."""
    from gpualign._errors import GpuAlignWarning

    def show(message: Warning | str, category: type[Warning], *args: Any,
             **kwargs: Any) -> None:
        if isinstance(category, type) and issubclass(category, GpuAlignWarning):
            first = (str(message).splitlines() or [category.__name__])[0]
            typer.echo(f"gpualign: warning: {first}", err=True)
        else:
            previous(message, category, *args, **kwargs)

    show._gpualign = True  # type: ignore[attr-defined]
    return show


def fail(exc: BaseException, verbose: int) -> typer.Exit:
    """Print one line for ``exc`` and return the Exit to raise."""
    from gpualign._errors import BackendUnavailable, GpuAlignError, InputError

    if verbose >= 2:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, (InputError, BackendUnavailable)):
        code = EXIT_USAGE
    elif isinstance(exc, GpuAlignError):
        code = EXIT_FAILED
    elif isinstance(exc, (MemoryError, OSError, ValueError)):
        code = EXIT_FAILED
    else:
        code = EXIT_INTERNAL
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    typer.echo(f"gpualign: error: {first}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpualign {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """gpualign: detection-based image registration on GPU (CuPy) or CPU (NumPy)."""


Verbose = Annotated[
    int, typer.Option("-v", "--verbose", count=True, help="-v: fit stats, -vv: debug",
                      rich_help_panel=OUTPUT)
]
# Options that gpualign align and gpualign apply share.
SourceMask = Annotated[
    Path | None,
    typer.Option(help="Bad-pixel mask or bitmask FITS (written as MASK).", rich_help_panel=INPUT),
]
MaskExt = Annotated[
    str | None, typer.Option(help="FITS extension of the mask.", rich_help_panel=INPUT)
]
SourceWeight = Annotated[
    Path | None,
    typer.Option(help="Weight/variance map FITS (written as an extension).",
                 rich_help_panel=INPUT),
]
WeightExt = Annotated[
    str | None, typer.Option(help="FITS extension of the weight.", rich_help_panel=INPUT)
]
ConserveFlux = Annotated[
    bool, typer.Option("--conserve-flux", help="Multiply by |det J| (keep fluxes).",
                       rich_help_panel=RESAMPLING)
]
PreserveFootprints = Annotated[
    bool, typer.Option("--preserve-footprints", help="Grow the canvas to hold both.",
                       rich_help_panel=RESAMPLING)
]
MaxMemory = Annotated[
    float | None,
    typer.Option(help="GiB the run may hold at its peak (default: the memory "
                 "available; more runs on swap).", rich_help_panel=BACKEND),
]
InterpOrder = Annotated[
    int, typer.Option(min=0, max=5, help="Spline order 0-5.", rich_help_panel=RESAMPLING)
]
Cval = Annotated[
    float, typer.Option(help="Value of pixels with no data.", rich_help_panel=RESAMPLING)
]
BackendName = Annotated[
    str, typer.Option(help="auto, numpy or cupy.", rich_help_panel=BACKEND)
]
Threads = Annotated[
    int | None, typer.Option(help="CPU threads for the warp.", rich_help_panel=BACKEND)
]
Overwrite = Annotated[
    bool, typer.Option(help="Replace existing outputs.", rich_help_panel=OUTPUT)
]


@app.command()
def align(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Source image(s) (FITS) to resample."),
    ],
    template: Annotated[
        Path | None,
        typer.Option("-t", "--template", help="Template image (FITS).", rich_help_panel=INPUT),
    ] = None,
    source_ext: Annotated[
        str | None, typer.Option(help="Source FITS extension.", rich_help_panel=INPUT)
    ] = None,
    template_ext: Annotated[
        str | None, typer.Option(help="Template FITS extension.", rich_help_panel=INPUT)
    ] = None,
    source_cat: Annotated[
        Path | None,
        typer.Option(help="Source SExtractor ASCII catalogue (skip detection).",
                     rich_help_panel=INPUT),
    ] = None,
    template_cat: Annotated[
        Path | None,
        typer.Option(help="Template SExtractor ASCII catalogue.", rich_help_panel=INPUT),
    ] = None,
    source_mask: SourceMask = None,
    mask_ext: MaskExt = None,
    template_mask: Annotated[
        Path | None,
        typer.Option(help="Template bad-pixel mask or bitmask FITS (no detection there).",
                     rich_help_panel=INPUT),
    ] = None,
    template_mask_ext: Annotated[
        str | None, typer.Option(help="FITS extension of the template mask.",
                                 rich_help_panel=INPUT)
    ] = None,
    source_weight: SourceWeight = None,
    weight_ext: WeightExt = None,
    weight_type: Annotated[
        str | None,
        typer.Option(help="variance (default), inverse_variance or stddev.",
                     rich_help_panel=INPUT),
    ] = None,
    sep_thresh: Annotated[
        float, typer.Option(help="Detection threshold (sigma).", rich_help_panel=DETECTION)
    ] = 5.0,
    min_fwhm: Annotated[
        float, typer.Option(help="Minimum FWHM of a star (px).", rich_help_panel=DETECTION)
    ] = 1.0,
    bad_flag_bits: Annotated[
        int, typer.Option(help="Drop detections with these flags.", rich_help_panel=DETECTION)
    ] = 0,
    min_sep: Annotated[
        float | None,
        typer.Option(help="Crowding filter (px); default 2*max-match-dist.",
                     rich_help_panel=DETECTION),
    ] = None,
    n_det: Annotated[
        float | None,
        typer.Option(help="Brightest detections used: count, or fraction < 1.",
                     rich_help_panel=DETECTION),
    ] = None,
    auto_depth: Annotated[
        bool,
        typer.Option("--auto-depth/--no-auto-depth",
                     help="Detect deeper (down to 1.5 sigma) when an image gives fewer than "
                     "20 usable stars, and at 3 sigma when blind matching finds nothing.",
                     rich_help_panel=DETECTION),
    ] = True,
    flux_col: Annotated[
        str | None,
        typer.Option(help="Flux column of the catalogues, e.g. FLUX_AUTO.",
                     rich_help_panel=DETECTION),
    ] = None,
    n_quad_det: Annotated[
        int, typer.Option(help="Stars per quad-building set.", rich_help_panel=MATCHING)
    ] = 20,
    min_quad_sep: Annotated[
        float, typer.Option(help="Minimum quad size (px).", rich_help_panel=MATCHING)
    ] = 50.0,
    max_quad_hash_dist: Annotated[
        float, typer.Option(help="Quad hash tolerance.", rich_help_panel=MATCHING)
    ] = 0.01,
    max_quad_cand: Annotated[
        int, typer.Option(help="Quad candidates verified at most.", rich_help_panel=MATCHING)
    ] = 50,
    patience_quad_cand: Annotated[
        int,
        typer.Option(help="Stop after this many candidates without improvement.",
                     rich_help_panel=MATCHING),
    ] = 5,
    quad_edge_buffer: Annotated[
        float,
        typer.Option(help="No quad stars this close to edges (px).", rich_help_panel=MATCHING),
    ] = 10.0,
    sub_tile: Annotated[
        int, typer.Option(help="Sub-tile grid for quad stars.", rich_help_panel=MATCHING)
    ] = 2,
    max_match_dist: Annotated[
        float, typer.Option(help="Cross-match tolerance (px).", rich_help_panel=MATCHING)
    ] = 5.0,
    min_n_match: Annotated[
        int, typer.Option(help="Fewest matched stars accepted.", rich_help_panel=MATCHING)
    ] = 6,
    mirror: Annotated[
        bool,
        typer.Option("--mirror/--no-mirror", help="Also try a mirror-image source.",
                     rich_help_panel=MATCHING),
    ] = True,
    wcs_prior: Annotated[
        str,
        typer.Option(help="Use both images' WCS to predict the match (auto) or match blind "
                     "(off).", rich_help_panel=MATCHING),
    ] = "auto",
    spline_order: Annotated[
        int | None,
        typer.Option(help="Distortion degree; 0 = affine only; default: cross-validated.",
                     rich_help_panel=FIT),
    ] = None,
    transform: Annotated[
        str, typer.Option(help="Linear model: similarity, affine or auto (simpler unless "
                          "the stars need more).", rich_help_panel=FIT)
    ] = "auto",
    distortion: Annotated[
        str, typer.Option(help="Distortion model: poly, tps or auto (by held-out error).",
                          rich_help_panel=FIT)
    ] = "poly",
    simple: Annotated[
        bool,
        typer.Option("--simple", help="Affine only (spalipy's align-fits-simple).",
                     rich_help_panel=FIT),
    ] = False,
    output_shape: Annotated[
        tuple[int, int] | None,
        typer.Option(help="Output NY NX (default: the template's).", rich_help_panel=RESAMPLING),
    ] = None,
    interp_order: InterpOrder = 3,
    cval: Cval = float("nan"),
    conserve_flux: ConserveFlux = False,
    preserve_footprints: PreserveFootprints = False,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Output FITS (a directory for several sources).",
                     rich_help_panel=OUTPUT),
    ] = Path("aligned.fits"),
    overwrite: Overwrite = False,
    save_transform: Annotated[
        Path | None,
        typer.Option(help="Save the found transform (JSON) for gpualign apply.",
                     rich_help_panel=OUTPUT),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write a JSON report of each frame (matches, residuals, model, "
                     "held-out scores, depth, timings, warnings); not written when a "
                     "single source fails.", rich_help_panel=OUTPUT),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write diagnostic plots (.png, .pdf, .svg; needs matplotlib): "
                     "the fit of one source, or a batch's RMS and matches per frame.",
                     rich_help_panel=OUTPUT),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("-q", "--quiet", help="No progress, no summary.", rich_help_panel=OUTPUT),
    ] = False,
    verbose: Verbose = 0,
    skip_existing: Annotated[
        bool,
        typer.Option(help="Skip sources whose output exists (resume a batch).",
                     rich_help_panel=BATCH),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Run the frames on this Dask scheduler (tcp://HOST:PORT).",
                     rich_help_panel=BATCH),
    ] = None,
    workers: Annotated[
        int | None,
        # metavar: "<int range>" would widen the panel's type column past 80 columns.
        typer.Option(min=1, metavar="<int>", help="Run the frames on a local Dask cluster of N.",
                     rich_help_panel=BATCH),
    ] = None,
    backend: BackendName = "auto",
    threads: Threads = None,
    max_memory: MaxMemory = None,
) -> None:
    """Align SOURCE(S) onto the pixel grid of the template."""
    _setup_logging(verbose)
    from gpualign.cli._align import run_align
    from gpualign.detect import DetectSettings
    from gpualign.fit import FitSettings
    from gpualign.match import MatchSettings

    try:
        settings = (
            DetectSettings(sep_thresh=sep_thresh, min_fwhm=min_fwhm, bad_flag_bits=bad_flag_bits,
                           min_sep=min_sep, n_det=n_det, flux_col=flux_col,
                           auto_depth=auto_depth),
            MatchSettings(n_quad_det=n_quad_det, min_quad_sep=min_quad_sep,
                          max_quad_hash_dist=max_quad_hash_dist, max_quad_cand=max_quad_cand,
                          patience_quad_cand=patience_quad_cand,
                          quad_edge_buffer=quad_edge_buffer, sub_tile=sub_tile,
                          max_match_dist=max_match_dist, min_n_match=min_n_match,
                          allow_mirror=mirror, wcs_prior=wcs_prior),
            FitSettings(spline_order=0 if simple else spline_order, transform=transform,
                        distortion=distortion),
        )
        run_align(
            sources, template, output, settings=settings, source_cat=source_cat,
            template_cat=template_cat, source_ext=source_ext, template_ext=template_ext,
            output_shape=output_shape, interp_order=interp_order, cval=cval, backend=backend,
            threads=threads, overwrite=overwrite, skip_existing=skip_existing,
            scheduler=scheduler, workers=workers, quiet=quiet, max_memory=max_memory,
            report=report, plot=plot, template_mask=(template_mask, template_mask_ext),
            extras=dict(source_mask=source_mask, mask_ext=mask_ext,
                        source_weight=source_weight, weight_ext=weight_ext,
                        weight_type=weight_type, conserve_flux=conserve_flux,
                        preserve_footprints=preserve_footprints,
                        save_transform=save_transform),
        )
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail(exc, verbose) from None


@app.command()
def apply(
    transform_file: Annotated[
        Path, typer.Argument(help="Transform file (JSON) to apply.")
    ],
    images: Annotated[
        list[Path], typer.Argument(help="Image(s) (FITS) to resample.")
    ],
    ext: Annotated[
        str | None, typer.Option(help="FITS extension of the images.", rich_help_panel=INPUT)
    ] = None,
    template: Annotated[
        Path | None,
        typer.Option("-t", "--template", help="Template FITS (its header/WCS).",
                     rich_help_panel=INPUT),
    ] = None,
    template_ext: Annotated[
        str | None, typer.Option(help="Template FITS extension.", rich_help_panel=INPUT)
    ] = None,
    source_mask: SourceMask = None,
    mask_ext: MaskExt = None,
    source_weight: SourceWeight = None,
    weight_ext: WeightExt = None,
    weight_type: Annotated[
        str, typer.Option(help="variance, inverse_variance or stddev.", rich_help_panel=INPUT)
    ] = "variance",
    output_shape: Annotated[
        tuple[int, int] | None,
        typer.Option(help="Output NY NX (default: from the file).", rich_help_panel=RESAMPLING),
    ] = None,
    interp_order: InterpOrder = 3,
    cval: Cval = float("nan"),
    conserve_flux: ConserveFlux = False,
    preserve_footprints: PreserveFootprints = False,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Output FITS (a directory for several).",
                     rich_help_panel=OUTPUT),
    ] = Path("applied.fits"),
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    backend: BackendName = "auto",
    threads: Threads = None,
    max_memory: MaxMemory = None,
) -> None:
    """Resample IMAGE(S) with a saved TRANSFORM_FILE (no detection)."""
    _setup_logging(verbose)
    from gpualign.cli._apply import run_apply

    try:
        run_apply(transform_file, images, output, ext=ext, template=template,
                  template_ext=template_ext, source_mask=source_mask, mask_ext=mask_ext,
                  source_weight=source_weight, weight_ext=weight_ext, weight_type=weight_type,
                  output_shape=output_shape, interp_order=interp_order, cval=cval,
                  conserve_flux=conserve_flux, preserve_footprints=preserve_footprints,
                  backend=backend, threads=threads, overwrite=overwrite,
                  max_memory=max_memory)
    except Exception as exc:
        raise fail(exc, verbose) from None


@app.command()
def demo(
    outdir: Annotated[
        Path | None,
        typer.Option(help="Where to write the demo FITS files (default: a new temporary "
                     "directory, named in the report).", rich_help_panel=OUTPUT),
    ] = None,
    verbose: Verbose = 0,
    backend: BackendName = "auto",
) -> None:
    """Distort a real JWST image with a known mapping, recover it, and report the error."""
    _setup_logging(verbose)
    from gpualign.cli._demo import run_demo

    try:
        run_demo(outdir, backend=backend)
    except Exception as exc:
        raise fail(exc, verbose) from None


@app.command()
def info() -> None:
    """Show the backend and device that would be used, and the packages' versions."""
    from gpualign.cli._info import run_info

    try:
        run_info()
    except Exception as exc:
        raise fail(exc, 0) from None


def _no_hugepage_advice() -> None:
    """Stop NumPy advising transparent huge pages for new large arrays (CLI only).

    NumPy calls ``madvise(MADV_HUGEPAGE)`` on every array of 4 MB or more. Where the
    kernel then compacts memory to find huge pages (``defrag=madvise``), first
    touching a fresh array costs several times more, and gpualign's arrays are
    streamed through once, where huge pages buy little. A ``NUMPY_MADVISE_HUGEPAGE``
    set by the user wins. Library calls never change it.
    """
    import os

    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # NumPy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
    _set_madvise_hugepage(False)


def _click_kind(exc: BaseException) -> str | None:
    """``"help"``, ``"usage"``, ``"click"`` or ``"abort"`` for the parser's exceptions.

    Told by class name: typer vendors its own copy of click, so the classes differ
    between typer versions while the names stay.
    """
    names = {c.__name__ for c in type(exc).__mro__}
    if "NoArgsIsHelpError" in names:
        return "help"
    if "UsageError" in names:
        return "usage"
    if "ClickException" in names:
        return "click"
    return "abort" if "Abort" in names else None


def _usage_line(exc: Exception) -> str:
    """One line for a command-line usage error (the parser's own takes five, in a box)."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    param = getattr(exc, "param", None)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if (low is not None or high is not None) and "allowed" not in message:
        message += f" (allowed: {'' if low is None else low}..{'' if high is None else high})"
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "gpualign"
    return f"gpualign: error: {message} (see '{command} --help')"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr and an exit code.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    try:
        code = app(args=argv, prog_name="gpualign", standalone_mode=False)
    except Exception as exc:
        kind = _click_kind(exc)
        if kind == "help":  # no arguments at all
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            code = EXIT_USAGE
        elif kind == "usage":  # bad option, missing argument, bad value
            typer.echo(_usage_line(exc), err=True)
            code = EXIT_USAGE
        elif kind == "click":
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            typer.echo(f"gpualign: error: {message}", err=True)
            code = exc.exit_code  # type: ignore[attr-defined]
        elif kind == "abort":  # end of input at a prompt
            typer.echo("gpualign: interrupted", err=True)
            code = 130
        else:
            raise
    sys.exit(code if isinstance(code, int) else 0)
