"""Run the peer registration tools (spalipy, astroalign) on the benchmark fields.

Runs under the peers' virtual environment (see setup_peers.sh); never imports
gpualign.  Each (tool, field) runs in a fresh worker process that

1. reads source.fits and template.fits, detects, matches, fits and warps with
   the tool's own defaults, and writes the aligned FITS: the timed part.
   ``wall_s`` is measured by this parent from spawning the worker to the end
   of the write (interpreter start and imports included, like a CLI run);
   ``core_s`` is read -> write inside the worker, tool import excluded;
   ``peak_rss_mb`` is the worker's ru_maxrss at the end of the timed part.
2. then (untimed) resamples two coordinate ramps with the tool's fitted
   transform at order 1 and scores the landing error of the evaluation stars
   (benchmarks/_metrics.py), in template pixels.

Tools:
  spalipy         Spalipy(source, template_data=template, output_shape=template.shape)
                  defaults (affine + cubic SmoothBivariateSpline correction)
  spalipy-affine  the same with spline_order=0 (affine only)
  astroalign      find_transform(source, template) + apply_transform (= register)

Failures (exception, no solution, timeout) are recorded with status "failed".

Usage::

    .venv-peers/bin/python benchmarks/run_peers.py [--fields DIR] [--out FILE]
        [--only FIELD ...] [--tools TOOL ...] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _metrics  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

TOOLS = ("spalipy", "spalipy-affine", "astroalign")


def _read(path: Path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)  # native byte order (sep needs it)


def _write(path: Path, data: np.ndarray) -> None:
    fits.writeto(path, np.asarray(data, dtype=np.float32), overwrite=True)


def _version(mod: str) -> str:
    from importlib.metadata import version

    return version(mod)


def _run_spalipy(field: Path, out: Path, spline: bool):
    from spalipy import Spalipy

    t0 = time.perf_counter()
    source = _read(field / "source.fits")
    template = _read(field / "template.fits")
    kw = {} if spline else {"spline_order": 0}
    sp = Spalipy(source, template_data=template, output_shape=template.shape, **kw)
    sp.align()
    if sp.alignment_failed:
        raise RuntimeError("spalipy: alignment failed")
    _write(out, sp.aligned_data)
    core_s = time.perf_counter() - t0

    def resample(ramp):
        sp.interp_order, sp.cval = 1, np.nan
        sp._source_data = [ramp]  # reuse the fitted object on other data
        data, _ = sp._transform_data(0)
        return data

    return core_s, resample, source.shape, _version("spalipy")


def _run_astroalign(field: Path, out: Path):
    import astroalign

    t0 = time.perf_counter()
    source = _read(field / "source.fits")
    template = _read(field / "template.fits")
    transform, _ = astroalign.find_transform(source, template)
    aligned, _footprint = astroalign.apply_transform(transform, source, template)
    _write(out, aligned)
    core_s = time.perf_counter() - t0

    def resample(ramp):
        # what astroalign.apply_transform does, with order=1 instead of 3 and NaN fill
        from skimage.transform import warp

        return warp(
            ramp,
            inverse_map=transform.inverse,
            output_shape=template.shape,
            order=1,
            mode="constant",
            cval=np.nan,
            clip=False,
            preserve_range=True,
        )

    return core_s, resample, source.shape, _version("astroalign")


def worker(tool: str, field: Path, out: Path) -> dict:
    """Run one tool on one field; return the result record (without wall_s)."""
    truth = _metrics.load_truth(field)
    rec = {"field": truth["name"], "tool": tool}
    try:
        if tool == "spalipy":
            core_s, resample, shape, ver = _run_spalipy(field, out, spline=True)
        elif tool == "spalipy-affine":
            core_s, resample, shape, ver = _run_spalipy(field, out, spline=False)
        elif tool == "astroalign":
            core_s, resample, shape, ver = _run_astroalign(field, out)
        else:
            raise ValueError(f"unknown tool {tool!r}")
    except Exception as exc:  # a failure is a result
        return {
            **rec,
            "status": "failed",
            "message": f"{type(exc).__name__}: {exc}",
            "t_end": time.time(),
            "peak_rss_mb": _metrics.peak_rss_mb_self(),
        }
    rec.update(
        t_end=time.time(), core_s=core_s, peak_rss_mb=_metrics.peak_rss_mb_self(), version=ver
    )
    try:
        ramp_x, ramp_y = _metrics.source_ramps(shape)
        fitted = _metrics.RampMap(resample(ramp_x), resample(ramp_y))
        errors = _metrics.landing_errors(fitted, truth["stars_template"], truth["stars_source"])
        rec.update(_metrics.error_stats(errors), status="ok", message="")
    except Exception as exc:
        rec.update(status="failed", message=f"scoring: {type(exc).__name__}: {exc}")
    return rec


def run_one(tool: str, field: Path, workdir: Path, timeout: float) -> dict:
    """Spawn a worker for (tool, field) and return its record with wall_s."""
    out = workdir / tool / f"{field.name}.fits"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", tool, str(field), str(out)]
    t_start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "field": field.name,
            "tool": tool,
            "status": "failed",
            "message": f"timeout after {timeout:.0f} s",
            "wall_s": time.time() - t_start,
        }
    finally:
        out.unlink(missing_ok=True)  # keep the disk clean; outputs are not needed
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {
            "field": field.name,
            "tool": tool,
            "status": "failed",
            "message": f"worker exit {proc.returncode}: {' | '.join(tail)}",
            "wall_s": time.time() - t_start,
        }
    rec = json.loads(lines[-1])
    rec["wall_s"] = rec.pop("t_end") - t_start
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark spalipy and astroalign.")
    ap.add_argument(
        "--worker", nargs=3, metavar=("TOOL", "FIELD_DIR", "OUT_FITS"), help=argparse.SUPPRESS
    )
    ap.add_argument("--fields", type=Path, default=HERE.parent / "bench-out" / "fields")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peers.jsonl")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder for the aligned outputs (default FIELDS/../out)",
    )
    ap.add_argument("--only", nargs="*", help="field names (default: all in --fields)")
    ap.add_argument("--tools", nargs="*", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing")
    args = ap.parse_args(argv)

    if args.worker:
        tool, field, out = args.worker
        try:
            rec = worker(tool, Path(field), Path(out))
        except Exception as exc:
            traceback.print_exc()
            rec = {
                "field": Path(field).name,
                "tool": tool,
                "status": "failed",
                "message": f"{type(exc).__name__}: {exc}",
                "t_end": time.time(),
            }
        print(json.dumps(rec))
        return 0

    fields = sorted(p.parent for p in args.fields.glob("*/truth.json"))
    if args.only:
        fields = [f for f in fields if f.name in args.only]
    if not fields:
        ap.error(f"no fields under {args.fields} (run benchmarks/fields.py first)")
    workdir = args.workdir or args.fields.parent / "out"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": _metrics.now(), "machine": _metrics.machine(), "python": sys.version.split()[0]}
    with open(args.out, "a" if args.append else "w") as fh:
        for field in fields:
            for tool in args.tools:
                rec = {**run_one(tool, field, workdir, args.timeout), **meta}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                rms = rec.get("rms_px")
                print(
                    f"{field.name:30s} {tool:15s} {rec['status']:6s} "
                    f"rms={rms if rms is None else round(rms, 4)} "
                    f"wall={rec.get('wall_s', 0):.1f}s rss={rec.get('peak_rss_mb', 0):.0f}MB "
                    f"{rec.get('message', '')[:80]}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
