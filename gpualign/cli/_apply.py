"""The work behind ``gpualign apply TRANSFORM IMAGE... -o OUT``: resample with a saved mapping.

No detection: each image (another band, a variance map, a mask, a later frame of a
stable camera) is resampled with the transform file's template -> source mapping onto
the template grid recorded in the file (or ``--output-shape``). The output FITS has
the data, a FOOTPRINT extension, and MASK and VARIANCE/WEIGHT/STDDEV extensions when a
mask or weight map is given; its WCS is the template's (``--template``) or the
image's own composed with the mapping.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign import __version__
from gpualign._errors import InputError
from gpualign.io._read import write_fits_atomic
from gpualign.pipeline._api import AlignResult, apply_transform
from gpualign.products._solution_io import load_solution

log = logging.getLogger("gpualign")

__all__ = ["run_apply", "apply_hdus", "WEIGHT_HDU_NAMES"]

#: Extension name of the resampled weight map, by weight type.
WEIGHT_HDU_NAMES = {"variance": "VARIANCE", "inverse_variance": "WEIGHT", "stddev": "STDDEV"}


def _template_header(path: Path | None, ext: str | None) -> fits.Header | None:
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"template file not found: {path}")
    try:
        with fits.open(path) as hdul:
            if ext is not None:
                return hdul[int(ext) if ext.lstrip("-").isdigit() else ext].header.copy()
            for hdu in hdul:
                if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                    return hdu.header.copy()
    except (OSError, KeyError, IndexError) as exc:
        raise InputError(f"cannot read the template header from {path} ({exc})"
                         .splitlines()[0]) from None
    raise InputError(f"{path} has no 2-D image HDU")


def apply_hdus(result: AlignResult, source: str, transform_file: str) -> list[Any]:
    """Primary (data) + FOOTPRINT (+ MASK, + VARIANCE/WEIGHT/STDDEV) HDUs of a result."""
    hdr = result.header.copy() if result.header is not None else fits.Header()
    hdr["GA_VERS"] = (__version__, "gpualign version")
    hdr["GA_SRC"] = (Path(source).name[:60], "image resampled onto this grid")
    hdr["GA_TRANS"] = (Path(transform_file).name[:60], "transform file applied")
    hdr.add_history(f"gpualign {__version__}: applied {Path(transform_file).name} "
                    f"to {Path(source).name}")
    hdus: list[Any] = [fits.PrimaryHDU(result.data, header=hdr)]
    hdus.append(fits.ImageHDU(result.footprint.astype(np.uint8), name="FOOTPRINT"))
    if result.mask is not None:
        m = result.mask.astype(np.uint8) if result.mask.dtype == bool else result.mask
        hdus.append(fits.ImageHDU(m, name="MASK"))
    if result.weight is not None:
        hdus.append(fits.ImageHDU(result.weight, name=WEIGHT_HDU_NAMES[result.weight_type]))
    return hdus


def run_apply(
    transform_file: Path, images: list[Path], output: Path, *, ext: str | None = None,
    template: Path | None = None, template_ext: str | None = None,
    source_mask: Path | None = None, mask_ext: str | None = None,
    source_weight: Path | None = None, weight_ext: str | None = None,
    weight_type: str = "variance", output_shape: tuple[int, int] | None = None,
    interp_order: int = 3, cval: float = float("nan"), conserve_flux: bool = False,
    preserve_footprints: bool = False, backend: str = "auto", threads: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Resample each image with the saved mapping and write it; return the output paths.

    One image: ``output`` is the file (or an existing directory to write into).
    Several: ``output`` is a directory and each goes to ``<stem>_aligned.fits``.
    """
    from gpualign.products._finish import load_mask, load_weight

    solution = load_solution(transform_file)
    shape = tuple(output_shape) if output_shape else solution.template_shape
    if shape is None:
        raise InputError(f"{transform_file} records no template shape",
                         hint="give --output-shape NY NX")
    if len(images) > 1 and (source_mask is not None or source_weight is not None):
        raise InputError("--source-mask/--source-weight apply to a single image")
    header = _template_header(template, template_ext)
    many = len(images) > 1 or output.is_dir()
    if many:
        if not output.is_dir():
            raise InputError(f"output directory does not exist: {output}",
                             hint="create it, or give a single image")
        outs = [output / f"{Path(p).stem}_aligned.fits" for p in images]
    else:
        outs = [output]
    if len(set(outs)) != len(outs):
        raise InputError("two images would be written to the same output file")
    for out in outs:
        if out.exists() and not overwrite:
            raise InputError(f"output {out} exists", hint="use --overwrite to replace it")
    for image, out in zip(images, outs, strict=True):
        if not Path(image).is_file():
            raise InputError(f"image file not found: {image}")
        with fits.open(image) as hdul:  # shape check before reading the pixels
            hdus = [h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2]
            if ext is None and hdus:
                src_shape = (int(hdus[0].header["NAXIS2"]), int(hdus[0].header["NAXIS1"]))
            else:
                src_shape = None
        if (src_shape is not None and solution.source_shape is not None
                and src_shape != tuple(solution.source_shape)):
            raise InputError(
                f"{image} is {src_shape[1]}x{src_shape[0]} but the transform was fitted "
                f"on a {solution.source_shape[1]}x{solution.source_shape[0]} source",
                hint="apply a transform to images of the detector frame it was fitted on")
        mask = weight = None
        if source_mask is not None or source_weight is not None:
            from gpualign.io._read import load_image

            data_shape = load_image(image, ext, name="image")[0].shape
            if source_mask is not None:
                mask = load_mask(source_mask, data_shape, mask_ext)
            if source_weight is not None:
                weight = load_weight(source_weight, data_shape, weight_ext)
        result = apply_transform(
            solution, str(image), shape, interp_order=interp_order, cval=cval, mask=mask,
            backend=backend, ext=ext, threads=threads, source_weight=weight,
            weight_type=weight_type, conserve_flux=conserve_flux,
            preserve_footprints=preserve_footprints, template_header=header)
        write_fits_atomic(out, apply_hdus(result, str(image), str(transform_file)),
                          overwrite=overwrite)
        log.info("%s -> %s", image, out)
    return outs


