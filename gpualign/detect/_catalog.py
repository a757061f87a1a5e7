"""Star catalogues: the one structure every stage passes around, and its readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError

__all__ = ["Catalog", "catalog_from_table", "read_sextractor", "read_fits_ldac", "as_catalog",
           "ACCEPTED_CATALOGS"]

#: What :func:`as_catalog` accepts, for messages.
ACCEPTED_CATALOGS = ("an astropy Table, an (N, 2) x, y or (N, 3) x, y, flux array (0-based), "
                     "a SExtractor ASCII_HEAD file, a FITS_LDAC file (path or HDUList) "
                     "or a Catalog")


@dataclass(frozen=True)
class Catalog:
    """Detections of one image, brightest first.

    Attributes
    ----------
    x, y : ndarray
        0-based pixel positions (x = column, y = row).
    flux : ndarray
        Total flux (any unit; only the order and ratios matter).
    fwhm : ndarray
        Full width at half maximum in pixels (NaN if unknown).
    flag : ndarray
        Integer flags (sep / SExtractor convention; 0 = clean).
    sigma : ndarray
        1-sigma positional uncertainty per axis in pixels, used to weight the fit.
    shape : tuple of int or None
        ``(ny, nx)`` of the image the catalogue belongs to, if known.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    fwhm: np.ndarray
    flag: np.ndarray
    sigma: np.ndarray
    shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def xy(self) -> np.ndarray:
        """Positions as an ``(N, 2)`` float64 array of (x, y)."""
        return np.column_stack([self.x, self.y])

    def take(self, index: np.ndarray) -> Catalog:
        """Return the catalogue restricted to ``index`` (boolean mask or integer indices)."""
        return Catalog(
            self.x[index], self.y[index], self.flux[index], self.fwhm[index],
            self.flag[index], self.sigma[index], self.shape,
        )

    def sorted_by_flux(self) -> Catalog:
        """Return the catalogue ordered brightest first (NaN fluxes last)."""
        order = np.argsort(-np.nan_to_num(self.flux, nan=-np.inf), kind="stable")
        return self.take(order)

    def brightest(self, n: int) -> Catalog:
        """Return the ``n`` brightest detections (the catalogue must be sorted)."""
        return self.take(np.arange(min(n, len(self))))


