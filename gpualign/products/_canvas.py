"""preserve_footprints: an output canvas that holds both the template and the source.

The canvas is the template grid extended by whole pixels so that the image of the
whole source (every pixel's area, edges at -0.5 and W - 0.5) and the whole template
fit; the template's pixel ``(x, y)`` sits at canvas pixel ``(x + ox, y + oy)``. The
source outline is mapped into the template frame by inverting the fitted mapping
(affine + surfaces) with Newton iterations, at every pixel along the four edges, so
the canvas is right at any scale, rotation, parity and distortion. The mapping used
on the canvas is the fitted one shifted by the offset: exact, nothing refitted.
"""

from __future__ import annotations

import math

import numpy as np

from gpualign.transform import Transform

__all__ = ["grow_canvas", "shift_transform", "invert_points", "source_outline"]


def shift_transform(t: Transform, ox: int, oy: int) -> Transform:
    """``T'(X, Y) = T(X - ox, Y - oy)``: the mapping seen from a canvas offset by (ox, oy)."""
    return t.shifted(ox, oy)


def invert_points(t: Transform, sx: np.ndarray, sy: np.ndarray, *, tol: float = 1e-10,
                  max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Template positions that ``t`` maps onto the source positions (Newton iterations)."""
    lin = t.matrix[:, :2]
    inv = np.linalg.inv(lin)
    d = np.stack([sx - t.matrix[0, 2], sy - t.matrix[1, 2]])
    x, y = inv @ d.reshape(2, -1)
    x, y = x.reshape(np.shape(sx)), y.reshape(np.shape(sy))
    if not t.has_distortion:
        return x, y
    h = 1e-3
    for _ in range(max_iter):
        fx, fy = t(x, y)
        rx, ry = sx - fx, sy - fy
        ax, ay = t(x + h, y)
        bx, by = t(x, y + h)
        j00, j10 = (ax - fx) / h, (ay - fy) / h
        j01, j11 = (bx - fx) / h, (by - fy) / h
        det = j00 * j11 - j01 * j10
        dx = (j11 * rx - j01 * ry) / det
        dy = (j00 * ry - j10 * rx) / det
        x, y = x + dx, y + dy
        if np.max(np.abs(dx)) < tol and np.max(np.abs(dy)) < tol:
            break
    return x, y


def source_outline(shape: tuple[int, int], step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Points along the outer edges of a ``(h, w)`` image (pixel edges at -0.5, w - 0.5)."""
    h, w = shape
    xs = np.linspace(-0.5, w - 0.5, max(2, int(math.ceil(w / step)) + 1))
    ys = np.linspace(-0.5, h - 0.5, max(2, int(math.ceil(h / step)) + 1))
    bx = np.concatenate([xs, xs, np.full_like(ys, -0.5), np.full_like(ys, w - 0.5)])
    by = np.concatenate([np.full_like(xs, -0.5), np.full_like(xs, h - 0.5), ys, ys])
    return bx, by


def grow_canvas(
    t: Transform, source_shape: tuple[int, int], template_shape: tuple[int, int]
) -> tuple[Transform, tuple[int, int], tuple[int, int]]:
    """Canvas holding both footprints.

    Parameters
    ----------
    t : Transform
        Template pixel -> source pixel mapping.
    source_shape, template_shape : tuple of int
        ``(h, w)`` of the images.

    Returns
    -------
    transform : Transform
        Canvas pixel -> source pixel.
    shape : tuple of int
        ``(ny, nx)`` of the canvas.
    offset : tuple of int
        ``(ox, oy)``: canvas position of the template's pixel (0, 0).
    """
    bx, by = invert_points(t, *source_outline(source_shape))
    ny_t, nx_t = template_shape
    eps = 1e-6
    xmin, xmax = min(-0.5, float(bx.min())), max(nx_t - 0.5, float(bx.max()))
    ymin, ymax = min(-0.5, float(by.min())), max(ny_t - 0.5, float(by.max()))
    ox = max(0, int(math.ceil(-0.5 - xmin - eps)))
    oy = max(0, int(math.ceil(-0.5 - ymin - eps)))
    nx = int(math.ceil(xmax + ox + 0.5 - eps))
    ny = int(math.ceil(ymax + oy + 0.5 - eps))
    return shift_transform(t, ox, oy), (ny, nx), (ox, oy)
