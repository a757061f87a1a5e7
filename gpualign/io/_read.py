"""Reading images, masks, weights and headers: FITS or arrays in, native float32 out."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from gpualign._errors import InputError
from gpualign._system import available_memory

__all__ = ["load_image", "load_mask", "load_weight", "pick_hdu", "read_header", "image_shape",
           "ImageInput"]

ImageInput = Any  # ndarray, masked array, NDData, str/Path of a FITS file


#: Warnings astropy gives on files it reads correctly: a short file (which
#: _check_declared_size reports, in one line), padding, BLANK on float pixels.
_HARMLESS_WARNINGS = ("File may have been truncated", "Unexpected extra padding at the end",
                      "Header block contains null bytes", "Invalid 'BLANK' keyword")


@contextlib.contextmanager
def _open_fits(path: str | os.PathLike, **kwargs: Any) -> Iterator[fits.HDUList]:
    """``fits.open(path, **kwargs)``, its warnings about a damaged file raised as errors.

    Astropy warns and carries on where a file is damaged (an unparsable card, bytes
    after END, an HDU it treats as corrupted, invalid values in decoded pixels); here
    those warnings are errors, which the readers turn into one InputError. The file
    is held here, so it is closed whatever is raised while astropy reads it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        warnings.simplefilter("error", RuntimeWarning)
        for message in _HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        with open(path, "rb") as f, fits.open(f, **kwargs) as hdul:
            yield hdul


def pick_hdu(hdul: fits.HDUList, ext: int | str | None, path: str, what: str = "image") -> Any:
    """The image HDU of ``hdul`` to read: extension ``ext``, or the first 2-D image.

    The one place gpualign chooses an HDU: images, masks, weights and template
    headers all come through here. The choice reads headers only, never pixels.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open file.
    ext : int or str, optional
        Extension number or name (``"1"`` is the number 1).
    path : str
        File name, for messages.
    what : str
        What the file is (``"image"``, ``"mask"``...), for messages.

    Returns
    -------
    HDU
        Raises InputError when there is no such extension or no 2-D image.
    """
    if ext is not None:
        try:
            key: int | str = int(ext) if str(ext).lstrip("-").isdigit() else str(ext)
            hdu = hdul[key]
        except (KeyError, IndexError):
            names = ", ".join(f"{i}:{h.name}" for i, h in enumerate(hdul))
            raise InputError(f"{path} has no extension {ext!r} (it has {names})") from None
        if not _is_2d_image(hdu):
            raise InputError(f"extension {ext!r} of {path} is not a 2-D image")
        return hdu
    for hdu in hdul:
        if _is_2d_image(hdu):
            return hdu
    raise InputError(f"{path} has no 2-D image HDU",
                     hint="name one with --source-ext/--template-ext")


def _is_2d_image(hdu: Any) -> bool:
    return bool(hdu.is_image and hdu.header.get("NAXIS", 0) == 2
                and all(int(hdu.header.get(f"NAXIS{i}", 0)) > 0 for i in (1, 2)))


def read_header(path: str | os.PathLike, ext: int | str | None = None,
                what: str = "image") -> fits.Header:
    """The header of the image HDU :func:`pick_hdu` chooses (no pixels read)."""
    if not Path(path).is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        with _open_fits(path) as hdul:
            return pick_hdu(hdul, ext, str(path), what).header.copy()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read the {what} header from {path} ({exc})"
                         .splitlines()[0]) from None


def image_shape(path: str | os.PathLike, ext: int | str | None = None,
                what: str = "image") -> tuple[int, int]:
    """``(ny, nx)`` of the image HDU :func:`pick_hdu` chooses (from its header)."""
    hdr = read_header(path, ext, what)
    return int(hdr["NAXIS2"]), int(hdr["NAXIS1"])


def _first_image(path: str, ext: int | str | None, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise InputError(f"{what} file not found: {path}")
    try:
        with _open_fits(path) as hdul:
            hdu = pick_hdu(hdul, ext, path, what)
            _check_declared_size(path, hdu)
            return np.array(hdu.data)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read a 2-D image from {what} file {path} "
                         f"({exc})".splitlines()[0]) from None


