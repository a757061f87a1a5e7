"""Everything an aligned image carries besides its pixels.

After the warp, :func:`finish_result` adds to an :class:`~gpualign.AlignResult`:
flux conservation (``|J|``, :mod:`gpualign._flux`), the resampled weight or variance
map (:mod:`gpualign._variance`), the output WCS and header (:mod:`gpualign._wcs`),
the canvas offset (:mod:`gpualign._footprints`), and the source's NDData meta and
unit. :func:`source_extras` reads an NDData/CCDData source's uncertainty (as a
variance), meta and unit; :func:`to_nddata` builds NDData/CCDData from a result
(mask, uncertainty as ``VarianceUncertainty``, WCS and meta carried).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError
from gpualign.transform._transform import Transform

__all__ = ["source_extras", "finish_result", "to_nddata", "load_mask", "load_weight"]


def _is_nddata(obj: Any) -> bool:
    return hasattr(obj, "data") and hasattr(obj, "unit") and not isinstance(obj, np.ndarray)


def source_extras(obj: Any) -> dict[str, Any]:
    """Uncertainty (as variance), meta and unit of an NDData-like input (else empty)."""
    out: dict[str, Any] = {"variance": None, "meta": {}, "unit": None}
    if not _is_nddata(obj):
        return out
    out["unit"] = getattr(obj, "unit", None)
    meta = getattr(obj, "meta", None)
    out["meta"] = copy.deepcopy(meta) if meta is not None else {}
    unc = getattr(obj, "uncertainty", None)
    if unc is not None and getattr(unc, "array", None) is not None:
        kind = getattr(unc, "uncertainty_type", "std")
        arr = np.asarray(unc.array, dtype=np.float64)
        if kind == "var":
            out["variance"] = arr
        elif kind == "ivar":
            with np.errstate(divide="ignore"):
                out["variance"] = np.where(arr > 0, 1.0 / arr, np.inf)
        elif kind == "std":
            out["variance"] = arr * arr
        else:
            raise InputError(f"unsupported uncertainty type {kind!r}",
                             hint="use StdDevUncertainty, VarianceUncertainty or "
                             "InverseVariance")
        out["uncertainty_type"] = kind
    return out


def _first_image(path: str, ext: int | str | None, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise InputError(f"{what} file not found: {path}")
    try:
        with fits.open(path) as hdul:
            if ext is not None:
                hdu = hdul[int(ext) if str(ext).lstrip("-").isdigit() else str(ext)]
            else:
                hdu = next(h for h in hdul if h.is_image and h.data is not None
                           and h.data.ndim == 2)
            return np.array(hdu.data)
    except (OSError, KeyError, IndexError, StopIteration, ValueError) as exc:
        raise InputError(f"cannot read a 2-D image from {what} file {path} "
                         f"({exc})".splitlines()[0]) from None


def load_mask(obj: Any, shape: tuple[int, ...], ext: int | str | None = None) -> np.ndarray:
    """A bad-pixel mask or bitmask (array or FITS path), bits intact, checked against shape."""
    if isinstance(obj, (str, os.PathLike)):
        m = _first_image(str(obj), ext, "mask")
    else:
        m = np.asarray(obj)
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)) or np.any(m != np.round(m)) or np.any(m < 0):
            raise InputError("the mask must hold integers or booleans")
        m = m.astype(np.int64)
    if m.dtype.kind not in "biu":
        raise InputError(f"the mask has unsupported dtype {m.dtype}")
    if m.dtype.byteorder not in ("=", "|"):
        m = m.astype(m.dtype.newbyteorder("="))
    if m.shape != tuple(shape):
        raise InputError(f"the mask's shape {m.shape} differs from the image's {tuple(shape)}")
    return m


def load_weight(obj: Any, shape: tuple[int, ...], ext: int | str | None = None) -> np.ndarray:
    """A weight/variance map (array, NDData uncertainty array or FITS path) as float64."""
    if isinstance(obj, (str, os.PathLike)):
        w = _first_image(str(obj), ext, "weight")
    elif hasattr(obj, "array") and not isinstance(obj, np.ndarray):
        w = np.asarray(obj.array)
    else:
        w = np.asarray(obj)
    if w.dtype.kind not in "fiub":
        raise InputError(f"the weight map has unsupported dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != tuple(shape):
        raise InputError(f"the weight map's shape {w.shape} differs from the image's "
                         f"{tuple(shape)}")
    return w


def finish_result(
    result: Any,
    warp_transform: Transform,
    *,
    order: int,
    source: Any = None,
    source_shape: tuple[int, int],
    source_header: fits.Header | None = None,
    template_header: fits.Header | None = None,
    source_weight: Any = None,
    weight_type: str = "variance",
    conserve_flux: bool = False,
    offset: tuple[int, int] = (0, 0),
) -> Any:
    """Add weights, flux conservation, WCS, header, meta and offset to an AlignResult.

    Parameters
    ----------
    result : AlignResult
        Fresh from the warp (modified and returned).
    warp_transform : Transform
        Output pixel -> source pixel mapping the warp used (on the canvas).
    order : int
        Interpolation order of the warp.
    source : object
        The source as given (NDData uncertainty, meta and unit are read from it).
    source_shape : tuple of int
        Shape of the source pixels.
    source_header, template_header : Header or None
        Headers that may hold a WCS.
    source_weight : array, NDData uncertainty or FITS path, optional
        Weight map of the source (default: an NDData source's uncertainty).
    weight_type : {"variance", "inverse_variance", "stddev"}
        What ``source_weight`` holds (the output weight is of the same type).
    conserve_flux : bool
        Multiply the data by ``|det J|`` (variance by ``det J**2``).
    offset : tuple of int
        Canvas position of the template's pixel (0, 0).

    Returns
    -------
    AlignResult
    """
    from gpualign.products._variance import WEIGHT_TYPES, from_variance, resample_variance, to_variance
    from gpualign.products._wcs import output_wcs, wcs_header

    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, "
                         f"got {weight_type!r}")
    extras = source_extras(source)
    variance = None
    if source_weight is not None:
        variance = to_variance(load_weight(source_weight, source_shape), weight_type)
    elif extras["variance"] is not None:
        variance = extras["variance"]
        weight_type = "variance"
    shape = result.data.shape
    out_var = None
    if variance is not None:
        if variance.shape != tuple(source_shape):
            raise InputError(f"the weight map's shape {variance.shape} differs from the "
                             f"image's {tuple(source_shape)}")
        out_var = resample_variance(variance, warp_transform, shape, order)
    if conserve_flux:
        from gpualign.products._flux import conserve_flux_inplace

        conserve_flux_inplace(result.data, warp_transform, variance=out_var,
                              footprint=result.footprint)
    if out_var is not None:
        result.weight = from_variance(out_var, weight_type, result.footprint)
        result.weight_type = weight_type
    w, origin, err = output_wcs(template_header, source_header, warp_transform, shape, offset)
    result.wcs = w
    hdr = fits.Header()
    if template_header is not None:
        for card in template_header.cards:
            if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"):
                hdr.append(card, end=True)
    if w is not None:
        hdr.update(wcs_header(w))
    hdr["GA_WCS"] = (origin, "WCS from: template, source+transform, none")
    if origin == "source+transform":
        hdr["GA_WCSER"] = (float(err), "max error of composed WCS (src px)")
    hdr["GA_FLUX"] = (bool(conserve_flux), "data times |det J| (flux kept)")
    hdr["GA_OFFX"] = (int(offset[0]), "canvas x of template pixel 0")
    hdr["GA_OFFY"] = (int(offset[1]), "canvas y of template pixel 0")
    result.header = hdr
    result.offset = (int(offset[0]), int(offset[1]))
    result.meta = extras["meta"]
    result.unit = extras["unit"]
    result.conserve_flux = bool(conserve_flux)
    return result


def to_nddata(result: Any, cls: Any = None) -> Any:
    """An NDData (or ``cls``, e.g. CCDData) of a result: mask, variance, WCS, meta.

    The mask is True where the output has no valid data or the resampled source mask
    is non-zero; the uncertainty is the resampled variance (``VarianceUncertainty``)
    when a weight map was resampled.
    """
    from astropy.nddata import (
        CCDData,
        InverseVariance,
        NDData,
        StdDevUncertainty,
        VarianceUncertainty,
    )

    cls = NDData if cls is None else cls
    mask = ~result.footprint
    if result.mask is not None:
        mask = mask | (np.asarray(result.mask) != 0)
    unc = None
    if result.weight is not None:
        kind = {"variance": VarianceUncertainty, "inverse_variance": InverseVariance,
                "stddev": StdDevUncertainty}[result.weight_type]
        unc = kind(result.weight)
    meta = copy.deepcopy(result.meta) if result.meta else {}
    unit = result.unit
    if cls is CCDData or (isinstance(cls, type) and issubclass(cls, CCDData)):
        unit = unit if unit is not None else "adu"
        meta = fits.Header(meta) if not isinstance(meta, fits.Header) else meta
        for card in result.header.cards if result.header is not None else []:
            if card.keyword.startswith("GA_"):
                meta[card.keyword] = (card.value, card.comment)
    else:
        meta = dict(meta)
        if result.header is not None:
            meta.update({k: result.header[k] for k in result.header if k.startswith("GA_")})
    return cls(result.data, mask=mask, uncertainty=unc, wcs=result.wcs, meta=meta, unit=unit)
