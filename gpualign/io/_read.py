"""Reading images and writing results: FITS in, native float32 + header out, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError

__all__ = ["load_image", "write_fits_atomic", "ImageInput"]

ImageInput = Any  # ndarray, masked array, NDData, str/Path of a FITS file


def _pick_hdu(hdul: fits.HDUList, ext: int | str | None, path: str) -> Any:
    if ext is not None:
        try:
            key: int | str = int(ext) if str(ext).lstrip("-").isdigit() else str(ext)
            hdu = hdul[key]
        except (KeyError, IndexError):
            names = ", ".join(f"{i}:{h.name}" for i, h in enumerate(hdul))
            raise InputError(f"{path} has no extension {ext!r} (it has {names})") from None
        if hdu.data is None or getattr(hdu.data, "ndim", 0) != 2:
            raise InputError(f"extension {ext!r} of {path} is not a 2-D image")
        return hdu
    for hdu in hdul:
        if hdu.is_image and hdu.data is not None and hdu.data.ndim == 2:
            return hdu
    raise InputError(
        f"{path} has no 2-D image HDU", hint="name one with --source-ext/--template-ext"
    )


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
    if bitpix not in (-32, -64) or hdr.get("NAXIS") != 2 or hdu.name == "COMPRESSED_IMAGE":
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
            with fits.open(path, memmap=memmap, lazy_load_hdus=True) as hdul:
                hdu = _pick_hdu(hdul, ext, path)
                header = hdu.header.copy()
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


def _has_finite(data: np.ndarray) -> bool:
    """Whether any pixel is finite: a sparse sample first, the whole image only if needed."""
    ny, nx = data.shape
    if np.isfinite(data[:: max(1, ny // 64), :: max(1, nx // 64)]).any():
        return True
    rows = max(1, (1 << 22) // max(data.shape[1], 1))
    return any(np.isfinite(data[r:r + rows]).any() for r in range(0, data.shape[0], rows))


def load_image(
    obj: ImageInput, ext: int | str | None = None, *, name: str = "image"
) -> tuple[np.ndarray, fits.Header | None, np.ndarray | None]:
    """Read a 2-D image from a FITS path, an array, a masked array or NDData.

    Integer, big-endian and float64 data are accepted; the pixels come back as a
    native-endian float array (float32, or float64 if given float64 in memory), and
    the input is never modified.

    Parameters
    ----------
    obj : ndarray, numpy.ma.MaskedArray, NDData or path
        The image.
    ext : int or str, optional
        FITS extension number or name (default: the first 2-D image HDU).
    name : str
        What to call the image in error messages.

    Returns
    -------
    data : ndarray
    header : astropy.io.fits.Header or None
    mask : ndarray of bool or None
        Masked pixels (masked arrays and NDData with a mask).
    """
    header = None
    mask = None
    if isinstance(obj, (str, os.PathLike)):
        path = str(obj)
        if not Path(path).is_file():
            raise InputError(f"{name} file not found: {path}")
        data, header = _read_fits(path, ext)
    elif hasattr(obj, "data") and hasattr(obj, "unit") and not isinstance(obj, np.ndarray):
        data = np.asarray(obj.data)
        if getattr(obj, "mask", None) is not None:
            mask = np.asarray(obj.mask)  # an integer bitmask keeps its bits
            mask = mask if mask.dtype.kind in "iu" else mask.astype(bool)
        wcs = getattr(obj, "wcs", None)
        if wcs is not None:
            header = wcs.to_header(relax=True)
    else:
        if isinstance(obj, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(obj)
            data = np.asarray(obj.data)
        else:
            data = np.asarray(obj)
    if data.ndim != 2:
        raise InputError(f"{name} must be 2-D, got shape {data.shape}")
    if data.dtype.kind not in "fiub":
        raise InputError(f"{name} has unsupported dtype {data.dtype}")
    if min(data.shape) < 8:
        raise InputError(f"{name} is too small ({data.shape[1]}x{data.shape[0]} pixels)")
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


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_fits_atomic(
    path: str | Path, hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU],
    *, overwrite: bool = False,
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
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output directory does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
