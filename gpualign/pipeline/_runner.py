"""The ONE frame runner: read, detect, solve, warp, finish and write one source.

Every entry point goes through :func:`run_frame` (``gpualign.align``, the CLI for one
source, each frame of a local or Dask batch) or its second half
:func:`warp_frame` (``gpualign apply``, ``apply_transform``), so one input gives one
output, bit for bit, whichever way it came: the same detection policy (row strips
for mosaics), the same header (:func:`gpualign.io.output_header`), the same extras
(mask, weight, flux, canvas), and the same streaming of big outputs tile by tile
into the file, extras included.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError, NoQuadMatch
from gpualign._system import refuse_overwriting_inputs
from gpualign.backend import Backend
from gpualign.detect import (
    DEPTH_LADDER,
    RETRY_THRESH,
    STRIP_DETECT_PIXELS,
    Catalog,
    Depth,
    DetectedCatalog,
    DetectSettings,
    as_catalog,
    detect_many,
    detect_retry,
    detect_strips_auto,
)
from gpualign.fit import FitSettings
from gpualign.io import (
    STREAM_MIN_PIXELS,
    load_image,
    load_mask,
    load_weight,
    output_header,
    read_header,
    result_hdus,
    warp_to_fits,
    write_fits_atomic,
)
from gpualign.match import MatchSettings
from gpualign.match._multiscale import FALSE_MATCH_RATE
from gpualign.match._prior import WcsPrior
from gpualign.pipeline._memory import GIB, check_memory, memory_budget, warp_memory
from gpualign.pipeline._solve import solve
from gpualign.products import (
    AlignResult,
    Solution,
    TileExtras,
    check_weight_type,
    finish_result,
    grow_canvas,
    has_ctype,
    output_wcs_cards,
    source_variance,
)
from gpualign.warp import bits_present, default_threads, warp

log = logging.getLogger("gpualign")

__all__ = ["TemplateSide", "TemplateReload", "FrameOptions", "FrameOutput", "prepare_template",
           "detect_template", "detection_mask", "solve_frame", "check_image_memory",
           "warp_frame", "run_frame", "log_stats", "depth_policy", "batch_retry",
           "SEQUENTIAL_DETECT_PIXELS"]

#: Templates of at least this many pixels are detected before the source is read.
SEQUENTIAL_DETECT_PIXELS = 1 << 27
#: Accepted chance of a false match of the deeper second try (:func:`solve_frame`): a
#: tenth of the first try's, so that the two together stay within 1.1 times it.
RETRY_FALSE_MATCH_RATE = FALSE_MATCH_RATE / 10


@dataclass(frozen=True)
class TemplateReload:
    """How to read the template's pixels again, for the deeper second try of a match.

    Holds what the user gave (a path, or a reference to the array or HDU: no copy);
    :attr:`small` says whether it is a file path (with a path or no mask), cheap to send
    to a batch's workers.
    """

    template: Any
    ext: int | str | None = None
    mask: Any = None
    mask_ext: int | str | None = None

    @property
    def small(self) -> bool:
        """A file path (and a path or no mask): worth sending to workers."""
        paths = (str, Path)
        return isinstance(self.template, paths) and (self.mask is None
                                                     or isinstance(self.mask, paths))

    def stamps(self) -> tuple:
        """The files' sizes and modification times (None for no file or an unreadable one)."""
        out = []
        for path in (self.template, self.mask):
            try:
                st = None if path is None else os.stat(path)
            except OSError:
                st = None
            out.append(None if st is None else (st.st_size, st.st_mtime_ns))
        return tuple(out)

    def __call__(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The template's pixels and detection mask, as :func:`prepare_template` read them."""
        data, _, mask = load_image(self.template, self.ext, name="template")
        if self.mask is not None:
            mask = detection_mask(mask, load_mask(self.mask, data.shape, self.mask_ext))
        return data, mask


@dataclass
class TemplateSide:
    """The template as a frame needs it: catalogue, header, grid, pixels not yet detected.

    ``pixels`` holds ``(data, mask)`` until the template is detected, then is emptied so
    that the pixels are freed before the warp. ``reload`` reads them again for the
    deeper second try of a blind match that found nothing (None: a template given as
    a catalogue, or a mosaic); ``retry`` caches that try's template catalogue.
    """

    catalog: Catalog | None
    header: fits.Header | None
    shape: tuple[int, int] | None
    pixels: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)
    reload: TemplateReload | None = None
    retry: Catalog | None = None

    def retry_catalog(self) -> Catalog | None:
        """The template detected at :data:`~gpualign.detect.RETRY_THRESH` (cached).

        A template read from a file is detected once per process for all the frames
        that need it (a batch's worker makes a TemplateSide per frame), as long as the
        file is unchanged.
        """
        if self.retry is None and self.reload is not None:
            if self.reload.small:
                self.retry = _file_retry(self.reload, self.shape, self.reload.stamps())
            else:
                self.retry = _retry(self.reload, self.shape)
        return self.retry