def load_mask(obj: Any, shape: tuple[int, ...], ext: int | str | None = None) -> np.ndarray:
    """A bad-pixel mask or bitmask (array, HDU, HDUList or FITS path), checked, bits intact."""
    if isinstance(obj, (str, os.PathLike)):
        m = _first_image(str(obj), ext, "mask")
    elif isinstance(obj, fits.HDUList) or _is_hdu(obj):
        m = _hdu_pixels(obj, ext, "mask")[0]
    else:
        m = np.asarray(obj)
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)) or np.any(m != np.round(m)) or np.any(m < 0):
            raise InputError("the mask must hold integers or booleans",
                             hint="True (or a set bit) marks a bad pixel")
        m = m.astype(np.int64)
    if m.dtype.kind not in "biu":
        raise InputError(f"the mask has unsupported dtype {m.dtype}",
                         hint="give booleans or an integer bitmask")
    if m.dtype.byteorder not in ("=", "|"):
        m = m.astype(m.dtype.newbyteorder("="))
    if m.shape != tuple(shape):
        raise InputError(f"the mask's shape {m.shape} differs from the image's {tuple(shape)}",
                         hint="give a mask of the source's shape")
    return m


def load_weight(obj: Any, shape: tuple[int, ...], ext: int | str | None = None) -> np.ndarray:
    """A weight/variance map (array, NDData uncertainty, HDU, HDUList or path) as float64."""
    if isinstance(obj, (str, os.PathLike)):
        w = _first_image(str(obj), ext, "weight")
    elif isinstance(obj, fits.HDUList) or _is_hdu(obj):
        w = _hdu_pixels(obj, ext, "weight map")[0]
    elif hasattr(obj, "array") and not isinstance(obj, np.ndarray):
        w = np.asarray(obj.array)
    else:
        w = np.asarray(obj)
    if w.dtype.kind not in "fiub":
        raise InputError(f"the weight map has unsupported dtype {w.dtype}",
                         hint="give real numbers: a variance, inverse variance or stddev")
    with np.errstate(invalid="ignore"):  # a signalling NaN (a damaged pixel) becomes a NaN
        w = w.astype(np.float64)
    if w.shape != tuple(shape):
        raise InputError(f"the weight map's shape {w.shape} differs from the image's "
                         f"{tuple(shape)}", hint="give a weight map of the source's shape")
    return w


#: Unscaled float images up to this size are read straight into native memory (in
#: chunks, so a mosaic never has its file pages mapped next to its pixels).
FAST_READ_MAX_BYTES = 1 << 36


def _read_float_pixels(path: str, hdu: Any) -> np.ndarray | None:
    """Unscaled BITPIX -32/-64 pixels read into a native array (one pass, in-place swap).

    Returns None where this does not apply (integers, BZERO/BSCALE, compressed or
    very large HDUs), and the caller goes through astropy's reader.
    """
    hdr = hdu.header
    bitpix = hdr.get("BITPIX")
    if bitpix not in (-32, -64) or hdr.get("NAXIS") != 2 or isinstance(hdu, fits.CompImageHDU):
        return None
    if float(hdr.get("BZERO", 0.0)) != 0.0 or float(hdr.get("BSCALE", 1.0)) != 1.0:
        return None
    shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
    out = np.empty(shape, np.float32 if bitpix == -32 else np.float64)
    if out.nbytes > FAST_READ_MAX_BYTES or out.nbytes == 0:
        return None
    offset = hdu.fileinfo()["datLoc"]
    view = memoryview(out).cast("B")
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while view:  # one read returns at most ~2 GB on Linux
            n = f.readinto(view[:1 << 28])
            if not n:
                return None
            view = view[n:]
    if np.little_endian:
        out.byteswap(inplace=True)  # FITS is big-endian
    return out


def _read_fits(path: str, ext: int | str | None) -> tuple[np.ndarray, fits.Header]:
    """Pixels (float32, or float64 if stored so) and header of one image HDU."""
    last: Exception | None = None
    # Memory-mapping keeps big mosaics out of RAM until read; scaled integer data
    # (BZERO/BSCALE) cannot be memory-mapped, so those are read whole.
    for memmap in (True, False):
        try:
            with _open_fits(path, memmap=memmap, lazy_load_hdus=True) as hdul:
                hdu = pick_hdu(hdul, ext, path)
                header = hdu.header.copy()
                _check_declared_size(path, hdu)
                fast = _read_float_pixels(path, hdu)
                if fast is not None:
                    return fast, header
                raw = hdu.data
                dtype = np.float64 if raw.dtype.kind == "f" and raw.itemsize == 8 else np.float32
                return np.array(raw, dtype=dtype), header
        except InputError:
            raise
        except Exception as exc:
            last = exc
    raise InputError(f"cannot read {path} as FITS ({last})".splitlines()[0]) from None


