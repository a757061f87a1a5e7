"""Run gpualign on the benchmark fields (same fields, metric and JSON lines as run_peers.py).

For each field and variant:

* ``wall_s`` / ``peak_rss_mb``: the whole CLI run
  (``gpualign align source.fits -t template.fits -o out.fits``) in a fresh
  process: wall time from spawn to exit, peak RSS from that child's rusage.
* ``core_s`` and the accuracy: a fresh worker process reads the FITS files,
  calls ``gpualign.align(source, template)`` and writes the output (timed:
  ``core_s``), then scores ``result.transform`` (template -> source) directly
  with benchmarks/_metrics.py: the landing error of the evaluation stars in
  template pixels, the same quantity the ramp method measures for the peers.
  As a guard, the ramp method is also applied through gpualign's own warp
  (``apply_transform``, order 1): ``ramp_rms_px`` and
  ``ramp_vs_transform_max_px`` (should be ~1e-4 px or less).

Variants: ``gpualign`` (defaults) and ``gpualign-affine`` (CLI ``--simple``,
API ``spline_order=0``).

Usage::

    python benchmarks/run_gpualign.py [--fields DIR] [--out FILE] [--only FIELD ...]
        [--tools gpualign gpualign-affine] [--backend auto|numpy|cupy] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _metrics  # noqa: E402

TOOLS = ("gpualign", "gpualign-affine")


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "gpualign"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("gpualign")
    return [found] if found else [sys.executable, "-m", "gpualign"]


def _git_describe() -> str:
    """Commit of the checkout being measured (with -dirty for local changes)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _run_cli(tool: str, field: Path, out: Path, backend: str, timeout: float) -> dict:
    cmd = _cli() + [
        "align",
        str(field / "source.fits"),
        "-t",
        str(field / "template.fits"),
        "-o",
        str(out),
        "--overwrite",
        "--backend",
        backend,
    ]
    if tool == "gpualign-affine":
        cmd.append("--simple")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"cli_status": "failed", "cli_message": f"timeout after {timeout:.0f} s"}
    rec = {"wall_s": time.perf_counter() - t0}
    if proc.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        rec.update(cli_status="failed", cli_message=f"exit {proc.returncode}: {tail}")
    else:
        rec.update(cli_status="ok")
    return rec


def _run_cli_rusage(tool: str, field: Path, out: Path, backend: str, timeout: float) -> dict:
    """Run the CLI from a fresh helper process, whose RUSAGE_CHILDREN is then the CLI's alone."""
    helper = [
        sys.executable,
        __file__,
        "--cli-helper",
        tool,
        str(field),
        str(out),
        backend,
        str(timeout),
    ]
    proc = subprocess.run(helper, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"cli_status": "failed", "cli_message": proc.stderr.strip()[-300:]}
    return json.loads(lines[-1])


def cli_helper(tool: str, field: Path, out: Path, backend: str, timeout: float) -> dict:
    import resource

    rec = _run_cli(tool, field, out, backend, timeout)
    rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return rec


def worker(tool: str, field: Path, out: Path, backend: str) -> dict:
    """API run: read, align, write (timed), then score result.transform."""
    truth = _metrics.load_truth(field)
    rec = {"field": truth["name"], "tool": tool}
    import numpy as np
    from astropy.io import fits

    import gpualign

    kw = {"spline_order": 0} if tool == "gpualign-affine" else {}
    try:
        t0 = time.perf_counter()
        source = fits.getdata(field / "source.fits")
        template = fits.getdata(field / "template.fits")
        result = gpualign.align(source, template, backend=backend, **kw)
        fits.writeto(out, np.asarray(result.data, dtype=np.float32), overwrite=True)
        rec["core_s"] = time.perf_counter() - t0
    except Exception as exc:
        return {**rec, "status": "failed", "message": f"{type(exc).__name__}: {exc}"}
    rec["api_peak_rss_mb"] = _metrics.peak_rss_mb_self()
    rec["version"] = getattr(gpualign, "__version__", "?")
    rec["backend"] = str(getattr(result, "backend", backend))
    stats = getattr(result, "stats", None) or {}
    rec["n_match"] = stats.get("n_match")
    rec["degree"] = getattr(result.transform, "degree", None)
    errors = _metrics.landing_errors(
        result.transform, truth["stars_template"], truth["stars_source"]
    )
    rec.update(_metrics.error_stats(errors), status="ok", message="")
    # cross-check: the peers' ramp method through gpualign's own warp must agree
    try:
        ramps = []
        for ramp in _metrics.source_ramps(source.shape):
            res = gpualign.apply_transform(
                result.transform,
                ramp,
                template.shape,
                interp_order=1,
                backend=backend,
                dtype=np.float64,
            )
            ramps.append(res.data)
        ramp_err = _metrics.landing_errors(
            _metrics.RampMap(*ramps), truth["stars_template"], truth["stars_source"]
        )
        rec["ramp_rms_px"] = _metrics.error_stats(ramp_err)["rms_px"]
        rec["ramp_vs_transform_max_px"] = float(np.nanmax(np.abs(ramp_err - errors)))
    except Exception as exc:
        rec["ramp_check"] = f"{type(exc).__name__}: {exc}"
    return rec


def run_one(tool: str, field: Path, workdir: Path, backend: str, timeout: float) -> dict:
    out = workdir / tool / f"{field.name}.fits"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        cli = _run_cli_rusage(tool, field, out, backend, timeout)
        cmd = [sys.executable, __file__, "--worker", tool, str(field), str(out), backend]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if lines:
                rec = json.loads(lines[-1])
            else:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                rec = {
                    "field": field.name,
                    "tool": tool,
                    "status": "failed",
                    "message": f"worker exit {proc.returncode}: {tail}",
                }
        except subprocess.TimeoutExpired:
            rec = {
                "field": field.name,
                "tool": tool,
                "status": "failed",
                "message": f"timeout after {timeout:.0f} s",
            }
    finally:
        out.unlink(missing_ok=True)
    rec.update({k: v for k, v in cli.items() if k in ("wall_s", "peak_rss_mb")})
    if cli.get("cli_status") != "ok":
        rec["status"] = "failed"
        rec["message"] = "CLI " + cli.get("cli_message", "") + "; " + rec.get("message", "")
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark gpualign.")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--cli-helper", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--fields", type=Path, default=HERE.parent / "bench-out" / "fields")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpualign.jsonl")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--tools", nargs="*", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)

    if args.cli_helper:
        tool, field, out, backend, timeout = args.cli_helper
        print(json.dumps(cli_helper(tool, Path(field), Path(out), backend, float(timeout))))
        return 0
    if args.worker:
        tool, field, out, backend = args.worker
        try:
            rec = worker(tool, Path(field), Path(out), backend)
        except Exception as exc:
            traceback.print_exc()
            rec = {
                "field": Path(field).name,
                "tool": tool,
                "status": "failed",
                "message": f"{type(exc).__name__}: {exc}",
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
    meta = {
        "git": _git_describe(),
        "date": _metrics.now(),
        "machine": _metrics.machine(),
        "python": sys.version.split()[0],
    }
    with open(args.out, "a" if args.append else "w") as fh:
        for field in fields:
            for tool in args.tools:
                rec = {**run_one(tool, field, workdir, args.backend, args.timeout), **meta}
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