def _retry(reload: TemplateReload, shape: tuple[int, int] | None) -> Catalog:
    """The template read again and detected at :data:`~gpualign.detect.RETRY_THRESH`."""
    data, mask = reload()
    return _with_shape(detect_retry(data, mask), shape)  # as detect_template's


@functools.lru_cache(maxsize=2)
def _file_retry(reload: TemplateReload, shape: tuple[int, int] | None,
                stamps: tuple) -> Catalog:
    """:func:`_retry` of the last two template files.

    ``stamps`` (their sizes and modification times) only key the cache, so a file that
    changed is detected again.
    """
    return _retry(reload, shape)


@dataclass
class FrameOptions:
    """What to do with one source besides registering it: the warp and the output.

    Attributes
    ----------
    interp_order, cval, dtype, threads :
        The warp's spline order, fill value, output type and CPU threads.
    source_ext : int or str, optional
        FITS extension of the source.
    source_mask, mask_ext :
        Bad-pixel mask or bitmask (array or FITS path) resampled alongside; default
        the source's own (masked array, NDData).
    source_weight, weight_ext, weight_type :
        Weight or variance map (array, NDData uncertainty or FITS path) resampled
        consistently with the data; default an NDData source's uncertainty.
    conserve_flux : bool
        Multiply by ``|det J|``.
    preserve_footprints : bool
        Grow the canvas to hold the whole source and the whole template.
    output : Path, optional
        Write the result here (atomically); None keeps it in memory.
    overwrite : bool
        Replace an existing output.
    save_transform : Path, optional
        Also save the solution as JSON.
    stamps : list of (keyword, value, comment)
        Further header cards (a batch's).
    transform_file : str, optional
        Name of the transform file applied (``gpualign apply``).
    protected : tuple
        Further input files (template, catalogues) the outputs must never replace.
    max_memory : float, optional
        GiB the run may hold at its peak (default: what the machine has available);
        a run whose plan needs more is refused before it allocates anything.
    """

    interp_order: int = 3
    cval: float = float("nan")
    dtype: Any = np.float32
    threads: int | None = None
    source_ext: int | str | None = None
    source_mask: Any = None
    mask_ext: int | str | None = None
    source_weight: Any = None
    weight_ext: int | str | None = None
    weight_type: str = "variance"
    conserve_flux: bool = False
    preserve_footprints: bool = False
    output: Path | None = None
    overwrite: bool = False
    save_transform: Path | None = None
    stamps: list[tuple[str, Any, str]] = field(default_factory=list)
    transform_file: str | None = None
    protected: tuple[Any, ...] = ()
    max_memory: float | None = None

    def __post_init__(self) -> None:
        """Reject unusable warp options with an InputError before any work."""
        order = self.interp_order
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) \
                or not 0 <= int(order) <= 5:
            raise InputError(f"interp_order must be an integer 0-5, got {order!r}",
                             hint="0 nearest, 1 linear, 3 cubic spline (default), 5 quintic")
        if isinstance(self.cval, (bool, str, bytes)) or not np.isscalar(self.cval):
            raise InputError(f"cval must be a number, got {self.cval!r}",
                             hint="the value of output pixels with no data (NaN by default)")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}",
                             hint="resampled pixels are fractional; NaN marks missing data")
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, np.integer))
                              or t < 1):
            raise InputError(f"threads must be a whole number >= 1, got {t!r}",
                             hint="omit it to use every usable core")
        check_weight_type(self.weight_type)
        m = self.max_memory
        if m is not None and (isinstance(m, (bool, str, bytes)) or not np.isscalar(m)
                              or not np.isfinite(m) or m <= 0):
            raise InputError(f"max_memory must be a positive number of GiB, got {m!r}",
                             hint="omit it to use the memory the machine has available")

    def check_outputs(self, source: Any) -> None:
        """InputError when the output or the saved transform would replace an input.

        Also when either's directory does not exist, or it names a directory: both are
        checked before any work, so a run never stops between writing the two.
        """
        for path in (self.output, self.save_transform):
            if path is None:
                continue
            parent = Path(path).parent
            if not parent.is_dir():
                raise InputError(f"output directory does not exist: {parent}",
                                 hint="create it first")
            if Path(path).is_dir():
                raise InputError(f"{path} is a directory", hint="give a file name")
        refuse_overwriting_inputs(
            [self.output, self.save_transform],
            [source, self.source_mask, self.source_weight, self.transform_file,
             *self.protected])


