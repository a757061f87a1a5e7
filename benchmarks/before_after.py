"""Two builds of gpualign side by side: whole CLI runs, interleaved, repeated, medians.

A refactoring must not cost time or memory. This runs the ``gpualign align`` of two
installations (``--before`` and ``--after``: executables, e.g. a venv of the old
commit and one of the new) in turn on the same fields, with the same options, each
variant ``--repeat`` times, interleaved (before, after, before, after, ...) so that
whatever else the machine does hits both alike. Wall time and peak memory are
measured as in ``bench_mosaic.py`` (fresh process; wall from spawn to exit; the
largest single-process RSS and the physical use of the process tree).

Variants: ``plain`` (defaults) and ``flux`` (``--conserve-flux``): the flux run must
stay within 1.25x the plain run's time and memory, since the flux is applied per
streamed tile.

Usage::

    python benchmarks/before_after.py --before /old/venv/bin/gpualign \\
        --after /new/venv/bin/gpualign --field /work/bench-fields/wide4k \\
        --field /work/bench-data/mosaic16384 --repeat 3 --note "quiet machine"
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_mosaic import machine, run_measured  # noqa: E402

VARIANTS = {"plain": [], "flux": ["--conserve-flux"]}


def _commit(exe: str) -> str:
    """The git commit of the checkout an executable's package was installed from."""
    code = ("import gpualign, pathlib; print(pathlib.Path(gpualign.__file__).resolve()"
            ".parents[1])")
    py = Path(exe).with_name("python")
    try:
        root = subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                              cwd="/").stdout.strip()
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def run(exe: str, field: Path, extra: list[str], scratch: Path, timeout: float) -> dict:
    """One whole CLI run; the output is deleted afterwards."""
    out = scratch / "out.fits"
    out.unlink(missing_ok=True)
    cmd = [exe, "align", str(field / "source.fits"), "-t", str(field / "template.fits"),
           "-o", str(out), *extra]
    rec = run_measured(cmd, timeout)
    rec["status"] = "ok" if rec["returncode"] == 0 and out.exists() else "failed"
    out.unlink(missing_ok=True)
    return rec


def table(records: list[dict]) -> str:
    """Markdown: median wall and peak memory per field, variant and build."""
    rows = ["| field | variant | build | runs | wall median (s) | range (s) | peak RSS (MB) "
            "| physical (MB) |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["field"], r["variant"], r["build"]) for r in records},
                  key=lambda k: (k[0], k[1], k[2] != "before"))
    for f, v, b in keys:
        rs = [r for r in records if (r["field"], r["variant"], r["build"]) == (f, v, b)
              and r["status"] == "ok"]
        if not rs:
            rows.append(f"| {f} | {v} | {b} | 0 | failed | | | |")
            continue
        walls = [r["wall_s"] for r in rs]
        rows.append(f"| {f} | {v} | {b} | {len(rs)} | {statistics.median(walls):.2f} | "
                    f"{min(walls):.2f}-{max(walls):.2f} | "
                    f"{statistics.median(r['peak_rss_mb'] for r in rs):.0f} | "
                    f"{statistics.median(r['peak_physical_mb'] for r in rs):.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved comparison, append JSON lines, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="gpualign executable of the old build")
    ap.add_argument("--after", required=True, help="gpualign executable of the new build")
    ap.add_argument("--field", type=Path, action="append", required=True,
                    help="field directory with source.fits and template.fits (repeatable)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "before_after.jsonl")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    builds = {"before": args.before, "after": args.after}
    commits = {b: _commit(exe) for b, exe in builds.items()}
    records = []
    date = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for rep in range(args.repeat):
            for field in args.field:
                for variant in args.variants:
                    order = ("before", "after") if rep % 2 == 0 else ("after", "before")
                    for build in order:
                        rec = run(builds[build], field, VARIANTS[variant], scratch,
                                  args.timeout)
                        rec.update(field=field.name, variant=variant, build=build,
                                   commit=commits[build], repeat=rep, date=date,
                                   machine=machine(), note=args.note)
                        rec.pop("log_tail", None) if rec["status"] == "ok" else None
                        records.append(rec)
                        print(f"{field.name:14s} {variant:6s} {build:6s} {rec['status']:6s} "
                              f"{rec['wall_s']:7.2f} s {rec['peak_rss_mb']:6d} MB", flush=True)
    with open(args.out, "a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
