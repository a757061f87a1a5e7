"""Mosaic scale: whole ``gpualign align`` runs on 8k, 16k (and a 30k source), memory-bound.

Fields are written tile by tile by a cheap star-field writer (no full image in memory):
Gaussian stars (pixel-integrated, FWHM 3 px), a sky of 200 ADU with Gaussian noise of
its Poisson + read noise, and a known template -> source mapping from
``gpualign._simulate.make_mapping`` (rotation, shift, radial distortion). The
evaluation stars are the brightest isolated stars inside both images; their true
template positions go to ``truth.json``.

Each run is the CLI in a fresh process (``gpualign align SOURCE -t TEMPLATE -o OUT``),
timed from spawn to exit: ``peak_rss_mb`` is its peak RSS (``wait4``, what
``/usr/bin/time`` reports), ``peak_tree_rss_mb`` the largest total RSS of its process
tree, polled every 0.1 s from /proc/PID/statm (shared pages of forked children counted
in each; no smaps reads, which slow the measured process). Accuracy: each evaluation star's
windowed centroid measured in the output, against its true template position
(``centroid_noise_px`` is the same measurement on the template itself, the floor
set by the centroiding). spalipy runs the same way from the peers' venv (its
Python API, as ``benchmarks/run_peers.py`` calls it) under ``prlimit --as``.

Usage::

    python benchmarks/bench_mosaic.py --data /work/bench-data --sizes 8192 16384 \\
        [--source-sizes 30000] [--spalipy 16384] [--out benchmarks/results/mosaic.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import erf

HERE = Path(__file__).resolve().parent
FWHM = 3.0
SKY = 200.0
DENSITY = 20000 / 8192**2  # stars per pixel, as the wide8k field


# ---------------------------------------------------------------- field writer

def _fits_header(shape: tuple[int, int]) -> bytes:
    from astropy.io import fits

    hdr = fits.PrimaryHDU(np.zeros((1, 1), np.float32)).header
    hdr["NAXIS1"], hdr["NAXIS2"] = shape[1], shape[0]
    hdr["OBJECT"] = "bench_mosaic star field"
    return hdr.tostring().encode("ascii")


def _render_rows(y0: int, y1: int, width: int, xy: np.ndarray, flux: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Rows y0:y1 of a star field: pixel-integrated Gaussians, sky and noise."""
    sigma = FWHM / 2.3548
    r = int(np.ceil(5 * sigma))
    sel = (xy[:, 1] > y0 - r - 1) & (xy[:, 1] < y1 + r + 1)
    cx, cy, f = xy[sel, 0], xy[sel, 1], flux[sel]
    img = np.full((y1 - y0) * width, 0.0, np.float64)
    if len(cx):
        off = np.arange(-r, r + 1)
        ix = np.rint(cx).astype(np.int64)[:, None] + off  # (n, k)
        iy = np.rint(cy).astype(np.int64)[:, None] + off
        s2 = np.sqrt(2) * sigma
        gx = 0.5 * (erf((ix + 0.5 - cx[:, None]) / s2) - erf((ix - 0.5 - cx[:, None]) / s2))
        gy = 0.5 * (erf((iy + 0.5 - cy[:, None]) / s2) - erf((iy - 0.5 - cy[:, None]) / s2))
        vals = (f[:, None, None] * gy[:, :, None] * gx[:, None, :]).ravel()
        yy = np.broadcast_to(iy[:, :, None], (len(cx), len(off), len(off))).ravel()
        xx = np.broadcast_to(ix[:, None, :], (len(cx), len(off), len(off))).ravel()
        ok = (yy >= y0) & (yy < y1) & (xx >= 0) & (xx < width)
        img += np.bincount((yy[ok] - y0) * width + xx[ok], weights=vals[ok],
                           minlength=img.size)
    img += SKY
    gain, read = 2.0, 5.0
    img += rng.standard_normal(img.size) * np.sqrt(img / gain + (read / gain) ** 2)
    return img.reshape(y1 - y0, width).astype(">f4")