@dataclass
class FrameOutput:
    """What :func:`run_frame` returns: the solution, and the result when kept in memory."""

    solution: Solution
    result: AlignResult | None
    output: Path | None = None


def check_image_memory(obj: Any, ext: int | str | None, what: str,
                       max_memory: float | None = None) -> None:
    """InputError, before reading, when a FITS image's pixels cannot fit in memory.

    Reading holds the file's own pixels and their float32 copy at once.
    """
    if not isinstance(obj, (str, Path)):
        return
    try:
        hdr = read_header(obj, ext, what)
        ny, nx = int(hdr["NAXIS2"]), int(hdr["NAXIS1"])
        bytes_per_pixel = abs(int(hdr.get("BITPIX", -32))) // 8 + 4
    except (InputError, KeyError, ValueError, TypeError):
        return  # load_image says what is wrong with the file
    need = ny * nx * bytes_per_pixel
    check_memory(f"reading the {nx}x{ny} {what}", need, max_memory,
                 hint="free memory, or use a machine with more")


def _with_shape(cat: Catalog, shape: tuple[int, ...] | None) -> Catalog:
    if cat.shape is not None or shape is None:
        return cat
    shape = tuple(int(v) for v in shape)
    if isinstance(cat, DetectedCatalog):
        return cat.with_shape(shape)
    return Catalog(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, shape)


def depth_policy(detect: DetectSettings, match: MatchSettings | None = None) -> Depth:
    """When an image is detected deeper: the frame's filter, the ladder if ``auto_depth``."""
    mat = MatchSettings() if match is None else match
    min_sep = 2.0 * mat.max_match_dist if detect.min_sep is None else detect.min_sep
    return Depth(min_fwhm=detect.min_fwhm, bad_flag_bits=detect.bad_flag_bits,
                 min_sep=min_sep, ladder=DEPTH_LADDER if detect.auto_depth else ())


def _log_depth(name: str, cat: Catalog, depth: Depth) -> None:
    """Each step of automatic depth, at INFO (-v)."""
    steps = getattr(cat, "steps", ())
    if len(steps) < 2:
        return
    (t0, n0), rest = steps[0], steps[1:]
    log.info("%s: %d usable stars at %g sigma, fewer than %d: detecting deeper",
             name, n0, t0, depth.target)
    for t, n in rest:
        log.info("%s: %d usable stars at %g sigma", name, n, t)
    thresh, deep = cat.thresh, cat.deep  # type: ignore[attr-defined]
    if thresh == t0:
        log.info("%s: no more usable stars deeper: keeping the %g-sigma catalogue", name, t0)
        return
    log.info("%s: matching with the %g-sigma catalogue (%d detections)%s", name, thresh,
             len(cat), "" if deep is None else f", final fit down to "
             f"{min(t for t, _ in steps):g} sigma ({len(deep)} detections)")


