"""Pieces every side-by-side benchmark script uses: the commit stamp, the peers' runs,
and the table cell of one run."""

from __future__ import annotations

import json
import subprocess
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


def run_peers(venv: Path, fields: Path, out: Path) -> dict:
    """run_peers.py in the peers' venv on every field folder; {(field, tool): record}."""
    cmd = [str(venv / "bin" / "python"), str(HERE / "run_peers.py"), "--fields", str(fields),
           "--out", str(out), "--tools", "spalipy", "astroalign", "--timeout", "600"]
    subprocess.run(cmd, check=True)
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["field"], r["tool"]): r for r in recs}


def cell(rec: dict | None, digits: int = 3) -> str:
    """``RMS / max`` of one run, ``fails (Error)`` or ``not run``."""
    if rec is None:
        return "not run"
    if rec.get("status") != "ok" or rec.get("rms_px") is None:
        msg = rec.get("message", "")
        return "fails" + (f" ({msg.split(':')[0]})" if msg else "")
    return f"{rec['rms_px']:.{digits}f} / {rec['max_px']:.3f}"