def write_field(path: Path, shape: tuple[int, int], xy: np.ndarray, flux: np.ndarray,
                seed: int, rows: int = 256, nan_border: int = 0) -> None:
    """A FITS star field written row block by row block (bounded memory).

    ``nan_border`` pixels along every edge are NaN, as an earlier reprojection leaves
    a mosaic's borders.
    """
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_fits_header(shape))
        for y0 in range(0, shape[0], rows):
            y1 = min(y0 + rows, shape[0])
            rng = np.random.default_rng([seed, y0])
            block = _render_rows(y0, y1, shape[1], xy, flux, rng)
            if nan_border:
                b = nan_border
                block[:, :b] = block[:, shape[1] - b:] = np.nan
                ys = np.arange(y0, y1)
                block[(ys < b) | (ys >= shape[0] - b)] = np.nan
            f.write(block.tobytes())
        n = shape[0] * shape[1] * 4
        f.write(b"\0" * (-n % 2880))
    os.replace(tmp, path)


def _add_source_stars(path: Path) -> None:
    """Add the evaluation stars' true source positions to an older field's truth.

    run_scamp.py scores with them; fields written before they were recorded get them
    from their stored mapping.
    """
    truth = json.loads(path.read_text())
    if "stars_source" in truth:
        return
    from gpualign._simulate import TrueMapping

    xy = np.asarray(truth["stars_template"], dtype=np.float64)
    sx, sy = TrueMapping.from_dict(truth["mapping"])(xy[:, 0], xy[:, 1])
    truth["stars_source"] = np.column_stack([sx, sy]).tolist()
    path.write_text(json.dumps(truth))


def make_field(out: Path, size: int, source_size: int | None = None, seed: int = 7,
               nan_border: int = 0) -> Path:
    """template.fits, source.fits and truth.json of a mosaic field (skipped if present).

    With ``nan_border`` the source's outer ``nan_border`` pixels are NaN.
    """
    from gpualign._simulate import make_mapping

    src_size = source_size or size
    name = (f"mosaic{size}" + (f"-src{src_size}" if source_size else "")
            + (f"-nan{nan_border}" if nan_border else ""))
    d = out / name
    if (d / "truth.json").exists():
        _add_source_stars(d / "truth.json")
        return d
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mapping = make_mapping(source_shape=(src_size, src_size), template_shape=(size, size),
                           rotation_deg=2.0, shift=(-40.3, 27.9),
                           corner_distortion_px=25.0 * size / 8192)
    rng = np.random.default_rng(seed)
    half = 0.5 * max(src_size, size) * 1.05 + 20  # covers the source's footprint too
    lo, hi = 0.5 * size - half, 0.5 * size + half
    n = int(DENSITY * (hi - lo) ** 2)
    xy = rng.uniform(lo, hi, (n, 2))
    u = rng.random(n)
    fmin, fmax, a = 300.0, 3e5, -1.0  # dN/dF ~ F^-2
    flux = (fmin**a + u * (fmax**a - fmin**a)) ** (1 / a)
    sx, sy = mapping(xy[:, 0], xy[:, 1])
    sxy = np.column_stack([sx, sy])
    write_field(d / "template.fits", (size, size), xy, flux, seed * 10 + 1)
    write_field(d / "source.fits", (src_size, src_size), sxy, flux, seed * 10 + 2,
                nan_border=nan_border)
    # evaluation stars: bright, isolated, inside both images away from the edges
    m, ms = 12, 12 + nan_border
    inside = (((xy > m) & (xy < size - 1 - m)).all(1)
              & ((sxy > ms) & (sxy < src_size - 1 - ms)).all(1))
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    cand = np.flatnonzero(inside & (flux > 2e4))
    cand = cand[np.argsort(-flux[cand])][:3000]
    keep = []
    for i in cand:
        near = tree.query_ball_point(xy[i], 8.0)
        if all(j == i or flux[j] < 0.01 * flux[i] for j in near):
            keep.append(i)
        if len(keep) >= 300:
            break
    truth = {"name": name, "template_shape": [size, size], "source_shape": [src_size] * 2,
             "mapping": mapping.to_dict(), "stars_template": xy[keep].tolist(),
             "stars_source": sxy[keep].tolist(),
             "n_stars": n, "generate_s": time.perf_counter() - t0}
    (d / "truth.json").write_text(json.dumps(truth))
    return d


# ---------------------------------------------------------------- measurement

