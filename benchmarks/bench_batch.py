"""Batch throughput: 16 frames of 2048^2 against one template, gpualign vs its peers.

The frames see one star field (written by bench_mosaic's tile writer) through 16
known mappings (shifts up to 60 px, rotations up to 3 degrees, a radial distortion
moving the corners 4 px). Both tools run side by side on the same machine, each as a
whole process timed from spawn to exit:

* gpualign: ``gpualign align F00.fits ... F15.fits -t template.fits -o OUTDIR -q``
  (the template detected once, frames in local worker processes);
* spalipy 3.5.5 list mode: ``Spalipy(source_data=[16 arrays], template_data=...)``,
  ``align()``, each aligned frame written as FITS (spalipy's ``align-fits`` command
  cannot run in 3.5.5: its argument parser defines ``--patience-quad-cand`` twice);
* astroalign 2.6.2, which has no batch mode: one process reading the template once and
  running ``find_transform`` + ``apply_transform`` (what ``register`` does) per frame,
  each aligned frame written as FITS;
* SExtractor + SCAMP + SWarp, which has no batch mode either: run_scamp.py's pipeline on
  each frame (given a prior WCS from the frame's true mapping), its tools' time summed
  and its landing errors pooled (:func:`run_scamp_batch`).

Accuracy: windowed centroids of bright isolated stars measured in every output
against their true template positions (bench_mosaic.centroid_errors).

Usage::

    python benchmarks/bench_batch.py [--data /work/bench-data] [--peers /work/peers-venv]
        [--tools gpualign spalipy astroalign] [--note "quiet machine"]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_mosaic as bm  # noqa: E402

N_FRAMES = 16
SIZE = 2048

SPALIPY = """
import sys, time
from pathlib import Path
import numpy as np
from astropy.io import fits
import spalipy
t0 = time.perf_counter()
frames = [Path(p) for p in sys.argv[3:]]
srcs = [fits.getdata(p).astype(np.float64) for p in frames]
tmpl = fits.getdata(sys.argv[1]).astype(np.float64)
sp = spalipy.Spalipy(srcs, template_data=tmpl, output_shape=[tmpl.shape] * len(srcs))
sp.align()
out = Path(sys.argv[2])
for p, data, failed in zip(frames, sp.aligned_data, sp.alignment_failed):
    if not failed:
        fits.writeto(out / (p.stem + "_aligned.fits"), np.asarray(data, np.float32))
print("spalipy", spalipy.__version__ if hasattr(spalipy, "__version__") else "?",
      time.perf_counter() - t0)
"""

ASTROALIGN = """
import sys, time
from pathlib import Path
import numpy as np
from astropy.io import fits
import astroalign
t0 = time.perf_counter()
tmpl = fits.getdata(sys.argv[1]).astype(np.float32)
out = Path(sys.argv[2])
for p in map(Path, sys.argv[3:]):
    src = fits.getdata(p).astype(np.float32)
    try:
        tf, _ = astroalign.find_transform(src, tmpl)
        data, _ = astroalign.apply_transform(tf, src, tmpl)
    except Exception as exc:  # a failed frame does not stop the others
        print(p.name, "failed:", exc)
        continue
    fits.writeto(out / (p.stem + "_aligned.fits"), np.asarray(data, np.float32))
