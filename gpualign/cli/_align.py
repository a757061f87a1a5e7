"""The work behind ``gpualign align``: read, register, write (one or many sources)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign import __version__
from gpualign.backend import get_backend
from gpualign.detect._strips import STRIP_DETECT_PIXELS, detect_strips
from gpualign.detect._catalog import Catalog, read_sextractor
from gpualign.detect._sep import detect, detect_many
from gpualign._errors import GpuAlignError, InputError
from gpualign.io._read import load_image, write_fits_atomic
from gpualign.pipeline._api import AlignResult, Solution, solve
from gpualign.warp._resample import warp

log = logging.getLogger("gpualign")

_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
               "XTENSION", "PCOUNT", "GCOUNT", "BLANK", "CHECKSUM", "DATASUM"}


def output_header(base: fits.Header | None, solution: Solution, source: str, backend: str,
                  interp_order: int) -> fits.Header:
    """Template header (its WCS describes the aligned data) plus provenance keywords."""
    hdr = fits.Header()
    if base is not None:
        for card in base.cards:
            if card.keyword not in _STRUCTURAL and card.keyword:
                hdr.append(card, end=True)
    s = solution.stats
    hdr["GA_VERS"] = (__version__, "gpualign version")
    hdr["GA_SRC"] = (Path(source).name[:60], "source image aligned onto this grid")
    hdr["GA_NMAT"] = (int(s.get("n_match", 0)), "matched stars in the final fit")
    hdr["GA_RMS"] = (float(np.nan_to_num(s.get("rms", np.nan), nan=-1.0)),
                     "fit residual RMS (template px)")
    hdr["GA_DEG"] = (int(solution.degree), "distortion polynomial degree (1 = affine)")
    hdr["GA_MIRR"] = (bool(solution.mirrored), "source was a mirror image")
    hdr["GA_BACK"] = (backend, "array backend of the warp")
    hdr["GA_ORDER"] = (int(interp_order), "spline interpolation order")
    hdr.add_history(f"gpualign {__version__}: aligned {Path(source).name} onto this grid")
    return hdr


def result_hdus(result: AlignResult, header: fits.Header) -> list[Any]:
    """Primary HDU with the data, plus FOOTPRINT (and MASK) image extensions."""
    hdus: list[Any] = [fits.PrimaryHDU(result.data, header=header)]
    hdus.append(fits.ImageHDU(result.footprint.astype(np.uint8), name="FOOTPRINT"))
    if result.mask is not None:
        m = result.mask.astype(np.uint8) if result.mask.dtype == bool else result.mask
        hdus.append(fits.ImageHDU(m, name="MASK"))
    return hdus


def log_stats(name: str, solution: Solution) -> None:
    """Fit statistics at -v (spalipy's log_transform_stats)."""
    s = solution.stats
    log.info(
        "%s: %d matches, degree %d%s, residuals (template px) x mean %.4f median %.4f "
        "std %.4f, y mean %.4f median %.4f std %.4f, rms %.4f",
        name, s["n_match"], solution.degree, ", mirrored" if solution.mirrored else "",
        s["x_mean"], s["x_median"], s["x_std"], s["y_mean"], s["y_median"], s["y_std"], s["rms"],
    )
    if solution.cv_scores:
        log.info("held-out RMS by degree: %s",
                 ", ".join(f"{d}: {v:.4f}" for d, v in solution.cv_scores.items()))
    log.info("timings: %s", ", ".join(f"{k} {v:.2f}s" for k, v in solution.timings.items()))


def _read_template(template: Path | None, template_cat: Path | None, ext: str | None,
                   flux_col: str | None, output_shape: tuple[int, int] | None):
    """Template pixels (if any), header, mask, output shape and given catalogue (if any)."""
    header = data = mask = cat = None
    shape = tuple(output_shape) if output_shape else None
    if shape is not None and min(shape) < 1:
        raise InputError(f"--output-shape must be two positive integers, got {shape}")
    if template is not None:
        data, header, mask = load_image(template, ext, name="template")
        shape = shape or data.shape
    if template_cat is not None:
        cat = read_sextractor(template_cat, flux_col=flux_col,
                              shape=data.shape if data is not None else shape)
    elif data is None:
        raise InputError("no template given", hint="use -t TEMPLATE.fits or --template-cat")
    if shape is None:
        raise InputError("the template is a catalogue only, so the output grid is unknown",
                         hint="give --output-shape NY NX")
    return data, header, mask, shape, cat


def _with_shape(cat: Catalog, shape: tuple[int, int]) -> Catalog:
    if cat.shape is not None:
        return cat
    return Catalog(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, tuple(shape))


#: Templates of at least this many pixels are detected before the source is read.
SEQUENTIAL_DETECT_PIXELS = 1 << 27


def align_one(source: Path, tmpl_cat: Catalog | None, header: fits.Header | None,
              shape: tuple[int, int], out_path: Path, *, source_cat: Path | None,
              source_ext: str | None, interp_order: int, cval: float, backend: Any,
              threads: int | None, overwrite: bool, options: dict[str, Any],
              template_pixels: list[tuple[np.ndarray, np.ndarray | None]] | None = None,
              extras: dict[str, Any] | None = None) -> Solution:
    """Register one source and write the result.

    The template is given as a catalogue, or (``template_pixels``, a one-item list
    emptied here so that the pixels are freed before the warp) as pixels to be
    detected together with the source, in parallel.
    """
    if out_path.exists() and not overwrite:
        raise InputError(f"output {out_path} exists", hint="use --overwrite to replace it")
    t0 = time.perf_counter()
    opts = dict(options)
    flux_col = opts.pop("flux_col", None)
    sep_thresh = opts.pop("sep_thresh", 5.0)
    if tmpl_cat is None and template_pixels[0][0].size >= SEQUENTIAL_DETECT_PIXELS:
        # A mosaic: detect the template alone and free it before the source is read,
        # so that one image is in memory at a time; in row strips on every core, each
        # worker copying only its strip.
        tdata, tmask = template_pixels.pop()
        tmpl_cat = detect_strips(tdata, sep_thresh=sep_thresh, mask=tmask)
        del tdata, tmask
    data, _, mask = load_image(source, source_ext, name="source")
    todo = []
    if tmpl_cat is None:
        todo.append(template_pixels.pop())
    if source_cat is not None:
        cat = read_sextractor(source_cat, flux_col=flux_col, shape=data.shape)
    elif data.size > STRIP_DETECT_PIXELS or (
            tmpl_cat is not None and data.size >= SEQUENTIAL_DETECT_PIXELS):
        # Too big for a whole detection copy, or a mosaic detected alone: strips on
        # every core, each worker copying only its strip.
        cat = detect_strips(data, sep_thresh=sep_thresh, mask=mask)
    else:
        todo.append((data, mask))
    found = detect_many(todo, sep_thresh=sep_thresh) if todo else []
    todo.clear()
    if tmpl_cat is None:
        tmpl_cat = found.pop(0)
    if found:
        cat = found.pop(0)
    timings = {"read+detect": time.perf_counter() - t0}
    solution = solve(cat, _with_shape(tmpl_cat, shape), timings=timings, backend=backend,
                     **opts)
    t1 = time.perf_counter()
    if extras:  # masks, weights, flux, canvas, saved transform: gpualign._cli_apply
        from gpualign.cli._apply import align_extras

        align_extras(data, mask, solution, shape, header, out_path, source=source,
                     source_ext=source_ext, extras=extras, backend=backend,
                     interp_order=interp_order, cval=cval, threads=threads,
                     overwrite=overwrite)
        del data
        solution.timings["warp+write"] = time.perf_counter() - t1
        log_stats(Path(source).name, solution)
        return solution
    if streamed(shape, mask):  # a mosaic: tiles go straight into the output file
        from gpualign.io._tiled import warp_to_fits

        hdr = output_header(header, solution, str(source), backend.name, interp_order)
        hdr.update(wcs_cards(header, source, source_ext, solution.transform, shape))
        warp_to_fits(data, solution.transform, shape, out_path, hdr, backend=backend,
                     order=interp_order, cval=cval, mask=mask, threads=threads,
                     overwrite=overwrite, overwrite_input=True)
        del data
        solution.timings["warp+write"] = time.perf_counter() - t1
        log_stats(Path(source).name, solution)
        return solution
    res = warp(data, solution.transform, shape, backend=backend, order=interp_order,
               cval=cval, mask=mask, threads=threads, overwrite_input=True)
    del data
    solution.timings["warp"] = time.perf_counter() - t1
    result = AlignResult(res.data, res.footprint, res.mask, solution, backend.name)
    t2 = time.perf_counter()
    hdr = output_header(header, solution, str(source), backend.name, interp_order)
    hdr.update(wcs_cards(header, source, source_ext, solution.transform, shape))
    write_fits_atomic(out_path, result_hdus(result, hdr), overwrite=overwrite)
    solution.timings["write"] = time.perf_counter() - t2
    log_stats(Path(source).name, solution)
    return solution


def _has_ctype(header: fits.Header | None) -> bool:
    """Whether ``header`` has a CTYPEi card (a celestial WCS cannot exist without one)."""
    return header is not None and any(str(k).startswith("CTYPE") for k in header)


def wcs_cards(template_header: fits.Header | None, source: Any, source_ext: Any,
              transform: Any, shape: tuple[int, int]) -> fits.Header:
    """:func:`gpualign._wcs.composed_wcs_cards`, without importing astropy.wcs for nothing.

    Composing needs a WCS in the template header or the source's; when neither has a
    CTYPE card there is none to parse, and astropy.wcs (about 0.15 s to import, a
    tenth of a 4096^2 run) is not imported.
    """
    if not _has_ctype(template_header):
        from gpualign.io._read import _pick_hdu

        try:
            with fits.open(source) as hdul:
                if not _has_ctype(_pick_hdu(hdul, source_ext, str(source)).header):
                    return fits.Header()
        except Exception:  # not a readable FITS file: no WCS to compose
            return fits.Header()
    from gpualign.products._wcs import composed_wcs_cards

    return composed_wcs_cards(template_header, source, source_ext, transform, shape)


def streamed(shape: tuple[int, int], mask: np.ndarray | None) -> bool:
    """Whether an output is big enough to be written tile by tile (and can be)."""
    from gpualign.io._tiled import STREAM_MIN_PIXELS

    if mask is not None and mask.dtype not in (np.dtype(bool), np.dtype(np.uint8)):
        return False
    return int(shape[0]) * int(shape[1]) >= STREAM_MIN_PIXELS


def run_align(sources: list[Path], template: Path | None, output: Path, *,
              source_cat: Path | None, template_cat: Path | None, source_ext: str | None,
              template_ext: str | None, output_shape: tuple[int, int] | None,
              interp_order: int, cval: float, backend: str, threads: int | None,
              overwrite: bool, options: dict[str, Any], skip_existing: bool = False,
              scheduler: str | None = None, workers: int | None = None,
              quiet: bool = False, extras: dict[str, Any] | None = None) -> None:
    """Align each source onto the template; several sources go into a directory.

    ``extras``: mask/weight/flux/canvas/save-transform options of a single source
    (:data:`gpualign._cli_apply.ALIGN_EXTRAS`).
    """
    extras = {k: v for k, v in (extras or {}).items() if v not in (None, False)}
    if extras and len(sources) > 1:
        raise InputError(f"--{next(iter(extras)).replace('_', '-')} applies to a single "
                         "source", hint="use gpualign apply for the other images")
    from gpualign import _progress

    _progress.configure(enabled=not quiet)
    be = get_backend(backend)
    tdata, header, tmask, shape, tmpl_cat = _read_template(
        template, template_cat, template_ext, options.get("flux_col"), output_shape)
    if len(sources) > 1 and source_cat is not None:
        raise InputError("--source-cat applies to a single source")
    common = dict(source_ext=source_ext, interp_order=interp_order, cval=cval, backend=be,
                  threads=threads, overwrite=overwrite, options=options)
    if len(sources) == 1 and skip_existing and output.exists():
        log.warning("%s exists, skipped (--skip-existing)", output)
        return
    if len(sources) == 1:
        box = [(tdata, tmask)]
        del tdata, tmask
        align_one(sources[0], tmpl_cat, header, shape, output, source_cat=source_cat,
                  template_pixels=box, extras=extras, **common)
        return
    if tmpl_cat is None:  # detected once for the whole batch
        tmpl_cat = detect(tdata, sep_thresh=options.get("sep_thresh", 5.0), mask=tmask)
    del tdata
    from gpualign.batch._batch import run_cli_batch

    run_cli_batch(sources, output, tmpl_cat, header, shape, **{**common, "backend": backend},
                  skip_existing=skip_existing, scheduler=scheduler, workers=workers, quiet=quiet)


__all__ = ["run_align", "align_one", "output_header", "result_hdus", "GpuAlignError"]