def centroid_errors(image_path: Path, stars: np.ndarray, ext: int = 0) -> np.ndarray:
    """Windowed (Gaussian-weighted, iterated) centroids around ``stars``, minus ``stars``."""
    from astropy.io import fits

    sigma = FWHM / 2.3548
    err = np.full(len(stars), np.nan)
    with fits.open(image_path, memmap=True) as hd:
        data = hd[ext].data
        for k, (x, y) in enumerate(stars):
            ix, iy = int(round(x)), int(round(y))
            cut = np.array(data[iy - 8:iy + 9, ix - 8:ix + 9], dtype=np.float64)
            if cut.shape != (17, 17) or not np.isfinite(cut).all():
                continue
            cut -= np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
            yy, xx = np.mgrid[iy - 8:iy + 9, ix - 8:ix + 9]
            cx, cy = float(ix), float(iy)
            for _ in range(30):
                w = cut * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
                nx, ny = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
                # SExtractor's XWIN: the window's own weight doubles the step
                nx, ny = cx + 2 * (nx - cx), cy + 2 * (ny - cy)
                done = abs(nx - cx) + abs(ny - cy) < 1e-5
                cx, cy = nx, ny
                if done:
                    break
            err[k] = np.hypot(cx - x, cy - y)
    return err


def _private_bytes(pid: int) -> int:
    """Private (unshared) resident bytes of a process, from /proc/PID/smaps_rollup."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


def _tree_rss(proc) -> tuple[float, float, float]:
    """Largest RSS of one process of the tree, the tree's total, and its physical use.

    RSS is read from /proc/PID/statm (psutil memory_info): cheap, no page-table walk.
    (Polling PSS through smaps of the main process every 0.1 s took its memory-map
    lock so often that it slowed a 16k run from 30 s to 45 s.) The total counts the
    pages that forked workers share with the main process (the image they read) once
    per process; the physical use counts them once: the main process's RSS plus each
    worker's private pages (smaps_rollup of the workers only).
    """
    import psutil

    procs = [proc]
    try:
        procs += proc.children(recursive=True)
    except psutil.Error:
        pass
    top = total = phys = 0.0
    for k, p in enumerate(procs):
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        top, total = max(top, rss), total + rss
        phys += rss if k == 0 else _private_bytes(p.pid)
    return top, total, phys


def run_measured(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd``: wall time, its exact peak RSS (wait4), the polled tree RSS and the
    polled physical use of the tree (MB; see :func:`_tree_rss`)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    ps = psutil.Process(proc.pid)
    peak_top = peak_tree = peak_phys = 0.0
    out: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        top, tree, phys = _tree_rss(ps)
        peak_top, peak_tree, peak_phys = max(peak_top, top), max(peak_tree, tree), max(
            peak_phys, phys)
        if time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(max(usage.ru_maxrss / 1024,
                                                                peak_top / 2**20)),
            "peak_tree_rss_mb": round(peak_tree / 2**20),
            "peak_physical_mb": round(max(peak_phys, usage.ru_maxrss * 1024) / 2**20),
            "returncode": proc.returncode,
            "log_tail": "".join(out)[-1500:]}


def machine() -> str:
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GB RAM, {platform.system()}"


def bench_gpualign(field: Path, scratch: Path, timeout: float, backend: str) -> dict:
    truth = json.loads((field / "truth.json").read_text())
    out = scratch / f"{field.name}-gpualign.fits"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "gpualign", "align", str(field / "source.fits"), "-t",
           str(field / "template.fits"), "-o", str(out), "--backend", backend, "-v"]
    rec = {"field": field.name, "tool": "gpualign", **run_measured(cmd, timeout)}
    rec["status"] = "ok" if rec["returncode"] == 0 and out.exists() else "failed"
    stars = np.array(truth["stars_template"])
    if rec["status"] == "ok":
        err = centroid_errors(out, stars)
        base = centroid_errors(field / "template.fits", stars)
        rec.update(rms_px=float(np.sqrt(np.nanmean(err**2))), max_px=float(np.nanmax(err)),
                   n_eval=int(np.isfinite(err).sum()),
                   centroid_noise_px=float(np.sqrt(np.nanmean(base**2))))
        out.unlink()
    return rec


PEER_CODE = {
    "spalipy": (
        "import sys, numpy as np; from astropy.io import fits; import spalipy\n"
        "s = fits.getdata(sys.argv[1]); t = fits.getdata(sys.argv[2])\n"
        "sp = spalipy.Spalipy(s, template_data=t, output_shape=t.shape); sp.align()\n"
        "assert not sp.alignment_failed, 'alignment failed'\n"
        "fits.writeto(sys.argv[3], np.asarray(sp.aligned_data, np.float32))\n"
    ),
    "astroalign": (
        "import sys, numpy as np; from astropy.io import fits; import astroalign\n"
        "s = fits.getdata(sys.argv[1]).astype(np.float32)\n"
        "t = fits.getdata(sys.argv[2]).astype(np.float32)\n"
        "aligned, _ = astroalign.register(s, t)\n"
        "fits.writeto(sys.argv[3], np.asarray(aligned, np.float32))\n"
    ),
}


def bench_peer(tool: str, field: Path, scratch: Path, timeout: float, peers: Path,
               limit_gb: float) -> dict:
    """A peer's whole run (read, align, write) under an address-space limit."""
    out = scratch / f"{field.name}-{tool}.fits"
    out.unlink(missing_ok=True)
    code = PEER_CODE[tool]
    limit = int(limit_gb * 2**30)
    cmd = ["prlimit", f"--as={limit}", str(peers / "bin" / "python"), "-c", code,
           str(field / "source.fits"), str(field / "template.fits"), str(out)]
    rec = {"field": field.name, "tool": tool, "as_limit_gb": limit_gb,
           **run_measured(cmd, timeout)}
    rec["status"] = "ok" if rec["returncode"] == 0 and out.exists() else "failed"
    if rec["status"] == "ok":
        truth = json.loads((field / "truth.json").read_text())
        stars = np.array(truth["stars_template"])
        err = centroid_errors(out, stars)
        rec.update(rms_px=float(np.sqrt(np.nanmean(err**2))), max_px=float(np.nanmax(err)))
        out.unlink()
    else:
        tail = [ln for ln in rec["log_tail"].splitlines() if ln.strip()]
        rec["message"] = tail[-1][:200] if tail else f"exit {rec['returncode']}"
    return rec