def _gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.3g} GiB"
    return f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{int(n)} bytes"


def _check_declared_size(path: str, hdu: Any) -> None:
    """InputError when the header declares more pixels than the file holds.

    Checked before anything is allocated: a 5 kB file whose header claims
    200000 x 200000 pixels must not make the reader ask for 149 GiB. Compressed HDUs
    are checked against their own tables (:func:`_check_compressed`).
    """
    if isinstance(hdu, fits.CompImageHDU):
        _check_compressed(path, hdu)
        return
    hdr = hdu.header
    bitpix = abs(int(hdr.get("BITPIX", 8)))
    shape = [int(hdr.get(f"NAXIS{i}", 0)) for i in range(1, int(hdr.get("NAXIS", 0)) + 1)]
    need = bitpix // 8 * int(np.prod(shape, dtype=np.int64)) if shape else 0
    have = os.path.getsize(path) - int(hdu.fileinfo()["datLoc"])
    if need > have:
        dims = "x".join(str(n) for n in shape)
        raise InputError(f"{path}: the header declares {dims} pixels ({_gib(need)}) but the "
                         f"file holds {_gib(max(have, 0))} after it",
                         hint="the file is truncated or its header is wrong")


#: Tile compressions astropy decodes, and the values its C decoders take for RICE_1
#: (other values crash them: a BYTEPIX of 1000000 is a segmentation fault).
_COMPRESSIONS = ("RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS")
_RICE_SETTINGS = {"BLOCKSIZE": (32, (16, 32)), "BYTEPIX": (4, (1, 2, 4, 8))}


