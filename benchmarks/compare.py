"""Print one markdown table comparing gpualign with its peers from the JSON-lines results.

Usage::

    python benchmarks/compare.py [RESULTS.jsonl ...] [--wrong-px 1.0] [--out FILE.md]

Default inputs: benchmarks/results/gpualign.jsonl and benchmarks/results/peers.jsonl
(missing files are skipped).  A run whose RMS landing error exceeds ``--wrong-px``
is shown as "wrong" (a false solution), above ``--inaccurate-px`` as
"inaccurate" (e.g. an affine fit of a distorted field), one with stars outside
its footprint as "partial".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOL_ORDER = [
    "gpualign",
    "gpualign-affine",
    "spalipy",
    "spalipy-affine",
    "astroalign",
    "scamp+swarp",
]


def load(paths: list[Path]) -> list[dict]:
    recs = []
    for path in paths:
        if not path.exists():
            print(f"(skipping missing {path})", file=sys.stderr)
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                recs.append(json.loads(line))
    return recs


def _fmt(v, nd):
    return "-" if v is None else f"{v:.{nd}f}"


def status(rec: dict, wrong_px: float = 10.0, inaccurate_px: float = 1.0) -> str:
    if rec.get("status") != "ok":
        msg = " ".join(str(rec.get("message", "")).split())
        return f"failed: {msg[:70]}" if msg else "failed"
    if rec.get("rms_px") is None or rec["rms_px"] > wrong_px:
        return "wrong"
    if rec["rms_px"] > inaccurate_px:
        return "inaccurate"
    if rec.get("n_nonfinite"):
        return f"partial ({rec['n_nonfinite']}/{rec['n_stars']} stars lost)"
    return "ok"


def table(recs: list[dict], wrong_px: float = 10.0, inaccurate_px: float = 1.0) -> str:
    def key(r):
        t = r["tool"]
        return (r["field"], TOOL_ORDER.index(t) if t in TOOL_ORDER else 99, t)

    rows = [
        "| field | tool | RMS px | max px | wall s | peak RSS MB | status |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in sorted(recs, key=key):
        rows.append(
            f"| {r['field']} | {r['tool']} | {_fmt(r.get('rms_px'), 4)} "
            f"| {_fmt(r.get('max_px'), 4)} | {_fmt(r.get('wall_s'), 1)} "
            f"| {_fmt(r.get('peak_rss_mb'), 0)} | {status(r, wrong_px, inaccurate_px)} |"
        )
    return "\n".join(rows)


def summary(recs: list[dict], wrong_px: float = 10.0, inaccurate_px: float = 1.0) -> str:
    tools = sorted(
        {r["tool"] for r in recs}, key=lambda t: TOOL_ORDER.index(t) if t in TOOL_ORDER else 99
    )
    rows = [
        f"| tool | fields solved (RMS < {inaccurate_px:g} px) | median RMS px (solved) "
        "| total wall s | max peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in tools:
        rs = [r for r in recs if r["tool"] == t]
        ok = [r for r in rs if status(r, wrong_px, inaccurate_px) == "ok"]
        rms = sorted(r["rms_px"] for r in ok)
        med = rms[len(rms) // 2] if rms else None
        wall = sum(r.get("wall_s") or 0.0 for r in rs)
        rss = max((r.get("peak_rss_mb") or 0.0 for r in rs), default=0.0)
        rows.append(f"| {t} | {len(ok)}/{len(rs)} | {_fmt(med, 4)} | {wall:.1f} | {rss:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "results",
        nargs="*",
        type=Path,
        default=[HERE / "results" / "gpualign.jsonl", HERE / "results" / "peers.jsonl"],
    )
    ap.add_argument(
        "--wrong-px", type=float, default=10.0, help="RMS above which a solution counts as wrong"
    )
    ap.add_argument(
        "--inaccurate-px", type=float, default=1.0, help="RMS above which it is inaccurate"
    )
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    args = ap.parse_args(argv)
    recs = load(args.results)
    if not recs:
        print("no results", file=sys.stderr)
        return 1
    machines = sorted({r.get("machine", "?") for r in recs})
    dates = sorted({r.get("date", "?")[:10] for r in recs})
    text = "\n\n".join(
        [
            f"Machine: {'; '.join(machines)}. Dates: {', '.join(dates)}.",
            "Accuracy: RMS / max landing error of the evaluation stars after resampling, in "
            "template pixels. Wall: whole run (process start, read FITS, detect, match, fit, "
            "warp, write FITS). Peak RSS: that process.",
            table(recs, args.wrong_px, args.inaccurate_px),
            summary(recs, args.wrong_px, args.inaccurate_px),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
