"""Matching settings: the quads, their hash tolerance, the search and the cross-match."""

from __future__ import annotations

from dataclasses import dataclass

from gpualign._settings import Settings, setting

__all__ = ["MatchSettings"]


@dataclass(frozen=True)
class MatchSettings(Settings):
    """Quad matching and cross-matching (names as spalipy's, where it has them).

    Attributes
    ----------
    n_quad_det : int
        Brightest stars per quad-building set (per sub-tile).
    min_quad_sep : float
        Smallest quad size (px).
    max_quad_hash_dist : float
        Largest distance between two quads' hash codes for a candidate match.
    max_quad_cand : int
        Candidate quad matches verified at most.
    patience_quad_cand : int
        Stop after this many candidates without a better one.
    quad_edge_buffer : float
        No quad stars this close to the image edges (px).
    sub_tile : int
        Quad stars come from a ``sub_tile x sub_tile`` grid of the image.
    max_match_dist : float
        Cross-match tolerance (px).
    min_n_match : int
        Fewest matched stars accepted.
    allow_mirror : bool
        Also try a mirror image of the source.
    wcs_prior : {"auto", "off"}
        ``"auto"``: when both images carry a celestial WCS, match within its
        uncertainty first (``gpualign.match._prior``), blind if that fails
        verification; ``"off"``: always blind.
    """

    n_quad_det: int = setting(20, "Stars per quad-building set.", kind=int, minimum=4,
                              rule="(a quad has 4 stars)")
    min_quad_sep: float = setting(50.0, "Minimum quad size (px).", minimum=0, above=True)
    max_quad_hash_dist: float = setting(0.01, "Quad hash tolerance.", minimum=0, above=True)
    max_quad_cand: int = setting(50, "Quad candidates verified at most.", kind=int, minimum=1)
    patience_quad_cand: int = setting(5, "Stop after this many candidates without "
                                      "improvement.", kind=int, minimum=1)
    quad_edge_buffer: float = setting(10.0, "No quad stars this close to edges (px).",
                                      minimum=0)
    sub_tile: int = setting(2, "Sub-tile grid for quad stars.", kind=int, minimum=1)
    max_match_dist: float = setting(5.0, "Cross-match tolerance (px).", minimum=0, above=True)
    min_n_match: int = setting(6, "Fewest matched stars accepted.", kind=int, minimum=3)
    allow_mirror: bool = setting(True, "Also try a mirror-image source.", kind=bool,
                                 cli="--mirror")
    wcs_prior: str = setting("auto", "Use both images' WCS to predict the match (auto) or "
                             "match blind (off).", kind=str, choices=("auto", "off"))
