"""Multi-scale quads over the whole frame: thin overlaps and extreme scale ratios.

The fallback of :func:`~gpualign.match.quad_match` when the quads of its brightest-star
sets yield no significant solution. As astrometry.net does (Lang et al. 2010, AJ 139,
1782, sect. 2.2-2.3: quads from the brightest stars of cells at several scales), quads
are built in cells of several scale bands covering the whole frame, from the brightest
few stars of each cell, so that any region holding enough stars contributes quads made
of its own stars:

* square cells of the star field's extent / 2**b per side (b = 0 ... :data:`MAX_BAND`),
  each overlapping its neighbours by half, down to cells holding about
  ``CELL_STARS / 2`` stars on average;
* strips along each edge of the star field (the overlap of two tiles of a survey lies
  along an edge of both), of widths extent / 2**(h/2), cut along their length into
  segments of the square bands.

The cells are laid over the stars' bounding box, not the image, so that a NaN border
does not shift them. Every quad of each cell's :data:`CELL_STARS` brightest stars is
kept (a cell in one image and the cell covering most of the same sky in the other share
most of their brightest stars). Matching every band of one image against every band of
the other finds scale ratios up to ~10x blind: the fine image's whole-frame stars
against the coarse image's stars in a cell of its footprint's size.

Candidates are ranked by votes (the number of other candidates implying the same
similarity: a Hough transform over rotation, scale and position), then by hash
distance, and verified at matched depth inside the predicted common footprint: the
stars of each image inside the other's footprint, the brightest ``n`` of the
shallower list and ``DEPTH_FACTOR * n`` of the deeper (the coarse image's stars against
the fine image's inside its footprint, at about the coarse image's depth). The chance
expectation is that of the footprint's area and star density; the candidate's own four
quad stars are not counted. A candidate is accepted when its matches are improbable by
chance (Poisson) even after every candidate that may be tried
(:data:`FALSE_MATCH_RATE` over :data:`MAX_CANDIDATES` trials); its similarity is then
refined on its matched pairs. The work is capped by :data:`MAX_CANDIDATES` and
:data:`MAX_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

from gpualign.match._cross import affine_matrix, apply_matrix, cross_match, similarity_matrix
from gpualign.match._neighbours import NeighbourIndex
from gpualign.match._quads import quad_hashes

log = logging.getLogger("gpualign")

__all__ = ["multiscale_quads", "multiscale_match", "MultiscaleResult"]

#: Brightest stars per cell whose every quad is kept: C(8, 4) = 70 quads.
CELL_STARS = 8
#: Finest band: cells of the field's extent / 2**MAX_BAND per side.
MAX_BAND = 5
#: Stars a cell covering a fraction f of the field looks at: the brightest
#: CELL_DEPTH * CELL_STARS / f of the field.
CELL_DEPTH = 4
#: Candidate quad pairs verified at most, and seconds spent at most.
MAX_CANDIDATES = 3000
MAX_SECONDS = 4.0
#: Accepted chance of a false match over all the candidates tried.
FALSE_MATCH_RATE = 1e-4
#: Hash neighbours looked up per source quad.
HASH_NEIGHBOURS = 4
#: Largest scale ratio between the images considered.
MAX_SCALE_RATIO = 30.0
#: Vote tolerances: log scale, rotation (rad), and the predicted position of the
#: template's star centroid as a fraction of the source's extent.
VOTE_LOG_SCALE, VOTE_ANGLE, VOTE_POSITION = 0.02, 0.02, 0.02
#: Verification stars closer than this (px) to a candidate's own quad stars are left
#: out (they match by construction).
QUAD_STAR_RADIUS = 0.5
#: The deeper image's stars used to verify, in units of the shallower's count.
DEPTH_FACTOR = 2
#: Similarity refinements of an accepted candidate on its matched pairs, and the
#: fraction of extra matches an affine refinement must bring to be kept.
REFINE_PASSES, AFFINE_GAIN = 3, 0.1
#: Extra candidates verified after the first significant one, for a better one.
PATIENCE = 20

_MIRROR = np.diag([-1.0, 1.0])
_COMBOS: dict[int, np.ndarray] = {}


def _combos(k: int) -> np.ndarray:
    if k not in _COMBOS:
        _COMBOS[k] = np.array(list(combinations(range(k), 4)), dtype=np.int64).reshape(-1, 4)
    return _COMBOS[k]


def _cell_ranges(lo: float, hi: float, n: int) -> list[tuple[float, float]]:
    """``2n - 1`` intervals of width (hi - lo) / n over [lo, hi], overlapping by half."""
    width = (hi - lo) / n
    return [(lo + i * width / 2, lo + i * width / 2 + width) for i in range(2 * n - 1)]


def _cells(xy: np.ndarray, per_cell: int) -> list[np.ndarray]:
    """Members (indices, brightest first) of every cell and edge strip of the bands.

    A cell covering a fraction ``f`` of the field looks only at the field's brightest
    ``CELL_DEPTH * per_cell / f`` stars (its own brightest ``per_cell`` are among them
    unless it is several times denser than average), which bounds the work on crowded
    fields.
    """
    n = len(xy)
    lo, hi = xy.min(axis=0), xy.max(axis=0) + 1e-6
    out: list[np.ndarray] = []

    def members(x0: float, x1: float, y0: float, y1: float, fraction: float) -> None:
        sub = xy[:min(n, int(CELL_DEPTH * per_cell / fraction))]
        inside = np.flatnonzero((sub[:, 0] >= x0) & (sub[:, 0] < x1)
                                & (sub[:, 1] >= y0) & (sub[:, 1] < y1))
        if inside.size >= 4:
            out.append(inside[:per_cell])

    # square bands, down to cells holding per_cell / 2 stars on average
    b = 0
    while b == 0 or (n / 4**b >= per_cell / 2 and b <= MAX_BAND):
        k = 2**b
        for x0, x1 in _cell_ranges(lo[0], hi[0], k):
            for y0, y1 in _cell_ranges(lo[1], hi[1], k):
                members(x0, x1, y0, y1, 1.0 / 4**b)
        b += 1
    # edge strips of width extent / 2**(h/2), cut into the square bands' segments
    for h in range(2, 2 * MAX_BAND):
        frac = 2.0 ** (-h / 2)
        for seg in range(0, MAX_BAND):
            if n * frac / 2**seg < per_cell:
                break
            if frac > 0.5 / 2**seg:  # not a strip: as wide as it is long
                continue
            for axis in (0, 1):
                other = 1 - axis
                width = frac * (hi[axis] - lo[axis])
                for a0, a1 in ((lo[axis], lo[axis] + width), (hi[axis] - width, hi[axis])):
                    for b0, b1 in _cell_ranges(lo[other], hi[other], 2**seg):
                        box = (a0, a1, b0, b1) if axis == 0 else (b0, b1, a0, a1)
                        members(*box, frac / 2**seg)
    return out


def _unique_rows(quads: np.ndarray, n: int) -> np.ndarray:
    """Distinct rows of sorted star indices (one 64-bit key per row when they fit)."""
    if n >= 1 << 16:
        return np.unique(quads, axis=0)
    q = quads.astype(np.uint64)
    key = (q[:, 0] << np.uint64(48)) | (q[:, 1] << np.uint64(32)) | (q[:, 2] << np.uint64(16)) \
        | q[:, 3]
    _, first = np.unique(key, return_index=True)
    return quads[first]


def multiscale_quads(xy: np.ndarray, *, per_cell: int = CELL_STARS,
                     min_quad_sep: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Quads of the brightest stars of every cell of every scale band, hashed.

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Star positions, brightest first.
    per_cell : int
        Brightest stars per cell; all their quads are kept.
    min_quad_sep : float
        Smallest quad size (A-B distance, px).

    Returns
    -------
    hashes : ndarray, shape (M, 4)
    quads : ndarray of int, shape (M, 4)
        Star indices ordered A, B, C, D (each set of four stars once).
    """
    if len(xy) < 4:
        return np.zeros((0, 4)), np.zeros((0, 4), np.int64)
    blocks = [m[_combos(len(m))] for m in _cells(xy, per_cell)]
    quads = _unique_rows(np.sort(np.concatenate(blocks), axis=1), len(xy))
    hashes, ordered = quad_hashes(xy, quads)
    size = np.hypot(*(xy[ordered[:, 0]] - xy[ordered[:, 1]]).T)
    keep = size >= min_quad_sep
    return hashes[keep], ordered[keep]


