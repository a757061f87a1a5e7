"""Pieces every side-by-side benchmark script uses: the commit stamp, gpualign's solve
scored against the truth, the peers' runs, and the table cell of one run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commit_id() -> str:
    """``git rev-parse --short HEAD``, with ``-dirty`` when the tree has changes."""
    try:
        rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def solve_and_score(source, template, stars_t, stars_s, **kw) -> dict:
    """``gpualign.find_transform`` (NumPy backend, warnings silenced), scored by the
    landing errors of the evaluation stars (template px -> their true source px)."""
    import _metrics

    import gpualign

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = gpualign.find_transform(source, template, backend="numpy", **kw)
    except gpualign.GpuAlignError as exc:
        return {"status": "failed", "message": f"{type(exc).__name__}: {exc}"[:160],
                "solve_s": time.perf_counter() - t0}
    solve_s = time.perf_counter() - t0
    e = _metrics.landing_errors(sol.transform, stars_t, stars_s)
    return {"status": "ok", **_metrics.error_stats(e), "n_match": sol.stats["n_match"],
            "prior": sol.prior, "fit_rms_px": sol.stats["rms"], "solve_s": solve_s,
            "thresholds": sol.thresholds}


def run_peers(venv: Path, fields: Path, out: Path) -> dict:
    """run_peers.py in the peers' venv on every field folder; {(field, tool): record}."""
    cmd = [str(venv / "bin" / "python"), str(HERE / "run_peers.py"), "--fields", str(fields),
           "--out", str(out), "--tools", "spalipy", "astroalign", "--timeout", "600"]
    subprocess.run(cmd, check=True)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["field"], r["tool"]): r for r in recs}


def run_scamp(fields: Path, out: Path, timeout: float = 600.0) -> dict:
    """run_scamp.py (SExtractor + SCAMP + SWarp, given a prior WCS) on every field folder,
    each within ``timeout`` seconds; {field: record}, empty when the three programs are
    not installed."""
    import shutil

    from run_scamp import PROGRAMS

    if any(shutil.which(b) is None for b in PROGRAMS):
        return {}
    subprocess.run([sys.executable, str(HERE / "run_scamp.py"), "--fields", str(fields),
                    "--out", str(out), "--timeout", str(timeout)], check=True)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["field"]: r for r in recs}


def timed(rec: dict | None, text: str) -> str:
    """``text`` (a tool's :func:`cell`) with the tool's wall time when it gave a result."""
    if rec is None or rec.get("status") != "ok":
        return text
    return f"{text} ({rec['wall_s']:.1f} s)"


def scamp_cell(rec: dict | None, text: str | None = None) -> str:
    """SCAMP's result (:func:`cell`, or ``text``) and time; ``not installed`` without it."""
    if rec is None:
        return "not installed"
    return timed(rec, cell(rec) if text is None else text)


def cell(rec: dict | None, digits: int = 3, unit: float = 1.0) -> str:
    """``RMS / max`` of one run (times ``unit``), ``fails (Error)`` or ``not run``."""
    if rec is None:
        return "not run"
    if rec.get("status") == "ok" and rec.get("rms_px") is None:
        return "wrong: no star lands inside the image"  # a result, far off
    if rec.get("status") != "ok":
        msg = rec.get("message", "")
        return "fails" + (f" ({msg.split(':')[0]})" if msg else "")
    return f"{rec['rms_px'] * unit:.{digits}f} / {rec['max_px'] * unit:.3f}"