def prepare_template(template: Any, *, template_det: Any = None,
                     ext: int | str | None = None, output_shape: Any = None,
                     flux_col: str | None = None,
                     max_memory: float | None = None, mask: Any = None,
                     mask_ext: int | str | None = None) -> TemplateSide:
    """Read the template (pixels, header, grid) and take its catalogue if one is given.

    Parameters
    ----------
    template : image or None
        Anything :func:`gpualign.io.load_image` reads; None when only a catalogue.
    template_det : catalogue, optional
        A Table, Catalog or SExtractor file instead of detecting.
    ext : int or str, optional
        FITS extension.
    output_shape : tuple of int, optional
        ``(ny, nx)`` of the output grid (default: the template's).
    flux_col : str, optional
        Flux column of a catalogue.
    max_memory : float, optional
        GiB the run may hold (default: the memory available).
    mask : array, HDU or FITS path, optional
        Bad-pixel mask or bitmask of the template: pixels it flags (any set bit) are
        left out of the template's detection, with the image's own mask.
    mask_ext : int or str, optional
        FITS extension of ``mask``.

    Returns
    -------
    TemplateSide
    """
    user_mask, data, header, mask = mask, None, None, None
    if user_mask is not None and (template is None or template_det is not None):
        raise InputError("a template mask was given but the template is not detected here "
                         "(a template catalogue was given)",
                         hint="drop the template mask, or the template catalogue")
    if template is not None:
        check_image_memory(template, ext, "template", max_memory)
        data, header, mask = load_image(template, ext, name="template")
        if user_mask is not None:
            mask = detection_mask(mask, load_mask(user_mask, data.shape, mask_ext))
    if template_det is None and data is None:
        raise InputError("no template given", hint="pass a template image or a template "
                         "catalogue (-t TEMPLATE.fits or --template-cat)")
    shape = tuple(int(v) for v in output_shape) if output_shape is not None else None
    if shape is None and data is not None:
        shape = data.shape
    if shape is None:
        raise InputError("the template is a catalogue only, so the output grid is unknown",
                         hint="give output_shape (--output-shape NY NX)")
    cat = None
    if template_det is not None:
        cat = _with_shape(as_catalog(template_det, flux_col=flux_col),
                          data.shape if data is not None else shape)
    pixels = [(data, mask)] if cat is None else []
    reload = None
    if cat is None and data.size < SEQUENTIAL_DETECT_PIXELS:
        reload = TemplateReload(template, ext, user_mask, mask_ext)
    return TemplateSide(cat, header, (int(shape[0]), int(shape[1])), pixels, reload)


def detect_template(side: TemplateSide, detect: DetectSettings | float,
                    match: MatchSettings | None = None) -> Catalog:
    """The template's catalogue, detecting (and freeing) its pixels if needed.

    ``detect`` (and ``match``, for the crowding filter's default) say how deep, and
    when to go deeper (a bare threshold: the default settings at that threshold).
    The template is detected on its own, deeper where its own stars are too few, so
    the catalogue is the same whatever source it is matched with.
    """
    det = detect if isinstance(detect, DetectSettings) else DetectSettings(sep_thresh=detect)
    if side.catalog is None:
        data, mask = side.pixels.pop()
        depth = depth_policy(det, match)
        if data.size >= SEQUENTIAL_DETECT_PIXELS:
            # A mosaic, detected alone: strips on every core, each worker copying only
            # its strip (a whole-image detection copies the whole image).
            side.catalog = detect_strips_auto(data, sep_thresh=det.sep_thresh, mask=mask,
                                              depth=depth)
        else:
            side.catalog = detect_many([(data, mask)], sep_thresh=det.sep_thresh,
                                       depth=depth)[0]
        side.catalog = _with_shape(side.catalog, side.shape)
        _log_depth("template", side.catalog, depth)
    return side.catalog


def _detect_both(side: TemplateSide, data: np.ndarray, mask: np.ndarray | None,
                 source_det: Any, det: DetectSettings, depth: Depth) -> Catalog:
    """The source's catalogue, and the template's if still pending (in parallel)."""
    todo = []
    if side.catalog is None:
        todo.append(side.pixels.pop())
    if source_det is not None:
        cat = as_catalog(source_det, flux_col=det.flux_col)
    elif data.size > STRIP_DETECT_PIXELS or (not todo and data.size >= SEQUENTIAL_DETECT_PIXELS):
        # Too big for a whole detection copy, or a mosaic detected alone: strips on
        # every core, each worker copying only its strip.
        cat = detect_strips_auto(data, sep_thresh=det.sep_thresh, mask=mask, depth=depth)
    else:
        todo.append((data, mask))
    found = detect_many(todo, sep_thresh=det.sep_thresh, depth=depth) if todo else []
    todo.clear()
    if side.catalog is None:
        side.catalog = _with_shape(found.pop(0), side.shape)
        _log_depth("template", side.catalog, depth)
    if found:
        cat = found.pop(0)
    if source_det is None:
        _log_depth("source", cat, depth)
    return _with_shape(cat, data.shape)