@dataclass
class MultiscaleResult:
    """The accepted candidate.

    Attributes
    ----------
    matrix : ndarray (2, 3)
        Template -> source matrix, refined on its matched pairs.
    n_match : int
        Stars matched at matched depth (its own quad's left out).
    expected : float
        Matches expected by chance in the common footprint.
    mirrored : bool
        Whether the source is a mirror image of the template.
    n_tried : int
        Candidates verified up to this one.
    """

    matrix: np.ndarray
    n_match: int
    expected: float
    mirrored: bool
    n_tried: int


def _similarities(tmpl_xy: np.ndarray, src_xy: np.ndarray) -> np.ndarray:
    """Least-squares similarity of each quad pair, ``z_s = a z_t + b``: (a, b) complex."""
    zt = tmpl_xy[..., 0] + 1j * tmpl_xy[..., 1]  # (M, 4)
    zs = src_xy[..., 0] + 1j * src_xy[..., 1]
    dt = zt - zt.mean(axis=1, keepdims=True)
    a = (np.conj(dt) * (zs - zs.mean(axis=1, keepdims=True))).sum(axis=1) / \
        np.maximum((np.abs(dt) ** 2).sum(axis=1), 1e-300)
    b = zs.mean(axis=1) - a * zt.mean(axis=1)
    return np.column_stack([a, b])


