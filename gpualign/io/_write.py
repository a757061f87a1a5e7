"""Writing results: the ONE place that builds output headers and HDUs, and writes FITS.

Every entry point (the API's result header, ``gpualign align`` for one source or a
batch, ``gpualign apply``, in memory or streamed tile by tile) gets its primary
header from :func:`output_header` and its HDU list from :func:`result_hdus` (or the
same layout from :class:`gpualign.io._tiled.TiledFitsWriter`), so the same input
gives the same file whichever way it came.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError
from gpualign._system import publish, reporting_write_errors, temporary_beside
from gpualign._version import __version__

__all__ = ["output_header", "result_hdus", "write_fits_atomic", "WEIGHT_HDU_NAMES",
           "STRUCTURAL_KEYWORDS", "mask_plane"]

#: Extension name of the resampled weight map, by weight type.
WEIGHT_HDU_NAMES = {"variance": "VARIANCE", "inverse_variance": "WEIGHT", "stddev": "STDDEV"}

#: Cards of the template header that describe its data layout or its HDU, not the sky:
#: not copied (the output is a primary HDU of its own).
STRUCTURAL_KEYWORDS = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO",
                       "BSCALE", "XTENSION", "PCOUNT", "GCOUNT", "BLANK", "CHECKSUM",
                       "DATASUM", "EXTNAME", "EXTVER", "EXTLEVEL"}


def output_header(template_header: fits.Header | None, wcs_cards: fits.Header | None, *,
                  solution: Any, source_name: str, backend: str, interp_order: int,
                  conserve_flux: bool = False, offset: tuple[int, int] = (0, 0),
                  transform_file: str | None = None,
                  stamps: list[tuple[str, Any, str]] | None = None) -> fits.Header:
    """The primary header of an aligned image.

    Parameters
    ----------
    template_header : Header or None
        Its cards (but the data-layout ones) describe the output grid.
    wcs_cards : Header or None
        From :func:`gpualign.products.output_wcs_cards` (``GA_WCS`` and the WCS).
    solution : Solution
        The mapping used (fit statistics, degree, parity, models).
    source_name : str
        The source's file name (or a label for an array).
    backend : str
        Backend of the warp.
    interp_order : int
        Spline order of the warp.
    conserve_flux : bool
        Whether the data were multiplied by ``|det J|``.
    offset : tuple of int
        Canvas position of the template's pixel (0, 0).
    transform_file : str, optional
        The transform file applied (``gpualign apply``).
    stamps : list of (keyword, value, comment), optional
        Further cards (a batch's template fingerprint and id).

    Returns
    -------
    astropy.io.fits.Header
    """
    hdr = fits.Header()
    if template_header is not None:
        for card in template_header.cards:
            if card.keyword not in STRUCTURAL_KEYWORDS and card.keyword:
                hdr.append(card, end=True)
    if wcs_cards is not None:
        hdr.update(wcs_cards)
    name = Path(source_name).name[:60]
    s = solution.stats
    hdr["GA_FLUX"] = (bool(conserve_flux), "data times |det J| (flux kept)")
    hdr["GA_OFFX"] = (int(offset[0]), "canvas x of template pixel 0")
    hdr["GA_OFFY"] = (int(offset[1]), "canvas y of template pixel 0")
    hdr["GA_VERS"] = (__version__, "gpualign version")
    hdr["GA_SRC"] = (name, "source image aligned onto this grid")
    hdr["GA_NMAT"] = (int(s.get("n_match", 0)), "matched stars in the final fit")
    hdr["GA_RMS"] = (float(np.nan_to_num(s.get("rms", np.nan), nan=-1.0)),
                     "fit residual RMS (template px)")
    hdr["GA_DEG"] = (int(solution.degree), "distortion polynomial degree (1 = affine)")
    hdr["GA_MIRR"] = (bool(solution.mirrored), "source was a mirror image")
    hdr["GA_MODEL"] = (str(solution.model), "linear model of the mapping")
    if solution.distortion != "poly":
        hdr["GA_DIST"] = (str(solution.distortion), "distortion model of the mapping")
    thresholds = getattr(solution, "thresholds", None)
    if thresholds is not None:
        hdr["GA_THR"] = ("/".join(_sigma(v) for v in thresholds),
                         "detection sigma, source/template (cat: given)")
    prior = getattr(solution, "prior", None)
    if prior is not None:
        hdr["GA_PRIOR"] = (str(prior)[:40], "initial match: wcs, blind, blind-fallback")
    hdr["GA_BACK"] = (backend, "array backend of the warp")
    hdr["GA_ORDER"] = (int(interp_order), "spline interpolation order")
    if transform_file is not None:
        hdr["GA_TRANS"] = (Path(transform_file).name[:60], "transform file applied")
    for key, value, comment in stamps or []:
        hdr[key] = (value, comment)
    if transform_file is not None:
        hdr.add_history(f"gpualign {__version__}: applied {Path(transform_file).name} to {name}")
    else:
        hdr.add_history(f"gpualign {__version__}: aligned {name} onto this grid")
    return hdr


def _sigma(v: float | None) -> str:
    """A detection threshold as GA_THR writes it: ``5.0``, ``2.5``, ``1.25``; ``cat``."""
    if v is None:
        return "cat"
    return f"{v:.1f}" if round(v, 1) == v else f"{v:.4g}"


def mask_plane(mask: np.ndarray) -> np.ndarray:
    """The MASK extension's pixels: uint8 for a boolean mask, the bitmask's own type else."""
    return mask.astype(np.uint8) if mask.dtype == bool else mask


def result_hdus(result: Any, header: fits.Header | None = None) -> list[Any]:
    """Primary (data) + FOOTPRINT (+ MASK) (+ VARIANCE/WEIGHT/STDDEV) HDUs of a result."""
    hdr = result.header if header is None else header
    hdus: list[Any] = [fits.PrimaryHDU(result.data, header=hdr)]
    hdus.append(fits.ImageHDU(result.footprint.astype(np.uint8), name="FOOTPRINT"))
    if result.mask is not None:
        hdus.append(fits.ImageHDU(mask_plane(result.mask), name="MASK"))
    if result.weight is not None:
        hdus.append(fits.ImageHDU(result.weight, name=WEIGHT_HDU_NAMES[result.weight_type]))
    return hdus


def write_fits_atomic(
    path: str | os.PathLike, hdus: list[Any], *, overwrite: bool = False,
) -> None:
    """Write an HDU list so that ``path`` is either the complete new file or untouched.

    The file is written to a temporary name in the same directory and renamed over
    ``path`` only once complete.

    Parameters
    ----------
    path : str or Path
        Destination.
    hdus : list of HDU
        The first must be a PrimaryHDU.
    overwrite : bool
        Replace an existing file (otherwise raise InputError).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output {path} exists", hint="use --overwrite to replace it")
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        with reporting_write_errors(path):
            fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
