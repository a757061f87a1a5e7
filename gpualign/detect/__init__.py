"""Finding the stars: sep detection (whole images or row strips), and user catalogues."""

from gpualign.detect._catalog import Catalog, as_catalog, catalog_from_table, read_sextractor
from gpualign.detect._depth import (
    DEPTH_LADDER,
    DEPTH_TARGET,
    RETRY_THRESH,
    Depth,
    DetectedCatalog,
    detect_auto,
    detect_many,
    detect_retry,
    detect_strips_auto,
)
from gpualign.detect._sep import detect, filter_catalog, keep_brightest
from gpualign.detect._settings import DetectSettings
from gpualign.detect._strips import STRIP_DETECT_PIXELS, detect_strips

__all__ = [
    "DEPTH_LADDER",
    "DEPTH_TARGET",
    "RETRY_THRESH",
    "STRIP_DETECT_PIXELS",
    "Catalog",
    "Depth",
    "DetectSettings",
    "DetectedCatalog",
    "as_catalog",
    "catalog_from_table",
    "detect",
    "detect_auto",
    "detect_many",
    "detect_retry",
    "detect_strips",
    "detect_strips_auto",
    "filter_catalog",
    "keep_brightest",
    "read_sextractor",
]