def _votes(ab: np.ndarray, mirrored: np.ndarray, centre: complex, extent: float) -> np.ndarray:
    """Candidates implying the same similarity as each candidate (itself included)."""
    a, b = ab[:, 0], ab[:, 1]
    pos = a * centre + b
    feats = np.column_stack([
        np.log(np.abs(a)) / VOTE_LOG_SCALE,
        np.cos(np.angle(a)) / VOTE_ANGLE, np.sin(np.angle(a)) / VOTE_ANGLE,
        pos.real / (VOTE_POSITION * extent), pos.imag / (VOTE_POSITION * extent),
        mirrored * 1e6,
    ])
    return cKDTree(feats).query_ball_point(feats, r=1.0, return_length=True)


def _polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip(poly: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clipping of a convex polygon by the box [lo, hi]."""
    for axis in (0, 1):
        for bound, sign in ((lo[axis], 1.0), (hi[axis], -1.0)):
            if len(poly) == 0:
                return poly
            out = []
            prev = poly[-1]
            for cur in poly:
                cin, pin = sign * (cur[axis] - bound) >= 0, sign * (prev[axis] - bound) >= 0
                if cin != pin:
                    t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                    out.append(prev + t * (cur - prev))
                if cin:
                    out.append(cur)
                prev = cur
            poly = np.array(out).reshape(-1, 2)
    return poly


class _Verifier:
    """Cross-matching a candidate at matched depth inside the common footprint."""

    def __init__(self, src_xy: np.ndarray, tmpl_xy: np.ndarray, max_match_dist: float,
                 n_trials: int, false_match_rate: float = FALSE_MATCH_RATE) -> None:
        self.src_xy, self.tmpl_xy = src_xy, tmpl_xy
        self.s_lo, self.s_hi = src_xy.min(axis=0), src_xy.max(axis=0)
        self.t_lo, self.t_hi = tmpl_xy.min(axis=0), tmpl_xy.max(axis=0)
        self.max_match_dist = max_match_dist
        self.p_max = false_match_rate / n_trials
        self.s_tree, self.t_tree = cKDTree(src_xy), cKDTree(tmpl_xy)

    def __call__(self, matrix: np.ndarray, quad_tmpl_xy: np.ndarray, mirrored: bool
                 ) -> tuple[int, float, np.ndarray] | None:
        """(matches, chance expectation, refined matrix) or None when not significant.

        The candidate's own quad stars (``quad_tmpl_xy``, template positions) match by
        construction: they are left out of the count.
        """
        lin = matrix[:, :2]
        if abs(np.linalg.det(lin)) < 1e-12:
            return None
        pred = apply_matrix(matrix, self.tmpl_xy)
        in_t = np.all((pred >= self.s_lo) & (pred <= self.s_hi), axis=1)
        d_quad, own = self.t_tree.query(quad_tmpl_xy, distance_upper_bound=QUAD_STAR_RADIUS)
        in_t[own[np.isfinite(d_quad)]] = False
        t_in = np.flatnonzero(in_t)
        inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
        back = apply_matrix(inv, self.src_xy)
        s_in = np.flatnonzero(np.all((back >= self.t_lo) & (back <= self.t_hi), axis=1))
        depth = min(len(t_in), len(s_in))
        if depth < 2:
            return None
        # the deeper list a little deeper: the two brightness orders differ
        t_in, s_in = t_in[:DEPTH_FACTOR * depth], s_in[:DEPTH_FACTOR * depth]
        box = np.array([[self.t_lo[0], self.t_lo[1]], [self.t_hi[0], self.t_lo[1]],
                        [self.t_hi[0], self.t_hi[1]], [self.t_lo[0], self.t_hi[1]]])
        area = _polygon_area(_clip(apply_matrix(matrix, box), self.s_lo, self.s_hi))
        density = len(s_in) / max(area, 1.0)
        tol = float(min(self.max_match_dist, max(1.0, np.sqrt(0.02 / (np.pi * density)))))
        expected = len(t_in) * density * np.pi * tol**2
        # Most candidates are chance ones: a quick count of the stars with a neighbour
        # before the one-to-one cross-match (small lists: on the host).
        d, near_j = self.s_tree.query(pred[t_in], distance_upper_bound=tol)
        in_s = np.zeros(len(self.src_xy) + 1, bool)
        in_s[s_in] = True
        if np.count_nonzero(np.isfinite(d) & in_s[near_j]) < expected + 3:
            return None
        s_pts = self.src_xy[s_in]
        index = NeighbourIndex(s_pts)
        i, j, _ = cross_match(pred[t_in], s_pts, tol, index)
        from scipy.stats import poisson  # loaded only when this fallback stage runs

        if len(i) < expected + 3 or poisson.sf(len(i) - 1, expected) > self.p_max:
            return None
        # Significant: similarity refinements on the matched pairs (the fit that follows
        # cross-matches every star with this matrix), kept while they lose no match;
        # then an affine one, kept only where it gains matches (a shear or two scales;
        # on a thin strip the affine is poorly constrained across it).
        t_pts = self.tmpl_xy[t_in]

        def similarity(frm: np.ndarray, to: np.ndarray) -> np.ndarray:
            if mirrored:
                return _MIRROR @ similarity_matrix(frm, to @ _MIRROR)
            return similarity_matrix(frm, to)

        for fit, passes, gain in ((similarity, REFINE_PASSES, 0),
                                  (affine_matrix, 1, AFFINE_GAIN)):
            for _ in range(passes):
                if len(i) < 6:
                    break
                refined = fit(t_pts[i], s_pts[j])
                i2, j2, _ = cross_match(apply_matrix(refined, t_pts), s_pts, tol, index)
                if len(i2) < len(i) * (1 + gain) or len(i2) == 0:
                    break
                matrix, i, j = refined, i2, j2
        return len(i), float(expected), matrix


def multiscale_match(
    src_xy: np.ndarray, tmpl_xy: np.ndarray, *, verify: tuple[np.ndarray, np.ndarray],
    min_quad_sep: float, max_quad_hash_dist: float, max_match_dist: float,
    min_n_match: int, allow_mirror: bool, tmpl_quads: tuple[np.ndarray, np.ndarray] | None,
    max_candidates: int = MAX_CANDIDATES,
    max_seconds: float = MAX_SECONDS,
    false_match_rate: float = FALSE_MATCH_RATE,
) -> tuple[MultiscaleResult | None, int]:
    """Match multi-scale quads of both images; verify candidates by votes.

    Parameters
    ----------
    src_xy, tmpl_xy : ndarray, shape (N, 2)
        Quad star positions, brightest first.
    verify : tuple of ndarray
        (source, template) positions, brightest first, to verify candidates against.
    min_quad_sep, max_quad_hash_dist, max_match_dist, min_n_match, allow_mirror :
        As :func:`~gpualign.match.quad_match`.
    tmpl_quads : tuple of ndarray, optional
        The template's ``multiscale_quads`` (hashes, quads), when already built.
    max_candidates : int
        Candidates verified at most.
    max_seconds : float
        Seconds spent at most, building and hashing the quads included (checked
        between candidates; the first candidate is always verified).
    false_match_rate : float
        Accepted chance of a false match over all the candidates tried (a caller that
        tries twice splits it between the tries).

    Returns
    -------
    result : MultiscaleResult or None
        The best significant candidate, or None.
    n_candidates : int
        Candidate quad pairs found.
    """
    t0 = time.perf_counter()
    t_hash, t_quads = tmpl_quads if tmpl_quads is not None else multiscale_quads(
        tmpl_xy, min_quad_sep=min_quad_sep)
    if len(t_hash) == 0:
        return None, 0
    t_tree = cKDTree(t_hash)
    pairs_s, pairs_t, dists, parity, quads_s = [], [], [], [], []
    for mirrored in ((False, True) if allow_mirror else (False,)):
        xy = src_xy @ _MIRROR if mirrored else src_xy
        s_hash, s_quads = multiscale_quads(xy, min_quad_sep=min_quad_sep)
        if len(s_hash) == 0:
            continue
        k = min(HASH_NEIGHBOURS, len(t_hash))
        d, j = t_tree.query(s_hash, k=k, distance_upper_bound=max_quad_hash_dist)
        d, j = d.reshape(len(s_hash), k), j.reshape(len(s_hash), k)
        rows, cols = np.nonzero(np.isfinite(d))
        pairs_s.append(s_quads[rows])
        pairs_t.append(t_quads[j[rows, cols]])
        dists.append(d[rows, cols])
        parity.append(np.full(len(rows), mirrored))
        quads_s.append(len(s_quads))
    if not dists or sum(len(d) for d in dists) == 0:
        return None, 0
    sq, tq = np.concatenate(pairs_s), np.concatenate(pairs_t)
    dist, mirrored = np.concatenate(dists), np.concatenate(parity)
    s_pts = src_xy[sq].copy()
    s_pts[mirrored] = s_pts[mirrored] @ _MIRROR
    ab = _similarities(tmpl_xy[tq], s_pts)
    scale = np.abs(ab[:, 0])
    ok = (scale < MAX_SCALE_RATIO) & (scale > 1.0 / MAX_SCALE_RATIO)
    sq, tq, dist, mirrored, ab = sq[ok], tq[ok], dist[ok], mirrored[ok], ab[ok]
    n_cand = len(dist)
    if n_cand == 0:
        return None, 0
    centre = complex(*tmpl_xy.mean(axis=0))
    extent = float(np.max(np.ptp(src_xy, axis=0)))
    votes = _votes(ab, mirrored, centre, extent)
    order = np.lexsort((dist, -votes))[:max_candidates]
    verifier = _Verifier(verify[0], verify[1], max_match_dist, max_candidates,
                         false_match_rate)
    best: MultiscaleResult | None = None
    since_best = 0
    n_tried = 0
    for n_tried, c in enumerate(order, start=1):
        a, b = ab[c]
        m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
        if mirrored[c]:
            m = _MIRROR @ m
        res = verifier(m, tmpl_xy[tq[c]], bool(mirrored[c]))
        if res is not None and res[0] >= min_n_match and (best is None
                                                         or res[0] > best.n_match):
            best = MultiscaleResult(res[2], res[0], res[1], bool(mirrored[c]), n_tried)
            since_best = 0
        elif best is not None:
            since_best += 1
            if since_best >= PATIENCE:
                break
        if time.perf_counter() - t0 > max_seconds:
            break
    log.debug("multi-scale quads: %d source quads, %d template quads, %d candidates, "
              "%d verified in %.2f s: %s", sum(quads_s), len(t_hash), n_cand, n_tried,
              time.perf_counter() - t0,
              "no match" if best is None else f"{best.n_match} matches "
              f"({best.expected:.1f} by chance)")
    return best, n_cand
