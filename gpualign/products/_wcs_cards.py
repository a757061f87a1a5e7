"""The output WCS as header cards, without importing astropy.wcs when no header has one."""

from __future__ import annotations

from typing import Any

from astropy.io import fits

from gpualign.transform import Transform

__all__ = ["has_ctype", "output_wcs_cards"]


def has_ctype(header: fits.Header | None) -> bool:
    """Whether ``header`` has a CTYPEi card (a celestial WCS cannot exist without one).

    Checked before anything imports ``astropy.wcs`` for a header (about 0.15 s).
    """
    return header is not None and any(str(k).startswith("CTYPE") for k in header)


def output_wcs_cards(template_header: fits.Header | None, source_header: fits.Header | None,
                     transform: Transform, shape: tuple[int, int],
                     offset: tuple[int, int] = (0, 0)) -> tuple[Any, fits.Header]:
    """The output's WCS and the header cards that describe it.

    The template's WCS is kept as its own cards (rewritten only when a canvas offset
    moves it); a WCS composed from the source's is written as new cards. ``GA_WCS``
    says which (``template``, ``source+transform`` or ``none``) and ``GA_WCSER`` the
    largest error of a composed one.
    """
    cards = fits.Header()
    w, origin, err = None, "none", 0.0
    if has_ctype(template_header) or has_ctype(source_header):
        from gpualign.products._wcs import output_wcs, wcs_header

        w, origin, err = output_wcs(template_header, source_header, transform, shape, offset)
    if w is not None and not (origin == "template" and tuple(offset) == (0, 0)):
        cards.update(wcs_header(w))
    cards["GA_WCS"] = (origin, "WCS from: template, source+transform, none")
    if origin == "source+transform":
        cards["GA_WCSER"] = (float(err), "max error of composed WCS (src px)")
    return w, cards
