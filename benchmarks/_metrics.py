"""Tool-agnostic accuracy metric shared by the benchmark runners (NumPy/SciPy only).

The error of a registration at a star truly at template position ``p`` (true
source position ``s``) is where the star lands after the source is resampled
with the tool's fitted template -> source map ``F``: the template position
``q`` with ``F(q) = s``; the error is ``|q - p|`` in template pixels.  This is
the same quantity as ``gpualign._simulate.position_errors`` (which this module
must not import: it also runs in the peers' virtual environment).

For tools that do not expose ``F`` as a function, ``F`` is read off two
coordinate ramp images (``ramp_x[y, x] = x``, ``ramp_y[y, x] = y`` on the
source grid) resampled by the tool's own warp with order-1 interpolation:
the resampled ramps hold ``F`` at every template pixel, and bilinear
interpolation between pixels adds the sub-pixel part (the local gradient).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from datetime import datetime, timezone

import numpy as np
from scipy import ndimage


def source_ramps(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 images holding their own x and y pixel coordinates."""
    h, w = shape
    ramp_x = np.broadcast_to(np.arange(w, dtype=np.float64), (h, w)).copy()
    ramp_y = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w)).copy()
    return ramp_x, ramp_y


class RampMap:
    """Template -> source map read off resampled coordinate ramps (bilinear)."""

    def __init__(self, resampled_x: np.ndarray, resampled_y: np.ndarray):
        self.rx = np.asarray(resampled_x, dtype=np.float64)
        self.ry = np.asarray(resampled_y, dtype=np.float64)

    def __call__(self, x, y):
        coords = np.array([np.ravel(y), np.ravel(x)])
        kw = dict(order=1, mode="constant", cval=np.nan, prefilter=False)
        sx = ndimage.map_coordinates(self.rx, coords, **kw).reshape(np.shape(x))
        sy = ndimage.map_coordinates(self.ry, coords, **kw).reshape(np.shape(x))
        return sx, sy


def landing_errors(fitted, stars_template, stars_source, *, step=1e-2, tol=1e-9, max_iter=50):
    """Return ``|q - p|`` with ``fitted(q) = s`` (Newton, numerical Jacobian from ``p``).

    NaN where ``fitted`` is not finite (e.g. the star falls outside the tool's
    footprint) or the iteration does not converge.
    """
    p = np.asarray(stars_template, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(stars_source, dtype=np.float64).reshape(-1, 2)

    def f(x, y):
        fx, fy = fitted(x, y)
        return np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)

    qx, qy = p[:, 0].copy(), p[:, 1].copy()
    converged = np.zeros(len(p), dtype=bool)
    for _ in range(max_iter):
        fx, fy = f(qx, qy)
        rx, ry = s[:, 0] - fx, s[:, 1] - fy
        ax, ay = f(qx + step, qy)
        bx, by = f(qx - step, qy)
        j00, j10 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        ax, ay = f(qx, qy + step)
        bx, by = f(qx, qy - step)
        j01, j11 = (ax - bx) / (2 * step), (ay - by) / (2 * step)
        det = j00 * j11 - j01 * j10
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (j11 * rx - j01 * ry) / det
            dy = (j00 * ry - j10 * rx) / det
        qx, qy = qx + dx, qy + dy
        converged = np.hypot(dx, dy) < tol
        if np.all(converged | ~np.isfinite(dx)):
            break
    err = np.hypot(qx - p[:, 0], qy - p[:, 1])
    err[~converged] = np.nan
    return err


def error_stats(errors) -> dict:
    """RMS / max / median over the finite errors, with the counts."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    fin = e[np.isfinite(e)]
    out = {"n_stars": int(e.size), "n_nonfinite": int(e.size - fin.size)}
    if fin.size == 0:
        return {**out, "rms_px": None, "max_px": None, "median_px": None}
    return {
        **out,
        "rms_px": float(np.sqrt(np.mean(fin**2))),
        "max_px": float(fin.max()),
        "median_px": float(np.median(fin)),
    }


def load_truth(field_dir) -> dict:
    """Read ``truth.json`` of a field folder."""
    with open(os.path.join(field_dir, "truth.json")) as fh:
        return json.load(fh)


def peak_rss_mb_self() -> float:
    """Peak resident set size of this process so far, MB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
    """One-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        mem_gb = float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GB RAM, {platform.system()}"


def now() -> str:
    """UTC timestamp."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Timer:
    """Context manager measuring wall time in seconds (``.s``)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False