def _sigma_from_snr(fwhm: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """Centroid uncertainty of a PSF of ``fwhm`` at signal-to-noise ``snr``.

    For a Gaussian PSF the per-axis centroid error is ``sigma_psf * sqrt(2) / snr``
    (background and photon noise together); a floor of 0.005 px stands for
    everything the noise model leaves out (PSF variations, sampling).
    """
    sig_psf = np.where(np.isfinite(fwhm) & (fwhm > 0), fwhm, 2.5) / 2.3548
    snr = np.where(np.isfinite(snr) & (snr > 0), snr, 5.0)
    with np.errstate(over="ignore"):  # a subnormal SNR: an infinite sigma (no weight)
        return np.hypot(sig_psf * np.sqrt(2.0) / snr, 0.005)


def _snr_from_flux(flux: np.ndarray) -> np.ndarray:
    """Signal-to-noise guessed from the fluxes alone, for catalogues without errors.

    A detection catalogue reaches down to its detection limit, so the faint end
    (5th percentile of the positive fluxes) is taken as SNR 5 and the noise as
    background-limited (SNR proportional to flux). Only the relative weights of the
    stars matter to the fit; one constant SNR for all would let the faint stars,
    whose centroids are far noisier, weigh as much as the bright ones.
    """
    f = np.where(np.isfinite(flux) & (flux > 0), flux, np.nan)
    if not np.isfinite(f).any():
        return np.full_like(flux, 20.0)
    ref = float(np.nanpercentile(f, 5))
    with np.errstate(over="ignore"):
        return np.where(np.isfinite(f), 5.0 * f / ref, 5.0)


def _column(table: Any, names: tuple[str, ...]) -> np.ndarray | None:
    """The first of ``names`` (any case) as float64, missing values NaN; None if absent."""
    lower = {c.lower(): c for c in table.colnames}
    for name in names:
        if name.lower() in lower:
            col = lower[name.lower()]
            try:
                values = np.asarray(np.ma.filled(np.ma.asarray(table[col], dtype=np.float64),
                                                 np.nan))
            except (TypeError, ValueError):
                raise InputError(f"catalogue column {col} holds values that are not numbers",
                                 hint="check the catalogue's rows and its column header"
                                 ) from None
            if values.ndim != 1:
                raise InputError(f"catalogue column {col} has {values.ndim} dimensions, not 1",
                                 hint="give one value per row")
            return values
    return None


def _flags(values: np.ndarray) -> np.ndarray:
    """Integer flags from a float column (InputError unless every value is an integer)."""
    ok = np.isfinite(values)
    ok[ok] = (values[ok] == np.round(values[ok])) & (np.abs(values[ok]) < 2.0**63)
    if not ok.all():
        raise InputError(f"catalogue flags must be integers, found {float(values[~ok][0]):g}",
                         hint="check the flags column (SExtractor FLAGS)")
    return values.astype(np.int64)


def catalog_from_table(
    table: Any, *, flux_col: str | None = None, one_based: bool = False,
    shape: tuple[int, int] | None = None,
) -> Catalog:
    """Build a :class:`Catalog` from an astropy Table (or anything with ``colnames``).

    Parameters
    ----------
    table : astropy.table.Table
        Needs x and y columns (``x``/``y``, ``xcentroid``/``ycentroid``,
        ``XWIN_IMAGE``/``YWIN_IMAGE`` or ``X_IMAGE``/``Y_IMAGE``); ``flux``,
        ``fwhm`` and ``flag`` are used when present.
    flux_col : str, optional
        Name of the flux column (e.g. ``"FLUX_AUTO"``). Default: the first of
        ``flux``, ``FLUX_AUTO``, ``FLUX_ISO``, ``FLUX_BEST``, any ``FLUX_*``.
    one_based : bool
        Whether positions are 1-based (SExtractor); they are converted to 0-based.
    shape : tuple of int, optional
        Image shape ``(ny, nx)`` the catalogue belongs to.

    Returns
    -------
    Catalog
        Sorted brightest first.
    """
    if not hasattr(table, "colnames"):
        raise InputError(f"a catalogue cannot be a {type(table).__name__}",
                         hint=f"pass {ACCEPTED_CATALOGS}")
    x = _column(table, ("x", "xcentroid", "XWIN_IMAGE", "X_IMAGE"))
    y = _column(table, ("y", "ycentroid", "YWIN_IMAGE", "Y_IMAGE"))
    if x is None or y is None:
        raise InputError(
            f"catalogue has no x/y columns (columns: {', '.join(table.colnames)})",
            hint="name them x and y, or X_IMAGE and Y_IMAGE",
        )
    if one_based:
        x, y = x - 1.0, y - 1.0
    if flux_col is not None:
        flux = _column(table, (flux_col,))
        if flux is None:
            raise InputError(
                f"catalogue has no flux column {flux_col!r}",
                hint=f"columns are: {', '.join(table.colnames)}",
            )
    else:
        candidates = ("flux", "FLUX_AUTO", "FLUX_ISO", "FLUX_BEST", "FLUX_APER")
        candidates += tuple(c for c in table.colnames if c.upper().startswith("FLUX_"))
        flux = _column(table, candidates)
        if flux is None:
            flux = np.ones_like(x)
    fwhm = _column(table, ("fwhm", "FWHM_IMAGE"))
    fwhm = np.full_like(x, np.nan) if fwhm is None else fwhm
    flag = _column(table, ("flag", "flags", "FLAGS"))
    flag = np.zeros(x.shape, np.int64) if flag is None else _flags(flag)
    snr = _column(table, ("snr",))
    if snr is None:
        # The error of the chosen flux first (FLUX_APER -> FLUXERR_APER, flux -> fluxerr).
        names: tuple[str, ...] = ("fluxerr", "flux_err", "FLUXERR_AUTO", "FLUXERR_ISO")
        if flux_col is not None and flux_col.upper().startswith("FLUX"):
            names = (flux_col[:4] + "ERR" + flux_col[4:], flux_col + "_err") + names
        err = _column(table, names)
        if err is None:
            snr = _snr_from_flux(flux)
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                snr = flux / err  # a zero or missing error: an unknown SNR (_sigma_from_snr)
    good = np.isfinite(x) & np.isfinite(y)
    cat = Catalog(x, y, flux, fwhm, flag, _sigma_from_snr(fwhm, snr), shape)
    return cat.take(good).sorted_by_flux()


#: The first bytes of every FITS file.
_FITS_SIGNATURE = b"SIMPLE  ="


def _is_fits(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_FITS_SIGNATURE)) == _FITS_SIGNATURE
    except OSError:
        return False


