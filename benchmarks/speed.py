"""Head-to-head wall time and peak RSS of whole runs, interleaved, repeated, medians.

The comparison table (run_all.sh) runs every tool once per field; a single run on a
2-core machine varies by 10-20 %, too much to settle "no slower than astroalign".
This script runs the tools in turn on the same field (gpualign's CLI, then each
peer's read-register-write script, then gpualign again, ...), ``--repeat`` times,
so that whatever else the machine does hits every tool alike, and prints the
median and the spread of each.

Each run is a fresh process measured as in run_gpualign.py / run_peers.py (wall
time from spawn to exit, peak RSS of that process tree's largest process).

Usage::

    python benchmarks/speed.py FIELDS_DIR --field wide4k [--repeat 5]
        [--tools gpualign astroalign spalipy] [--peers-python .venv-peers/bin/python]
        [--out benchmarks/results/speed.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _one(tool: str, fields: Path, field: str, peers_python: str, scratch: Path) -> dict:
    """One whole run of ``tool`` on ``field`` through the existing runners."""
    out = scratch / f"{tool}.jsonl"
    out.unlink(missing_ok=True)
    if tool.startswith("gpualign"):
        cmd = [sys.executable, str(HERE / "run_gpualign.py"), "--workdir", str(scratch / "w")]
    else:
        cmd = [peers_python, str(HERE / "run_peers.py"), "--workdir", str(scratch / "w")]
    cmd += ["--fields", str(fields), "--only", field, "--tools", tool, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = out.read_text().splitlines() if out.exists() else []
    if proc.returncode != 0 or not lines:
        return {"tool": tool, "status": "failed", "message": proc.stderr.strip()[-300:]}
    rec = json.loads(lines[-1])
    return {"tool": tool, "status": rec.get("status", "ok"), "wall_s": rec.get("wall_s"),
            "peak_rss_mb": rec.get("peak_rss_mb"), "rms_px": rec.get("rms_px")}


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved comparison and print a table of medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fields", type=Path)
    ap.add_argument("--field", default="wide4k")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tools", nargs="+", default=["gpualign", "astroalign", "spalipy"])
    ap.add_argument("--peers-python", default=str(HERE.parent / ".venv-peers/bin/python"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.jsonl")
    ap.add_argument("--note", default="", help="recorded with the results (machine load...)")
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {t: [] for t in args.tools}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for tool in args.tools:
                rec = _one(tool, args.fields, args.field, args.peers_python, Path(tmp))
                runs[tool].append(rec)
                print(f"run {i + 1}/{args.repeat} {tool:12s} {rec.get('status')} "
                      f"wall={rec.get('wall_s') or float('nan'):.2f}s "
                      f"rss={rec.get('peak_rss_mb') or float('nan'):.0f}MB", flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {platform.system()}, "
               f"{os.cpu_count()} cores")
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
             "gpualign_commit": commit, "note": args.note}
    print(f"\nfield {args.field}, {args.repeat} interleaved runs each ({machine})")
    print("| tool | median wall s | min-max s | median peak RSS MB | runs ok |")
    print("|---|---:|---:|---:|---:|")
    with args.out.open("a") as fh:
        for tool, recs in runs.items():
            ok = [r for r in recs if r.get("wall_s") is not None and r["status"] == "ok"]
            walls = [r["wall_s"] for r in ok]
            rss = [r["peak_rss_mb"] for r in ok if r.get("peak_rss_mb")]
            summary = {
                "field": args.field, "tool": tool, "runs": len(recs), "ok": len(ok),
                "median_wall_s": statistics.median(walls) if walls else None,
                "min_wall_s": min(walls) if walls else None,
                "max_wall_s": max(walls) if walls else None,
                "median_peak_rss_mb": statistics.median(rss) if rss else None,
                "walls_s": walls, **stamp,
            }
            fh.write(json.dumps(summary) + "\n")
            if walls:
                print(f"| {tool} | {summary['median_wall_s']:.2f} | {min(walls):.2f}-"
                      f"{max(walls):.2f} | {summary['median_peak_rss_mb']:.0f} | "
                      f"{len(ok)}/{len(recs)} |")
            else:
                print(f"| {tool} | - | - | - | 0/{len(recs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
