"""Detection settings: how deep sep looks and which detections may be tie-points."""

from __future__ import annotations

from dataclasses import dataclass

from gpualign._settings import Settings, setting

__all__ = ["DetectSettings"]


@dataclass(frozen=True)
class DetectSettings(Settings):
    """Detection and catalogue filtering.

    Attributes
    ----------
    sep_thresh : float
        Detection threshold in units of the background RMS.
    min_fwhm : float
        Detections narrower than this (px) are dropped (hot pixels).
    bad_flag_bits : int
        Detections with any of these flag bits are dropped.
    min_sep : float or None
        Crowding filter: drop detections with a neighbour closer than this (px);
        default ``2 * max_match_dist``; 0 disables.
    n_det : float or None
        Number (or fraction, < 1) of the brightest detections to use.
    flux_col : str or None
        Flux column of user catalogues (e.g. ``FLUX_AUTO``).
    auto_depth : bool
        When an image gives fewer than 20 usable stars, detect it again at lower
        thresholds, down to 1.5 sigma (``gpualign.detect._depth``); when blind
        matching finds nothing, detect both images at 3 sigma and match once more
        (``gpualign.pipeline.solve_frame``).
    """

    sep_thresh: float = setting(5.0, "Detection threshold (sigma).", minimum=0, above=True)
    min_fwhm: float = setting(1.0, "Minimum FWHM of a star (px).", minimum=0)
    bad_flag_bits: int = setting(0, "Drop detections with these flags.", kind=int, minimum=0)
    min_sep: float | None = setting(None, "Crowding filter (px); default 2*max-match-dist.",
                                    minimum=0, optional=True)
    n_det: float | None = setting(None, "Brightest detections used: count, or fraction < 1.",
                                  minimum=0, above=True, optional=True)
    flux_col: str | None = setting(None, "Flux column of the catalogues, e.g. FLUX_AUTO.",
                                   kind=str, optional=True)
    auto_depth: bool = setting(True, "Detect deeper (down to 1.5 sigma) when an image gives "
                               "fewer than 20 usable stars, and at 3 sigma when blind "
                               "matching finds nothing.", kind=bool)
