"""The work behind ``gpualign apply TRANSFORM IMAGE... -o OUT``: resample with a saved mapping.

No detection: each image (another band, a variance map, a mask, a later frame of a
stable camera) goes through the second half of the frame runner
(:func:`gpualign.pipeline.warp_frame`) with the transform file's template -> source
mapping, onto the template grid recorded in the file (or ``--output-shape``). The
output has the layout and header of ``gpualign align``'s (plus ``GA_TRANS``); its
WCS is the template's (``--template``) or the image's own composed with the mapping.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gpualign._errors import InputError
from gpualign.backend import get_backend
from gpualign.io import image_shape, load_image, read_header
from gpualign.pipeline import (
    FrameOptions,
    TemplateSide,
    check_image_memory,
    check_output_shape,
    warp_frame,
)
from gpualign.products import load_solution

log = logging.getLogger("gpualign")

__all__ = ["run_apply"]


def run_apply(
    transform_file: Path, images: list[Path], output: Path, *, ext: str | None = None,
    template: Path | None = None, template_ext: str | None = None,
    source_mask: Path | None = None, mask_ext: str | None = None,
    source_weight: Path | None = None, weight_ext: str | None = None,
    weight_type: str = "variance", output_shape: tuple[int, int] | None = None,
    interp_order: int = 3, cval: float = float("nan"), conserve_flux: bool = False,
    preserve_footprints: bool = False, backend: str = "auto", threads: int | None = None,
    overwrite: bool = False, max_memory: float | None = None,
) -> list[Path]:
    """Resample each image with the saved mapping and write it; return the output paths.

    One image: ``output`` is the file (or an existing directory to write into).
    Several: ``output`` is a directory and each goes to ``<stem>_aligned.fits``.
    """
    if output_shape is not None:
        check_output_shape(output_shape, "--output-shape")
    solution = load_solution(transform_file)
    shape = tuple(output_shape) if output_shape else solution.template_shape
    if shape is None:
        raise InputError(f"{transform_file} records no template shape",
                         hint="give --output-shape NY NX")
    if len(images) > 1 and (source_mask is not None or source_weight is not None):
        raise InputError("--source-mask/--source-weight apply to a single image")
    header = None if template is None else read_header(template, template_ext, "template")
    be = get_backend(backend)
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
    options = {out: FrameOptions(
        interp_order=interp_order, cval=cval, threads=threads, source_mask=source_mask,
        mask_ext=mask_ext, source_weight=source_weight, weight_ext=weight_ext,
        weight_type=weight_type, conserve_flux=conserve_flux,
        preserve_footprints=preserve_footprints, output=out, overwrite=overwrite,
        transform_file=str(transform_file), protected=(template, *images),
        max_memory=max_memory) for out in outs}
    for image, out in zip(images, outs, strict=True):  # every output, before any work
        options[out].check_outputs(str(image))
    for image, out in zip(images, outs, strict=True):
        if not Path(image).is_file():
            raise InputError(f"image file not found: {image}")
        src_shape = image_shape(image, ext)  # checked before the pixels are read
        if solution.source_shape is not None and src_shape != tuple(solution.source_shape):
            raise InputError(
                f"{image} is {src_shape[1]}x{src_shape[0]} but the transform was fitted "
                f"on a {solution.source_shape[1]}x{solution.source_shape[0]} source",
                hint="apply a transform to images of the detector frame it was fitted on")
        check_image_memory(image, ext, "image", max_memory)
        data, src_header, own_mask = load_image(image, ext, name="image")
        warp_frame(data, str(image), src_header, own_mask, solution,
                   TemplateSide(None, header, (int(shape[0]), int(shape[1]))), backend=be,
                   options=options[out])
        log.info("%s -> %s", image, out)
    return outs
