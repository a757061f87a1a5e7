"""Matching the two star lists: quads and their hashes, quad matching, cross-matching."""

from gpualign.match._cross import affine_matrix, apply_matrix, cross_match, similarity_matrix
from gpualign.match._multiscale import multiscale_match, multiscale_quads
from gpualign.match._neighbours import NeighbourIndex
from gpualign.match._quad_match import QuadSolution, quad_match, template_quads
from gpualign.match._quads import build_quads, quad_hashes
from gpualign.match._settings import MatchSettings

__all__ = [
    "MatchSettings",
    "NeighbourIndex",
    "QuadSolution",
    "affine_matrix",
    "apply_matrix",
    "build_quads",
    "cross_match",
    "multiscale_match",
    "multiscale_quads",
    "quad_hashes",
    "quad_match",
    "similarity_matrix",
    "template_quads",
]