print("astroalign", astroalign.__version__, time.perf_counter() - t0)
"""


def make_batch(root: Path, seed: int = 11) -> Path:
    """template.fits, F00..F15.fits and truth.json (skipped if present)."""
    from gpualign._simulate import make_mapping

    d = root / f"batch{N_FRAMES}x{SIZE}"
    if (d / "truth.json").exists() and "mappings" in json.loads((d / "truth.json").read_text()):
        return d  # (older batches lack the mappings SCAMP's run needs: written again)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    half = 0.5 * SIZE * 1.1 + 80
    n = int(3000 * (2 * half) ** 2 / SIZE**2)
    xy = rng.uniform(0.5 * SIZE - half, 0.5 * SIZE + half, (n, 2))
    u = rng.random(n)
    flux = (300.0**-1 + u * (3e5**-1 - 300.0**-1)) ** -1
    bm.write_field(d / "template.fits", (SIZE, SIZE), xy, flux, seed * 100)
    frames, mappings = [], {}
    for k in range(N_FRAMES):
        mp = make_mapping(source_shape=(SIZE, SIZE), template_shape=(SIZE, SIZE),
                          shift=tuple(rng.uniform(-60, 60, 2)),
                          rotation_deg=float(rng.uniform(-3, 3)), corner_distortion_px=4.0)
        mappings[f"F{k:02d}"] = mp.to_dict()
        sx, sy = mp(xy[:, 0], xy[:, 1])
        bm.write_field(d / f"F{k:02d}.fits", (SIZE, SIZE), np.column_stack([sx, sy]), flux,
                       seed * 100 + k + 1)
        inside = ((xy > 12) & (xy < SIZE - 13)).all(1)
        inside &= (sx > 12) & (sx < SIZE - 13) & (sy > 12) & (sy < SIZE - 13)
        frames.append(np.flatnonzero(inside))
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    iso = np.array([all(j == i or flux[j] < 0.01 * flux[i]
                        for j in tree.query_ball_point(xy[i], 8.0)) if flux[i] > 2e4 else False
                    for i in range(n)])
    truth = {"frames": {f"F{k:02d}": xy[idx[iso[idx]]][:100].tolist()
                        for k, idx in enumerate(frames)},
             "mappings": mappings}
    (d / "truth.json").write_text(json.dumps(truth))
    return d


def run_scamp_batch(d: Path, truth: dict, work: Path, peers_python: Path,
                    timeout: float) -> dict:
    """SExtractor + SCAMP + SWarp on every frame (it has no batch mode).

    Each frame becomes a run_scamp.py field (the template, the frame as the source, its
    true mapping for the prior WCS and the evaluation stars' positions); the record
    sums the tools' time over the frames (no start-up: they are C programs) and pools
    the landing errors (RMS over all stars, the largest max).
    """
    from gpualign._simulate import TrueMapping

    fields = work / "fields"
    shutil.rmtree(fields, ignore_errors=True)
    for name, stars in truth["frames"].items():
        f = fields / name
        f.mkdir(parents=True)
        (f / "template.fits").symlink_to(d / "template.fits")
        (f / "source.fits").symlink_to(d / f"{name}.fits")
        xy = np.asarray(stars, dtype=np.float64)
        mapping = truth["mappings"][name]
        sx, sy = TrueMapping.from_dict(mapping)(xy[:, 0], xy[:, 1])
        (f / "truth.json").write_text(json.dumps({
            "name": name, "template_shape": [SIZE, SIZE], "source_shape": [SIZE, SIZE],
            "mapping": mapping, "stars_template": xy.tolist(),
            "stars_source": np.column_stack([sx, sy]).tolist()}))
    out = work / "scamp.jsonl"
    subprocess.run([str(peers_python), str(HERE / "run_scamp.py"), "--fields", str(fields),
                    "--out", str(out), "--timeout", str(timeout)], check=False,
                   capture_output=True, timeout=timeout * N_FRAMES)
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    ok = [r for r in recs if r.get("status") == "ok"]
    if not ok:
        return {"wall_s": float("nan"), "frames_ok": 0, "status": "failed",
                "message": "; ".join(str(r.get("message", "")) for r in recs)[:300]}
    n = np.array([r["n_stars"] for r in ok], dtype=float)
    rms = np.array([r["rms_px"] for r in ok])
    return {"wall_s": float(sum(r["wall_s"] for r in recs)), "frames_ok": len(ok),
            "rms_px": float(np.sqrt(np.sum(n * rms**2) / np.sum(n))),
            "max_px": float(max(r["max_px"] for r in ok)),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in ok)), "peak_tree_rss_mb": None,
            "returncode": 0 if len(ok) == N_FRAMES else 1,
            "note_timing": "sum of the four tools' run times over the 16 frames",
            "status": "ok" if len(ok) == N_FRAMES else "partial"}


def accuracy(outdir: Path, truth: dict) -> dict:
    errs, done = [], 0
    for name, stars in truth["frames"].items():
        out = outdir / f"{name}_aligned.fits"
        if out.exists():
            done += 1
            errs.append(bm.centroid_errors(out, np.array(stars)))
    e = np.concatenate(errs) if errs else np.array([np.nan])
    return {"frames_ok": done, "rms_px": float(np.sqrt(np.nanmean(e**2))),
            "max_px": float(np.nanmax(e))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    ap.add_argument("--peers", type=Path, default=Path("/work/peers-venv"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batch.jsonl")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--tools", nargs="+", default=["gpualign", "spalipy", "astroalign", "scamp"],
                    help="scamp: SExtractor + SCAMP + SWarp per frame (run_scamp.py)")
    ap.add_argument("--note", default="single run on a shared machine (other processes "
                    "running): noisy", help="recorded with the results (machine load...)")
    args = ap.parse_args(argv)
    d = make_batch(args.data)
    truth = json.loads((d / "truth.json").read_text())
    frames = [str(d / f"F{k:02d}.fits") for k in range(N_FRAMES)]
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "machine": bm.machine(), "frames": N_FRAMES, "size": SIZE,
             "note": args.note}
    records = []
    for tool in args.tools:
        outdir = args.data / "scratch" / f"batch-{tool}"
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True)
        if tool == "scamp":
            rec = {"tool": "scamp+swarp", **stamp, **run_scamp_batch(
                d, truth, outdir, args.peers / "bin" / "python", args.timeout)}
            rec["frames_per_s"] = N_FRAMES / rec["wall_s"]
            print(json.dumps(rec), flush=True)
            records.append(rec)
            shutil.rmtree(outdir, ignore_errors=True)
            continue
        if tool == "gpualign":
            cmd = [sys.executable, "-m", "gpualign", "align", *frames, "-t",
                   str(d / "template.fits"), "-o", str(outdir), "-q"]
        else:
            script = {"spalipy": SPALIPY, "astroalign": ASTROALIGN}[tool]
            cmd = [str(args.peers / "bin" / "python"), "-c", script,
                   str(d / "template.fits"), str(outdir), *frames]
        rec = {"tool": tool, **bm.run_measured(cmd, args.timeout), **stamp}
        rec["frames_per_s"] = N_FRAMES / rec["wall_s"]
        rec.update(accuracy(outdir, truth))
        rec["status"] = "ok" if rec["returncode"] == 0 else "failed"
        print(json.dumps({k: v for k, v in rec.items() if k != "log_tail"}), flush=True)
        records.append(rec)
        shutil.rmtree(outdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print("| tool | wall s | frames/s | peak RSS MB (one process) | peak tree RSS MB | "
          "frames ok | RMS px |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(f"| {r['tool']} | {r['wall_s']:.1f} | {r['frames_per_s']:.2f} | "
              f"{r['peak_rss_mb']} | {r['peak_tree_rss_mb']} | {r['frames_ok']}/{N_FRAMES} | "
              f"{r.get('rms_px', float('nan')):.4f} |")
    by = {r["tool"]: r for r in records}
    for peer in ("spalipy", "astroalign", "scamp+swarp"):
        if "gpualign" in by and peer in by:
            print(f"speed-up gpualign / {peer}: "
                  f"{by[peer]['wall_s'] / by['gpualign']['wall_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
