"""Files: reading images, masks, weights and headers; writing aligned images.

:func:`pick_hdu` is the one place that chooses an image HDU; :func:`output_header`
and :func:`result_hdus` the one place that builds output headers and HDUs; big
outputs are streamed tile by tile (:func:`warp_to_fits`).
"""

from gpualign.io._read import (
    ImageInput,
    image_shape,
    load_image,
    load_mask,
    load_weight,
    pick_hdu,
    read_header,
)
from gpualign.io._tiled import STREAM_MIN_PIXELS, TiledFitsWriter, warp_to_fits
from gpualign.io._write import (
    WEIGHT_HDU_NAMES,
    mask_plane,
    output_header,
    result_hdus,
    write_fits_atomic,
)

__all__ = [
    "STREAM_MIN_PIXELS",
    "WEIGHT_HDU_NAMES",
    "ImageInput",
    "TiledFitsWriter",
    "image_shape",
    "load_image",
    "load_mask",
    "load_weight",
    "mask_plane",
    "output_header",
    "pick_hdu",
    "read_header",
    "result_hdus",
    "warp_to_fits",
    "write_fits_atomic",
]