def detection_mask(own: np.ndarray | None, user: np.ndarray) -> np.ndarray:
    """Pixels left out of detection: the image's own mask or any set bit of ``user``."""
    bad = np.asarray(user) != 0
    if own is not None:
        bad |= np.asarray(own) != 0
    return bad


def solve_frame(source: Any, side: TemplateSide, *, detect: DetectSettings,
                match: MatchSettings, fit: FitSettings, backend: Backend,
                source_det: Any = None, source_ext: int | str | None = None,
                source_mask: Any = None, mask_ext: int | str | None = None,
                ) -> tuple[np.ndarray, fits.Header | None, np.ndarray | None, Solution]:
    """Read and detect the source (and the template if pending), then solve.

    ``source_mask`` (array, HDU or FITS path; ``mask_ext`` its extension): pixels it
    flags (any set bit) are left out of the source's detection, as the image's own mask
    is; it is read once and returned as the mask the warp resamples.

    With ``match.wcs_prior="auto"`` and a celestial WCS in both headers (the template's
    and the source's), the two WCSs predict the mapping (``gpualign.match._prior``).

    A mosaic template (at least :data:`SEQUENTIAL_DETECT_PIXELS`) is detected and
    freed before the source is read, so one image is in memory at a time.

    Returns
    -------
    data, header, mask, solution
        The source's pixels (a private copy), header, the mask for the warp (the loaded
        ``source_mask``, else the image's own) and the solution.
    """
    t0 = time.perf_counter()
    if side.catalog is None and side.pixels[0][0].size >= SEQUENTIAL_DETECT_PIXELS:
        detect_template(side, detect, match)
    data, header, mask = load_image(source, source_ext, name="source")
    det_mask = mask
    if source_mask is not None:
        user_mask = load_mask(source_mask, data.shape, mask_ext)
        det_mask = detection_mask(mask, user_mask)
        mask = user_mask  # what the warp resamples: the given mask replaces the own one
    src_cat = _detect_both(side, data, det_mask, source_det, detect,
                           depth_policy(detect, match))
    timings = {"read+detect": time.perf_counter() - t0}
    prior = None
    if match.wcs_prior == "auto":
        prior = WcsPrior.from_headers(side.header, header)
        if prior is None:
            log.debug("WCS prior: not both images carry a celestial WCS; blind matching")
    kw = dict(detect=detect, match=match, fit=fit, backend=backend, timings=timings,
              prior=prior)
    try:
        solution = solve(src_cat, side.catalog, **kw)
    except NoQuadMatch as exc:
        deeper = _deeper_catalogs(src_cat, data, det_mask, side, detect)
        if deeper is None:
            raise
        log.info("%s; detecting again at %g sigma and matching once more", exc.args[0],
                 RETRY_THRESH)
        try:
            solution = solve(*deeper, **kw, false_match_rate=RETRY_FALSE_MATCH_RATE)
        except NoQuadMatch as again:
            raise NoQuadMatch(f"{again.args[0]}, nor with both images detected at "
                              f"{RETRY_THRESH:g} sigma", hint=again.hint) from None
    return data, header, mask, solution


def batch_retry(side: TemplateSide, detect: DetectSettings) -> dict[str, Any]:
    """What a batch's workers need for the deeper second try of a blind match.

    The second try is :func:`solve_frame`'s; the result is
    :class:`~gpualign.batch.BatchContext` fields: the template's path to read again
    (small to send), else, for a template held in memory, its retry catalogue detected
    now; nothing where no second try can happen (a template catalogue, a mosaic,
    ``auto_depth`` off, a template already detected at 3 sigma or deeper).
    """
    none = {"template_reload": None, "template_retry": None}
    if (side.reload is None or not detect.auto_depth
            or getattr(side.catalog, "thresh", 0.0) <= RETRY_THRESH):
        return none
    if side.reload.small:
        return {**none, "template_reload": side.reload}
    return {**none, "template_retry": side.retry_catalog()}


