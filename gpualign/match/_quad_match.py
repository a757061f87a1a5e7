"""Quad matching: hash candidates between the images' quads, verified by cross-matching."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpualign._errors import NoQuadMatch, TooFewStars
from gpualign.backend import Backend
from gpualign.detect._catalog import Catalog
from gpualign.match._cross import affine_matrix, apply_matrix, cross_match, similarity_matrix
from gpualign.match._multiscale import FALSE_MATCH_RATE, multiscale_match, multiscale_quads
from gpualign.match._neighbours import NeighbourIndex
from gpualign.match._quads import build_quads

log = logging.getLogger("gpualign")

__all__ = ["QuadSolution", "quad_match", "template_quads"]

_MIRROR = np.diag([-1.0, 1.0])


@dataclass
class QuadSolution:
    """The initial mapping found from quads.

    Attributes
    ----------
    matrix : ndarray (2, 3)
        Affine template -> source matrix.
    n_match : int
        Stars cross-matched with it.
    n_expected_chance : float
        Matches expected by chance at that tolerance.
    mirrored : bool
        Whether the source is a mirror image of the template.
    n_candidates : int
        Quad candidates verified.
    multiscale : bool
        Whether the multi-scale fallback (:mod:`gpualign.match._multiscale`) found it.
    """

    matrix: np.ndarray
    n_match: int
    n_expected_chance: float
    mirrored: bool
    n_candidates: int
    multiscale: bool = False


def _hash_candidates(
    src_hash: np.ndarray, tmpl_index: NeighbourIndex, max_dist: float, k: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(src_hash) == 0 or tmpl_index.n == 0:
        e = np.zeros(0, np.int64)
        return np.zeros(0), e, e
    d, j = tmpl_index.query(src_hash, k=min(k, tmpl_index.n), max_dist=max_dist)
    ok = np.isfinite(d)
    rows = np.nonzero(ok)[0]
    return d[ok], rows, j[ok]


def _verify_tolerance(src_xy: np.ndarray, src_shape: tuple[int, int] | None, tol: float) -> float:
    """Tolerance for verifying candidates in a field of this star density.

    At most ``tol``, and tight enough that a random star has about a 2% chance of a
    false match (crowded fields), but never under 1 px.
    """
    if src_shape is not None:
        area = float(src_shape[0] * src_shape[1])
    else:
        area = float(max(np.prod(np.ptp(src_xy, axis=0)), 1.0))
    density = len(src_xy) / area
    return float(min(tol, max(1.0, np.sqrt(0.02 / (np.pi * max(density, 1e-12))))))


def _score(
    matrix: np.ndarray, tmpl_xy: np.ndarray, src_xy: np.ndarray, src_tree: NeighbourIndex,
    src_shape: tuple[int, int] | None, tol: float,
) -> tuple[int, float, np.ndarray]:
    """Matches of a candidate and the chance expectation.

    One affine refinement on the matched stars is tried and kept only when it matches
    more stars; otherwise the candidate's own similarity is returned (the fit refines
    the mapping later in any case).
    """
    pred = apply_matrix(matrix, tmpl_xy)
    i, j, _ = cross_match(pred, src_xy, tol, src_tree)
    if len(i) >= 6:
        refined = affine_matrix(tmpl_xy[i], src_xy[j])
        pred2 = apply_matrix(refined, tmpl_xy)
        i2, j2, _ = cross_match(pred2, src_xy, tol, src_tree)
        if len(i2) > len(i):
            matrix, i, pred = refined, i2, pred2
    if src_shape is not None:
        ny, nx = src_shape
        inside = ((pred[:, 0] > -0.5) & (pred[:, 0] < nx - 0.5)
                  & (pred[:, 1] > -0.5) & (pred[:, 1] < ny - 0.5))
        area = float(nx * ny)
    else:
        lo, hi = src_xy.min(axis=0), src_xy.max(axis=0)
        inside = np.all((pred >= lo) & (pred <= hi), axis=1)
        area = float(max(np.prod(hi - lo), 1.0))
    expected = inside.sum() * len(src_xy) / area * np.pi * tol**2
    return len(i), float(expected), matrix


#: Template quads kept for reuse (a batch matches every frame against one template).
TEMPLATE_QUADS_KEPT = 4
_TEMPLATE_QUADS: OrderedDict = OrderedDict()
_TEMPLATE_QUADS_LOCK = threading.Lock()


def template_quads(
    tmpl: Catalog, backend: Backend | None, builder: Callable | None = None,
    **kw: float | int
) -> tuple[np.ndarray, np.ndarray, NeighbourIndex]:
    """The template's quad hash codes, quads and hash index, built once per template.

    Keyed by the template's star positions (a digest of their bytes), its shape, the
    quad dials and the backend, so that the frames of a batch (in one process, or in
    worker processes forked after the first) hash the template once; the last
    :data:`TEMPLATE_QUADS_KEPT` templates are kept. The index is read-only after it
    is built, so sharing it is safe.

    Parameters
    ----------
    tmpl : Catalog
        Filtered template catalogue.
    backend : Backend or None
        Where the hash index's queries run.
    builder : callable, optional
        ``builder(xy, shape, **kw) -> (hashes, quads)``; default :func:`build_quads`.
    **kw
        ``n_quad_det``, ``min_quad_sep``, ``sub_tile`` for :func:`build_quads` (or the
        builder's own arguments).

    Returns
    -------
    hashes, quads : ndarray
        As :func:`gpualign._quads.build_quads`.
    index : NeighbourIndex
        Neighbour index over the hashes.
    """
    xy = np.ascontiguousarray(tmpl.xy, dtype=np.float64)
    key = (hashlib.sha1(xy.tobytes()).hexdigest(), xy.shape,
           None if tmpl.shape is None else tuple(int(v) for v in tmpl.shape),
           tuple(sorted(kw.items())), None if builder is None else builder.__name__,
           None if backend is None else (backend.name, id(backend.xp)))
    with _TEMPLATE_QUADS_LOCK:
        hit = _TEMPLATE_QUADS.get(key)
        if hit is not None:
            _TEMPLATE_QUADS.move_to_end(key)
            return hit
    t_hash, t_quads = (build_quads if builder is None else builder)(xy, tmpl.shape, **kw)
    entry = (t_hash, t_quads, NeighbourIndex(t_hash, backend))
    with _TEMPLATE_QUADS_LOCK:
        _TEMPLATE_QUADS[key] = entry
        while len(_TEMPLATE_QUADS) > TEMPLATE_QUADS_KEPT:
            _TEMPLATE_QUADS.popitem(last=False)
    return entry


def _multiscale_builder(xy: np.ndarray, shape: tuple[int, int] | None, *,
                        min_quad_sep: float) -> tuple[np.ndarray, np.ndarray]:
    return multiscale_quads(xy, min_quad_sep=min_quad_sep)


def _multiscale_fallback(
    src: Catalog, tmpl: Catalog, verify: tuple[np.ndarray, np.ndarray],
    **kw: float | int | bool,
) -> tuple[QuadSolution | None, int]:
    """The multi-scale quads' solution (or None) and their candidate count."""
    t_hash, t_quads, _ = template_quads(tmpl, None, builder=_multiscale_builder,
                                        min_quad_sep=kw["min_quad_sep"])
    found, n_cand = multiscale_match(src.xy, tmpl.xy, verify=verify,
                                     tmpl_quads=(t_hash, t_quads), **kw)
    if found is None:
        log.debug("multi-scale quads: no significant match among %d candidates", n_cand)
        return None, n_cand
    log.info("quad match by multi-scale quads (thin overlap or scale ratio): %d stars "
             "(%.1f by chance)", found.n_match, found.expected)
    return QuadSolution(found.matrix, found.n_match, found.expected, found.mirrored,
                        found.n_tried, multiscale=True), n_cand


def quad_match(
    src: Catalog,
    tmpl: Catalog,
    *,
    n_quad_det: int = 20,
    min_quad_sep: float = 50.0,
    max_quad_hash_dist: float = 0.01,
    max_quad_cand: int = 50,
    patience_quad_cand: int = 5,
    sub_tile: int = 2,
    max_match_dist: float = 5.0,
    min_n_match: int = 6,
    allow_mirror: bool = True,
    n_verify: int = 1000,
    verify: tuple[Catalog, Catalog] | None = None,
    backend: Backend | None = None,
    false_match_rate: float = FALSE_MATCH_RATE,
) -> QuadSolution:
    """Find the initial template -> source mapping from matching quad hashes.

    Candidates (pairs of quads whose hashes lie within ``max_quad_hash_dist``) are
    verified in order of hash distance: the candidate's similarity maps the
    template stars onto the source, which are cross-matched within
    ``max_match_dist``; the best candidate wins. The search stops after
    ``max_quad_cand`` candidates, or ``patience_quad_cand`` candidates without
    improvement once a significant solution is found. A solution is significant
    when it matches at least ``min_n_match`` stars and far more than expected by
    chance for the density of stars (crowded fields). Both parities are tried
    unless ``allow_mirror`` is False.

    When no candidate is significant, quads of every scale band over the whole frame
    are matched (:mod:`gpualign.match._multiscale`): thin overlaps, where the
    brightest stars rarely lie in the common region, and scale ratios up to ~10x.
    Their candidates are verified at matched depth inside the predicted common
    footprint, against the chance of a false match over all the candidates tried.

    Parameters
    ----------
    src, tmpl : Catalog
        Filtered catalogues, brightest first.
    n_quad_det, min_quad_sep, sub_tile : see :func:`gpualign._quads.build_quads`.
    max_quad_hash_dist : float
        Maximum Euclidean distance between matching hash codes.
    max_quad_cand, patience_quad_cand : int
        Search limits (see above).
    max_match_dist : float
        Cross-match tolerance in source pixels.
    min_n_match : int
        Fewest matched stars accepted.
    allow_mirror : bool
        Also try a mirror-image source.
    n_verify : int
        Brightest stars of each list used to verify candidates.
    verify : tuple of Catalog, optional
        (source, template) catalogues to verify candidates against, when the quads
        come from a subset (e.g. stars away from the edges); default ``src, tmpl``.
    backend : Backend, optional
        Where neighbour queries run (KD-tree on the CPU, distance matrices on a GPU).
    false_match_rate : float
        Accepted chance that the multi-scale stage accepts a false match, over all its
        candidates (a caller that matches twice splits it between the tries).

    Returns
    -------
    QuadSolution

    Raises
    ------
    TooFewStars
        Fewer than 4 usable stars in one of the lists.
    NoQuadMatch
        No candidate reached ``min_n_match`` significant matches, in either stage.
    """
    for name, cat in (("source", src), ("template", tmpl)):
        if len(cat) < 4:
            raise TooFewStars(
                f"only {len(cat)} usable stars in the {name} (4 are needed for a quad)",
                hint="lower sep_thresh or min_fwhm, or check the image",
            )
    src_xy, tmpl_xy = src.xy, tmpl.xy
    kw = dict(n_quad_det=n_quad_det, min_quad_sep=min_quad_sep, sub_tile=sub_tile)
    t_hash, t_quads, t_tree = template_quads(tmpl, backend, **kw)
    if len(t_hash) == 0:
        raise NoQuadMatch(
            "no quads could be built from the template stars",
            hint=f"stars may be closer together than min_quad_sep={min_quad_sep}",
        )
    candidates = []  # (hash distance, mirrored, source quad, template quad)
    parities = (False, True) if allow_mirror else (False,)
    src_quads_by_parity = {}
    for mirrored in parities:
        xy = src_xy @ _MIRROR if mirrored else src_xy
        s_hash, s_quads = build_quads(xy, src.shape, **kw)
        src_quads_by_parity[mirrored] = s_quads
        d, si, ti = _hash_candidates(s_hash, t_tree, max_quad_hash_dist)
        candidates += [(dd, mirrored, a, b) for dd, a, b in zip(d, si, ti, strict=True)]
    candidates.sort(key=lambda c: c[0])
    v_src_cat, v_tmpl_cat = verify if verify is not None else (src, tmpl)
    v_src, v_tmpl = v_src_cat.xy[:n_verify], v_tmpl_cat.xy[:n_verify]
    src_tree = NeighbourIndex(v_src, backend)
    v_tol = _verify_tolerance(v_src, v_src_cat.shape, max_match_dist)
    best: QuadSolution | None = None
    since_best = 0
    for n_tried, (_, mirrored, si, ti) in enumerate(candidates[:max_quad_cand], start=1):
        sq = src_quads_by_parity[mirrored][si]
        tq = t_quads[ti]
        if mirrored:
            m = _MIRROR @ similarity_matrix(tmpl_xy[tq], src_xy[sq] @ _MIRROR)
        else:
            m = similarity_matrix(tmpl_xy[tq], src_xy[sq])
        n, expected, m = _score(m, v_tmpl, v_src, src_tree, v_src_cat.shape, v_tol)
        # Far in the Poisson tail of the chance matches expected at this density.
        significant = n >= min_n_match and n >= expected + 6.0 * np.sqrt(expected) + 3
        if significant and (best is None or n > best.n_match):
            best = QuadSolution(m, n, expected, mirrored, n_tried)
            since_best = 0
        elif best is not None:
            since_best += 1
            if since_best >= patience_quad_cand:
                break
    n_multiscale = 0
    if best is None:
        # Thin overlaps and extreme scale ratios: quads of every scale band.
        best, n_multiscale = _multiscale_fallback(
            src, tmpl, (v_src_cat.xy, v_tmpl_cat.xy), min_quad_sep=min_quad_sep,
            max_quad_hash_dist=max_quad_hash_dist, max_match_dist=max_match_dist,
            min_n_match=min_n_match, allow_mirror=allow_mirror,
            false_match_rate=false_match_rate)
    if best is None:
        raise NoQuadMatch(
            f"no quad match: {len(candidates)} candidate quad pairs (and {n_multiscale} "
            f"multi-scale), none matched {min_n_match} stars",
            hint="the images may not overlap; try a larger max_quad_hash_dist, "
            "max_quad_cand or n_quad_det, or a lower min_n_match",
        )
    if not best.multiscale:
        best.n_candidates = min(len(candidates), max_quad_cand)
    log.debug(
        "quad match: %d stars (%.1f by chance), mirrored=%s, %d candidates",
        best.n_match, best.n_expected_chance, best.mirrored, len(candidates),
    )
    return best