#: ``gpualign align`` options handled here (single source, in-memory output).
ALIGN_EXTRAS = ("source_mask", "mask_ext", "source_weight", "weight_ext", "weight_type",
                "conserve_flux", "preserve_footprints", "save_transform")


def align_extras(
    data: np.ndarray, mask: np.ndarray | None, solution: Any, shape: tuple[int, int],
    header: fits.Header | None, out_path: Path, *, source: Path, source_ext: str | None,
    extras: dict[str, Any], backend: Any, interp_order: int, cval: float,
    threads: int | None, overwrite: bool,
) -> AlignResult:
    """The warp and write of ``gpualign align`` with masks, weights, flux, canvas, save.

    ``data`` (the source pixels, consumed) and ``mask`` as read for detection;
    ``extras`` holds the options of :data:`ALIGN_EXTRAS` (None = not given).
    """
    from gpualign.cli._align import output_header
    from gpualign.products._canvas import grow_canvas
    from gpualign.io._read import _pick_hdu
    from gpualign.products._finish import finish_result, load_mask, load_weight
    from gpualign.products._solution_io import save_solution
    from gpualign.warp._resample import warp

    if extras.get("save_transform") is not None:
        save_solution(solution, extras["save_transform"])
    if extras.get("source_mask") is not None:
        mask = load_mask(extras["source_mask"], data.shape, extras.get("mask_ext"))
    weight = None
    if extras.get("source_weight") is not None:
        weight = load_weight(extras["source_weight"], data.shape, extras.get("weight_ext"))
    src_shape = data.shape
    warp_t, out_shape, offset = solution.transform, tuple(shape), (0, 0)
    if extras.get("preserve_footprints"):
        warp_t, out_shape, offset = grow_canvas(warp_t, src_shape, out_shape)
    res = warp(data, warp_t, out_shape, backend=backend, order=interp_order, cval=cval,
               mask=mask, threads=threads, overwrite_input=True)
    del data
    result = AlignResult(res.data, res.footprint, res.mask, solution, backend.name)
    src_header = None
    if header is None or not any(k.startswith("CTYPE") for k in header):
        with fits.open(source) as hdul:  # the header only, for a composed WCS
            src_header = _pick_hdu(hdul, source_ext, str(source)).header.copy()
    finish_result(result, warp_t, order=interp_order, source=None, source_shape=src_shape,
                  source_header=src_header, template_header=header, source_weight=weight,
                  weight_type=extras.get("weight_type") or "variance",
                  conserve_flux=bool(extras.get("conserve_flux")), offset=offset)
    hdr = output_header(result.header, solution, str(source), backend.name, interp_order)
    hdr["GA_MODEL"] = (getattr(solution, "model", "affine"), "linear model of the mapping")
    hdus: list[Any] = [fits.PrimaryHDU(result.data, header=hdr)]
    hdus.append(fits.ImageHDU(result.footprint.astype(np.uint8), name="FOOTPRINT"))
    if result.mask is not None:
        m = result.mask.astype(np.uint8) if result.mask.dtype == bool else result.mask
        hdus.append(fits.ImageHDU(m, name="MASK"))
    if result.weight is not None:
        hdus.append(fits.ImageHDU(result.weight, name=WEIGHT_HDU_NAMES[result.weight_type]))
    write_fits_atomic(out_path, hdus, overwrite=overwrite)
    return result