def _deeper_catalogs(src_cat: Catalog, data: np.ndarray, mask: np.ndarray | None,
                     side: TemplateSide, detect: DetectSettings
                     ) -> tuple[Catalog, Catalog] | None:
    """Both catalogues at :data:`~gpualign.detect.RETRY_THRESH`, for a second try.

    A thin overlap of a sparse field can hold too few of the stars the user's threshold
    keeps for a quad and its verification, and the images' own star counts do not
    call for automatic depth. With ``auto_depth``, a blind match that found nothing
    is tried once more with both images detected at 3 sigma (an image already
    detected that deep keeps its catalogue). None (no second try) when a catalogue
    was given instead of pixels, both are already that deep, or an image is a mosaic
    (its pixels are not kept or read twice).
    """
    thresholds = [getattr(c, "thresh", None) for c in (src_cat, side.catalog)]
    if not detect.auto_depth or None in thresholds or data.size >= SEQUENTIAL_DETECT_PIXELS:
        return None
    src_deeper, tmpl_deeper = (t > RETRY_THRESH for t in thresholds)
    if not (src_deeper or tmpl_deeper):
        return None
    tmpl = side.retry_catalog() if tmpl_deeper else side.catalog
    if tmpl is None:
        return None
    src = detect_retry(data, mask) if src_deeper else src_cat
    return src, tmpl


def _source_name(source: Any) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else "<array>"


