"""Finding the stars: sep detection (whole images or row strips), and user catalogues."""

from gpualign.detect._catalog import Catalog, as_catalog, catalog_from_table, read_sextractor
from gpualign.detect._sep import detect, detect_many, filter_catalog
from gpualign.detect._settings import DetectSettings
from gpualign.detect._strips import STRIP_DETECT_PIXELS, detect_strips

__all__ = [
    "STRIP_DETECT_PIXELS",
    "Catalog",
    "DetectSettings",
    "as_catalog",
    "catalog_from_table",
    "detect",
    "detect_many",
    "detect_strips",
    "filter_catalog",
    "read_sextractor",
]