def _flat_table(hdu: Any) -> Any:
    """A binary table HDU as a Table, vector columns split as astropy's SExtractor reader.

    ``FLUX_APER`` of 3 apertures becomes ``FLUX_APER``, ``FLUX_APER_1``,
    ``FLUX_APER_2``: the names the same catalogue gets in ``ASCII_HEAD``.
    """
    from astropy.table import Table

    table = Table()
    for col in hdu.columns:
        values = np.array(hdu.data[col.name])  # a copy, native or not: the file closes
        if values.ndim == 1:
            table[col.name] = values
            continue
        values = values.reshape(len(values), -1)
        for k in range(values.shape[1]):
            table[col.name if k == 0 else f"{col.name}_{k}"] = values[:, k]
    return table


def _ldac_catalog(hdul: Any, where: str, flux_col: str | None,
                  shape: tuple[int, int] | None) -> Catalog:
    """The Catalog of an open FITS_LDAC file's one ``LDAC_OBJECTS`` table (1-based)."""
    tables = [h for h in hdul if h.name == "LDAC_OBJECTS"]
    if not tables:
        names = ", ".join(h.name for h in hdul)
        raise InputError(f"{where} is FITS but holds no LDAC_OBJECTS table (it has {names})",
                         hint="give a FITS_LDAC catalogue (SExtractor CATALOG_TYPE FITS_LDAC) "
                         "or a SExtractor ASCII_HEAD one")
    if len(tables) > 1:
        raise InputError(f"{where} holds {len(tables)} LDAC_OBJECTS tables (one per chip)",
                         hint="give the catalogue of one image (split the file per chip)")
    try:
        table = _flat_table(tables[0])
    except Exception as exc:
        raise InputError(f"cannot read the LDAC_OBJECTS table of {where} ({exc})"
                         .splitlines()[0]) from None
    return catalog_from_table(table, flux_col=flux_col, one_based=True, shape=shape)


def read_fits_ldac(
    path: str | Path, *, flux_col: str | None = None, shape: tuple[int, int] | None = None
) -> Catalog:
    """Read a FITS_LDAC catalogue (SExtractor's ``FITS_LDAC``, SCAMP's native format).

    Parameters
    ----------
    path : str or Path
        The catalogue file: an ``LDAC_OBJECTS`` binary table with ``XWIN_IMAGE`` /
        ``YWIN_IMAGE`` (or ``X_IMAGE`` / ``Y_IMAGE``), ``FLUX_*``, ``FWHM_IMAGE``,
        ``FLAGS``.
    flux_col : str, optional
        Which ``FLUX_*`` column to rank stars by (default: ``FLUX_AUTO`` if present).
    shape : tuple of int, optional
        Image shape ``(ny, nx)``.

    Returns
    -------
    Catalog
        0-based positions (the file's are 1-based), brightest first.
    """
    from astropy.io import fits

    if not Path(path).is_file():
        raise InputError(f"catalogue not found: {path}")
    try:
        with fits.open(str(path), memmap=False) as hdul:
            return _ldac_catalog(hdul, str(path), flux_col, shape)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {path} as a FITS_LDAC catalogue ({exc})"
                         .splitlines()[0]) from None