def table(records: list[dict]) -> str:
    lines = ["| field | tool | wall s | peak RSS MB | peak tree RSS MB | peak physical MB | "
             "RMS px | centroid floor px | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        rms = f"{r['rms_px']:.4f}" if "rms_px" in r else "-"
        floor = f"{r['centroid_noise_px']:.4f}" if "centroid_noise_px" in r else "-"
        status = r["status"] + (f": {r['message']}" if r.get("message") else "")
        phys = r.get("peak_physical_mb")
        lines.append(f"| {r['field']} | {r['tool']} | {r['wall_s']:.1f} | {r['peak_rss_mb']} | "
                     f"{r['peak_tree_rss_mb']} | {'-' if phys is None else phys} | {rms} | "
                     f"{floor} | {status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    ap.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384])
    ap.add_argument("--source-sizes", type=int, nargs="*", default=[],
                    help="big sources registered onto a 16384^2 template")
    ap.add_argument("--spalipy", type=int, nargs="*", default=[], help="sizes to run spalipy on")
    ap.add_argument("--astroalign", type=int, nargs="*", default=[],
                    help="sizes to run astroalign on")
    ap.add_argument("--nan-border", type=int, nargs="*", default=[],
                    help="also run each size with a source whose outer N px are NaN")
    ap.add_argument("--skip-gpualign", action="store_true", help="peers only")
    ap.add_argument("--peers", type=Path, default=Path("/work/peers-venv"))
    ap.add_argument("--spalipy-limit-gb", type=float, default=20.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mosaic.jsonl")
    ap.add_argument("--note", default="single run on a shared machine (other processes "
                    "running): noisy", help="recorded with the results (machine load...)")
    args = ap.parse_args(argv)
    scratch = args.data / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    jobs = ([(s, None, 0) for s in args.sizes] + [(16384, s, 0) for s in args.source_sizes]
            + [(s, None, b) for s in args.sizes for b in args.nan_border]
            + [(16384, s, b) for s in args.source_sizes for b in args.nan_border])
    records = []
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
             "note": args.note}
    for size, src, border in jobs:
        field = make_field(args.data, size, src, nan_border=border)
        recs = [] if args.skip_gpualign else [bench_gpualign(field, scratch, args.timeout,
                                                              args.backend)]
        for tool in ("spalipy", "astroalign"):
            if size in getattr(args, tool) and src is None and not border:
                recs.append(bench_peer(tool, field, scratch, args.timeout, args.peers,
                                       args.spalipy_limit_gb))
        for rec in recs:
            rec.update(stamp)
            print(json.dumps({k: v for k, v in rec.items() if k != "log_tail"}), flush=True)
            records.append(rec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