def _check_compressed(path: str, hdu: Any) -> None:
    """InputError unless a tile-compressed HDU is consistent with its own table.

    Read from the table's own header, before any tile is decoded: the compression
    and its settings must be ones the decoders take, the table must fit in the file
    and hold one row per tile of the declared image (a ZNAXISn claiming far more
    pixels than the table holds is refused here, not allocated), and the image must
    fit in memory (tiles compress without bound: a constant one to a few bytes).
    """
    with open(path, "rb") as f:
        f.seek(int(hdu.fileinfo()["hdrLoc"]))
        table = fits.Header.fromfile(f)
    bad = f"{path}: the compressed image's header is inconsistent"
    hint = "the file is damaged, or was not written by a FITS tile compressor"

    def integer(key: str, default: int | None = None) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{bad} ({key} = {value!r} is not an integer)", hint=hint)
        return value

    ctype, zbitpix = table.get("ZCMPTYPE"), integer("ZBITPIX")
    if ctype not in _COMPRESSIONS:
        raise InputError(f"{bad} (unknown ZCMPTYPE {ctype!r})", hint=hint)
    if zbitpix not in (8, 16, 32, 64, -32, -64):
        raise InputError(f"{bad} (ZBITPIX = {zbitpix})", hint=hint)
    if ctype in ("RICE_1", "RICE_ONE"):
        names = {str(table.get(f"ZNAME{i}", "")).upper(): f"ZVAL{i}"
                 for i in range(1, 1000) if f"ZNAME{i}" in table}
        for name, (default, allowed) in _RICE_SETTINGS.items():
            value = integer(names[name], default) if name in names else default
            if value not in allowed:
                raise InputError(f"{bad} (RICE_1 {name} = {value}, not one of {allowed})",
                                 hint=hint)
    naxis = integer("ZNAXIS")
    dims = [integer(f"ZNAXIS{i}") for i in range(1, naxis + 1)]
    tiles = [integer(f"ZTILE{i}", dims[0] if i == 1 else 1) for i in range(1, naxis + 1)]
    if not dims or min(dims + tiles) < 1:
        raise InputError(f"{bad} (ZNAXISn {dims}, ZTILEn {tiles})", hint=hint)
    size = "x".join(str(n) for n in dims)
    n_tiles = math.prod(-(-n // t) for n, t in zip(dims, tiles, strict=True))
    rows, width, heap = integer("NAXIS2"), integer("NAXIS1"), integer("PCOUNT", 0)
    if n_tiles != rows:
        raise InputError(f"{path}: the compressed header declares {size} pixels in {n_tiles} "
                         f"tiles but its table holds {rows}",
                         hint="the file is truncated or its header is wrong")
    need = rows * width + heap
    have = os.path.getsize(path) - int(hdu.fileinfo()["datLoc"])
    if min(rows, width, heap) < 0 or need > have:
        raise InputError(f"{path}: the compressed image's table declares {_gib(need)} but the "
                         f"file holds {_gib(max(have, 0))} after its header",
                         hint="the file is truncated or its header is wrong")
    nbytes, free = math.prod(dims) * abs(zbitpix) // 8, available_memory()
    if nbytes > free:
        raise InputError(f"{path}: the compressed image declares {size} pixels "
                         f"({_gib(nbytes)}), more than the {_gib(free)} of memory available",
                         hint="the header is wrong, or the image needs more memory")


def _has_finite(data: np.ndarray) -> bool:
    """Whether any pixel is finite: a sparse sample first, the whole image only if needed."""
    ny, nx = data.shape
    if np.isfinite(data[:: max(1, ny // 64), :: max(1, nx // 64)]).any():
        return True
    rows = max(1, (1 << 22) // max(data.shape[1], 1))
    return any(np.isfinite(data[r:r + rows]).any() for r in range(0, data.shape[0], rows))


#: What :func:`load_image` accepts, for messages.
ACCEPTED_IMAGES = ("a FITS path, an image HDU (PrimaryHDU, ImageHDU, CompImageHDU), an "
                   "HDUList (the extension chosen by ext), (array, WCS), (array, Header), "
                   "NDData/CCDData, a masked array or a 2-D array")


def _is_hdu(obj: Any) -> bool:
    return isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU,
                            fits.BinTableHDU, fits.TableHDU, fits.GroupsHDU))


def _hdu_pixels(obj: Any, ext: int | str | None, name: str) -> tuple[np.ndarray, fits.Header]:
    """Pixels (not copied) and a copy of the header of an HDU or an HDUList's image HDU.

    An HDUList's HDU is chosen by :func:`pick_hdu` with ``ext`` (reproject's
    ``hdu_in``); a single HDU must hold a 2-D image itself.
    """
    if isinstance(obj, fits.HDUList):
        hdu = pick_hdu(obj, ext, f"the {name} HDUList", name)
    else:
        hdu = obj
        if ext is not None:
            raise InputError(f"the {name} is a single HDU, so extension {ext!r} does not apply",
                             hint="give the HDUList to choose an extension, or no extension")
        if not _is_2d_image(hdu):
            what = ("a table, not an image" if not hdu.is_image else
                    f"not a 2-D image (NAXIS = {hdu.header.get('NAXIS', 0)})")
            raise InputError(f"the {name} {type(hdu).__name__} is {what}",
                             hint="give the HDU that holds the image (e.g. hdul[1]), or "
                             "the HDUList with the extension")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            for message in _HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            data = hdu.data
    except Exception as exc:
        raise InputError(f"cannot read the {name}'s pixels from its {type(hdu).__name__} "
                         f"({exc})".splitlines()[0]) from None
    if data is None:
        raise InputError(f"the {name}'s {type(hdu).__name__} holds no pixels")
    return np.asarray(data), hdu.header.copy()


def _pair(obj: tuple, name: str) -> tuple[Any, fits.Header]:
    """The pixels and a header of reproject's ``(array, WCS)`` / ``(array, Header)``."""
    pixels, meta = obj
    if isinstance(meta, fits.Header):
        header = meta.copy()
    else:
        from astropy.wcs import WCS  # deferred: astropy.wcs only when a WCS is given

        if not isinstance(meta, WCS):
            raise InputError(f"the {name} is a pair ({type(pixels).__name__}, "
                             f"{type(meta).__name__}): the second item must be an astropy "
                             "WCS or Header", hint=f"pass {ACCEPTED_IMAGES}")
        if meta.naxis != 2:
            raise InputError(f"the {name}'s WCS has {meta.naxis} axes, not 2",
                             hint="give its celestial part (wcs.celestial)")
        header = meta.to_header(relax=True)
    shape = np.shape(pixels)
    if (header.get("NAXIS") == 2 and len(shape) == 2
            and (header.get("NAXIS1"), header.get("NAXIS2")) != (shape[1], shape[0])):
        raise InputError(f"the {name}'s header describes {header.get('NAXIS1')}x"
                         f"{header.get('NAXIS2')} pixels but its array is {shape[1]}x{shape[0]}",
                         hint="pair the array with its own header")
    return pixels, header


def load_image(
    obj: ImageInput, ext: int | str | None = None, *, name: str = "image"
) -> tuple[np.ndarray, fits.Header | None, np.ndarray | None]:
    """Read a 2-D image from any of the forms images are held in.

    Integer, big-endian and float64 data are accepted; the pixels come back as a
    native-endian float array (float32, or float64 if given float64 in memory), and
    the input is never modified (HDUs, arrays and headers are copied).

    Parameters
    ----------
    obj : path, HDU, HDUList, tuple, NDData, numpy.ma.MaskedArray or ndarray
        The image: a FITS path; an image HDU (``PrimaryHDU``, ``ImageHDU``,
        ``CompImageHDU``); an ``HDUList``, its HDU chosen by ``ext`` (the role of
        reproject's ``hdu_in``); reproject's ``(array, WCS)`` or ``(array, Header)``;
        NDData/CCDData; a masked array (masked = bad); a 2-D array.
    ext : int or str, optional
        FITS extension number or name of a path or HDUList (default: the first 2-D
        image HDU).
    name : str
        What to call the image in error messages.

    Returns
    -------
    data : ndarray
    header : astropy.io.fits.Header or None
    mask : ndarray of bool or None
        Masked pixels (masked arrays and NDData with a mask).
    """
    if obj is None:
        raise InputError(f"no {name} given", hint=f"pass {ACCEPTED_IMAGES}")
    if isinstance(obj, tuple) and len(obj) == 2 and not np.isscalar(obj[1]) and not (
            isinstance(obj[1], (list, tuple, np.ndarray))):
        obj_pixels, header = _pair(obj, name)
        return _finish_image(obj_pixels, header, name, source=obj)
    if isinstance(obj, fits.HDUList) or _is_hdu(obj):
        data, header = _hdu_pixels(obj, ext, name)
        return _finish_image(data, header, name, source=obj)
    return _finish_image(obj, None, name, ext=ext, source=obj)


def _finish_image(obj: Any, header: fits.Header | None, name: str, *,
                  ext: int | str | None = None, source: Any = None,
                  ) -> tuple[np.ndarray, fits.Header | None, np.ndarray | None]:
    """:func:`load_image` for a path, NDData, masked array or array (pixels checked).

    ``header`` is the header already found (HDUs, pairs); ``source`` the user's object.
    """
    mask = None
    if isinstance(obj, (str, os.PathLike)):
        path = str(obj)
        if not Path(path).is_file():
            what = "is a directory" if Path(path).is_dir() else "file not found"
            raise InputError(f"{name} {what}: {path}", hint="give the path of a FITS image")
        data, header = _read_fits(path, ext)
    elif not isinstance(obj, np.ndarray) and hasattr(obj, "unit") and hasattr(obj, "data"):
        data = np.asarray(obj.data)
        if getattr(obj, "mask", None) is not None:
            mask = np.asarray(obj.mask)  # an integer bitmask keeps its bits
            mask = mask if mask.dtype.kind in "iu" else mask.astype(bool)
        wcs = getattr(obj, "wcs", None)
        if wcs is not None:
            header = wcs.to_header(relax=True)
    elif isinstance(obj, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(obj)
        data = np.asarray(obj.data)
    else:
        try:
            data = np.asarray(obj)
        except Exception:
            data = np.empty(())
        if data.dtype.kind == "O":
            data = np.empty(())
    if data.ndim == 0:
        raise InputError(f"{name} must be an image, got {type(source).__name__}",
                         hint=f"pass {ACCEPTED_IMAGES}")
    if data.ndim != 2:
        raise InputError(f"{name} must be 2-D, got shape {data.shape}",
                         hint="pass one plane of a cube (e.g. cube[0]), or pick the FITS "
                         "extension that holds the image")
    if data.dtype.kind not in "fiub":
        raise InputError(f"{name} has unsupported dtype {data.dtype}",
                         hint="pixels must be real numbers (integer or float)")
    if min(data.shape) < 8:
        raise InputError(f"{name} is too small ({data.shape[1]}x{data.shape[0]} pixels)",
                         hint="registration needs an image of at least 8x8 pixels with stars")
    if data.dtype.kind == "f" and not _has_finite(data):
        raise InputError(f"{name} has no finite pixels (all NaN or inf)",
                         hint="check the file, or the extension read (--source-ext/--template-ext)")
    out_dtype = np.dtype(np.float64 if data.dtype == np.float64 else np.float32)
    fresh = isinstance(obj, (str, os.PathLike)) and data.flags.owndata
    if not (fresh and data.dtype == out_dtype and data.flags.c_contiguous):
        # The caller's memory: always a private copy, so the input is never modified.
        # (A FITS file's pixels were already converted into a fresh array above.)
        data = np.array(data, dtype=out_dtype.newbyteorder("="), copy=True)
    return data, header, mask