def _streamable(options: FrameOptions, shape: tuple[int, int], mask: Any,
                big: bool = False) -> bool:
    """Whether the output goes to a file tile by tile (big, and every plane can).

    ``big``: the in-memory plan does not fit the memory, whatever the pixel count.
    """
    if options.output is None or (int(shape[0]) * int(shape[1]) < STREAM_MIN_PIXELS
                                  and not big):
        return False
    if np.dtype(options.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False
    return mask is None or np.asarray(mask).dtype in (np.dtype(bool), np.dtype(np.uint8))


def _mask_planes(mask: Any) -> tuple[int, int]:
    """Bytes per output mask pixel and the bit planes the warp resamples (0, 0: none)."""
    if mask is None:
        return 0, 0
    m = np.asarray(mask)
    if m.dtype == bool or m.size == 0:
        return 1, 1
    if m.dtype.kind not in "iu":
        return m.dtype.itemsize, 64
    return m.dtype.itemsize, bin(bits_present(m)).count("1")


def _plan_output(o: FrameOptions, shape: tuple[int, int], data: np.ndarray, mask: Any,
                 variance: np.ndarray | None) -> bool:
    """Whether the output is streamed; InputError when neither plan fits.

    The in-memory plan holds the whole output; when it does not fit the memory but
    the tiled plan does, an output file is written tile by tile whatever its size.
    A streamed output must also fit the free space of its disk. Checked before the
    warp allocates or writes anything (an ``output_shape`` of 200000 x 200000 would
    otherwise start a 160 GB file, or ask for 149 GiB).
    """
    resident = data.nbytes + (0 if variance is None else variance.nbytes) + (
        0 if mask is None else np.asarray(mask).nbytes)
    itemsize, planes = _mask_planes(mask)
    mem = warp_memory(shape, dtype=o.dtype, resident=resident,
                      threads=o.threads or default_threads(), mask_itemsize=itemsize,
                      mask_planes=planes, weight=variance is not None)
    streamed = _streamable(o, shape, mask)
    budget = memory_budget(o.max_memory, resident)[0]
    if not streamed and mem.new(False) > budget >= mem.new(True):
        streamed = _streamable(o, shape, mask, big=True)
    grid = f"{shape[1]}x{shape[0]}"
    if streamed:
        need = mem.output  # every plane lands on the disk
        free = shutil.disk_usage(Path(o.output).parent or Path(".")).free
        if need > free:
            raise InputError(f"the {grid} output needs {need / GIB:.3g} GiB, more than the "
                             f"{free / GIB:.3g} GiB free on the output's disk",
                             hint="free some space, or write elsewhere")
        check_memory(f"warping onto the {grid} grid", mem.new(True), o.max_memory, resident,
                     hint="use fewer threads")
    else:
        check_memory(f"the {grid} output", mem.new(False), o.max_memory, resident,
                     hint="write it to a file (streamed tile by tile)" if o.output is None
                     else "give a smaller output shape")
    return streamed


def warp_frame(data: np.ndarray, source: Any, source_header: fits.Header | None,
               own_mask: np.ndarray | None, solution: Solution, side: TemplateSide, *,
               backend: Backend, options: FrameOptions,
               source_name: str | None = None) -> AlignResult | None:
    """Warp a source's pixels (consumed) with a known solution, finish and write.

    Returns the AlignResult when kept in memory (no ``options.output``, or an
    output small enough to build in memory), None when streamed into the file.
    The caller has checked the outputs against the inputs
    (:meth:`FrameOptions.check_outputs`), before reading anything.
    """
    o = options
    t1 = time.perf_counter()
    mask = own_mask
    if o.source_mask is not None:
        mask = load_mask(o.source_mask, data.shape, o.mask_ext)
    elif mask is not None and np.shape(mask) != data.shape:
        raise InputError(f"the mask's shape {np.shape(mask)} differs from the image's "
                         f"{data.shape}", hint="give a mask of the source's shape")
    weight = None
    if o.source_weight is not None:
        weight = load_weight(o.source_weight, data.shape, o.weight_ext)
    variance, weight_type = source_variance(weight, o.weight_type, source, data.shape)
    del weight
    warp_t, shape, offset = solution.transform, tuple(side.shape), (0, 0)
    if o.preserve_footprints:
        warp_t, shape, offset = grow_canvas(warp_t, data.shape, shape)
    streamed = _plan_output(o, shape, data, mask, variance)
    src_hdr = None if has_ctype(side.header) else source_header
    wcs, wcs_cards = output_wcs_cards(side.header, src_hdr, warp_t, shape, offset)
    header = output_header(side.header, wcs_cards, solution=solution,
                           source_name=source_name or _source_name(source),
                           backend=backend.name, interp_order=o.interp_order,
                           conserve_flux=o.conserve_flux, offset=offset,
                           transform_file=o.transform_file, stamps=o.stamps)
    extras = TileExtras(warp_t, o.interp_order, variance, weight_type, o.conserve_flux)
    warp_kw = dict(backend=backend, order=o.interp_order, cval=o.cval, mask=mask,
                   threads=o.threads, dtype=o.dtype, overwrite_input=True)
    if streamed:  # a mosaic: tiles (with their extras) into the file
        warp_to_fits(data, warp_t, shape, o.output, header, overwrite=o.overwrite,
                     extras=extras, **warp_kw)
        solution.timings["warp+write"] = time.perf_counter() - t1
        return None
    res = warp(data, warp_t, shape, **warp_kw)
    del data
    result = AlignResult(res.data, res.footprint, res.mask, solution, backend.name)
    finish_result(result, extras, wcs=wcs, offset=offset, source=source)
    result.header = header
    solution.timings["warp"] = time.perf_counter() - t1
    if o.output is not None:
        t2 = time.perf_counter()
        write_fits_atomic(o.output, result_hdus(result), overwrite=o.overwrite)
        solution.timings["write"] = time.perf_counter() - t2
    return result


def run_frame(source: Any, side: TemplateSide, *, detect: DetectSettings,
              match: MatchSettings, fit: FitSettings, backend: Backend,
              options: FrameOptions, source_det: Any = None,
              source_name: str | None = None) -> FrameOutput:
    """Register one source onto the template's grid: the whole pipeline for one frame.

    Parameters
    ----------
    source : image
        FITS path, array, masked array or NDData.
    side : TemplateSide
        The template (pixels still pending detection, or its catalogue).
    detect, match, fit : settings
        Detection, matching and fitting settings.
    backend : Backend
        Where the neighbour queries and the warp run.
    options : FrameOptions
        Warp, extras and output.
    source_det : catalogue, optional
        The source's catalogue instead of detecting.
    source_name : str, optional
        Name written as ``GA_SRC`` (default: the file name).

    Returns
    -------
    FrameOutput
    """
    options.check_outputs(source)
    if options.output is not None and Path(options.output).exists() and not options.overwrite:
        raise InputError(f"output {options.output} exists", hint="use --overwrite to replace it")
    check_image_memory(source, options.source_ext, "source", options.max_memory)
    data, header, mask, solution = solve_frame(
        source, side, detect=detect, match=match, fit=fit, backend=backend,
        source_det=source_det, source_ext=options.source_ext,
        source_mask=options.source_mask, mask_ext=options.mask_ext)
    # the source mask is loaded (solve_frame returned it as ``mask``): not read again
    result = warp_frame(data, source, header, mask, solution, side, backend=backend,
                        options=dataclasses.replace(options, source_mask=None),
                        source_name=source_name)
    if options.save_transform is not None:  # after the image: a failed run leaves neither
        solution.save(options.save_transform)
    return FrameOutput(solution, result, options.output)


def log_stats(name: str, solution: Solution) -> None:
    """Fit statistics at -v (what spalipy's log_transform_stats reports)."""
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