def read_sextractor(
    path: str | Path, *, flux_col: str | None = None, shape: tuple[int, int] | None = None
) -> Catalog:
    """Read a SExtractor catalogue: ``ASCII_HEAD``, or ``FITS_LDAC`` (told by its content).

    A file that starts as FITS is read by :func:`read_fits_ldac`, so the options
    that take a SExtractor catalogue take SCAMP's FITS_LDAC files as well.

    Parameters
    ----------
    path : str or Path
        The catalogue file.
    flux_col : str, optional
        Which ``FLUX_*`` column to rank stars by (default: ``FLUX_AUTO`` if present).
    shape : tuple of int, optional
        Image shape ``(ny, nx)``.

    Returns
    -------
    Catalog
        0-based positions (SExtractor's are 1-based), brightest first.
    """
    from astropy.io import ascii

    if _is_fits(path):
        return read_fits_ldac(path, flux_col=flux_col, shape=shape)
    try:
        table = ascii.read(str(path), format="sextractor")
    except FileNotFoundError:
        raise InputError(f"catalogue not found: {path}") from None
    except Exception as exc:
        raise InputError(
            f"cannot read {path} as a SExtractor ASCII catalogue ({exc})".splitlines()[0],
            hint="write it with CATALOG_TYPE ASCII_HEAD",
        ) from None
    return catalog_from_table(table, flux_col=flux_col, one_based=True, shape=shape)


def _array_catalog(obj: Any, flux_col: str | None) -> Catalog:
    """A Catalog of an ``(N, 2)`` x, y or ``(N, 3)`` x, y, flux array (0-based)."""
    from astropy.table import Table

    try:
        arr = np.asarray(obj)
    except Exception:
        arr = np.empty(())
    if arr.dtype.names:  # a structured array: named columns, as a Table
        return catalog_from_table(Table(arr), flux_col=flux_col)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or arr.dtype.kind not in "fiu":
        got = f"shape {arr.shape}, dtype {arr.dtype}" if arr.ndim else type(obj).__name__
        raise InputError(f"a catalogue array must be (N, 2) x, y or (N, 3) x, y, flux of "
                         f"numbers, got {got}", hint=f"pass {ACCEPTED_CATALOGS}")
    table = Table(np.array(arr, dtype=np.float64), names=("x", "y", "flux")[:arr.shape[1]])
    return catalog_from_table(table)


def as_catalog(obj: Any, *, flux_col: str | None = None) -> Catalog:
    """Turn a user-given catalogue into a :class:`Catalog`.

    Parameters
    ----------
    obj : Catalog, Table, ndarray, str, Path or HDUList
        An astropy Table (0-based x, y; flux, fwhm, flag used when present); an
        ``(N, 2)`` x, y or ``(N, 3)`` x, y, flux array (0-based; without fluxes the
        rows' order ranks the stars, brightest first); a SExtractor ``ASCII_HEAD`` or
        ``FITS_LDAC`` file (1-based, told apart by content); an open FITS_LDAC
        ``HDUList``; a Catalog.
    flux_col : str, optional
        Flux column of a table or file.

    Returns
    -------
    Catalog
        Brightest first. Anything else raises InputError listing what is accepted.
    """
    from astropy.io import fits

    if isinstance(obj, Catalog):
        return obj
    if isinstance(obj, (str, Path)):
        return read_sextractor(obj, flux_col=flux_col)
    if isinstance(obj, fits.HDUList):
        return _ldac_catalog(obj, "the HDUList", flux_col, None)
    if hasattr(obj, "colnames"):
        return catalog_from_table(obj, flux_col=flux_col)
    if isinstance(obj, (np.ndarray, list)):
        return _array_catalog(obj, flux_col)
    raise InputError(f"a catalogue cannot be a {type(obj).__name__}",
                     hint=f"pass {ACCEPTED_CATALOGS}")
