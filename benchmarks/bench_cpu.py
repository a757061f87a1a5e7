"""CPU speed (issue 14): whole runs and their stages, two gpualign builds and the peers.

Each round runs, in turn and in fresh processes, ``gpualign --version``, ``gpualign align
--help``, and ``gpualign align -v`` on each field for every build given (``--build
NAME=PATH``: a source checkout whose ``gpualign`` package is put first on
``PYTHONPATH``, so an old commit's worktree with its compiled host library runs beside
the current one), then astroalign and spalipy (``run_peers.py`` in the peers'
virtual environment) on the same field. Rounds repeat ``--repeat`` times, interleaved,
so that whatever else the machine does hits every variant alike; the tables show
medians. Stage seconds come from the ``timings:`` line that ``-v`` prints.

Wall time is from spawn to exit; peak memory is the largest process's peak RSS (as
``bench_mosaic.run_measured`` measures it).

Before the rounds, each build's package is compiled to bytecode (``compileall``), as
``pip install`` does for users and had done for the peers: a checkout run with
``PYTHONDONTWRITEBYTECODE`` set (this machine's default) would otherwise compile its
~80 modules in every run (0.25 s). The fields' files and each build's libraries are
read (untimed) before the first round and again after every peer run: spalipy takes
2-8 GB, which evicts the page cache, and the next run would otherwise pay for reading
Python, NumPy, SciPy and the images from disk (a ``before`` run after spalipy took
24 s instead of 8).

Usage::

    python benchmarks/bench_cpu.py FIELDS_DIR --field wide4k --field wide8k \\
        --build before=/tmp/before --build after=. --repeat 5 \\
        --peers-python /tmp/depth/venv-peers/bin/python

Writes ``benchmarks/results/NAME.md`` and ``NAME.jsonl`` (``--name``, default ``cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import commit_id  # noqa: E402
from bench_mosaic import machine, run_measured  # noqa: E402
from speed import _one as run_peer  # noqa: E402

TIMINGS = re.compile(r"timings: (.*)$", re.M)


def _env(checkout: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout.resolve())
    return env


def _stages(output: str) -> dict[str, float]:
    m = TIMINGS.findall(output)
    if not m:
        return {}
    return {k: float(v.rstrip("s")) for k, v in
            (item.rsplit(" ", 1) for item in m[-1].split(", "))}


def _gpualign(checkout: Path, args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", "gpualign", *args]
    return run_measured(cmd, timeout, env=_env(checkout))


def _startup(checkout: Path, args: list[str]) -> dict:
    """Wall time of a short command, exactly (run_measured polls every 0.1 s)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpualign", *args], env=_env(checkout),
                          capture_output=True, timeout=60)
    return {"wall_s": time.perf_counter() - t0, "returncode": proc.returncode}


def _align(checkout: Path, field: Path, scratch: Path, timeout: float) -> dict:
    out = scratch / "out.fits"
    out.unlink(missing_ok=True)
    rec = _gpualign(checkout, ["align", str(field / "source.fits"), "-t",
                               str(field / "template.fits"), "-o", str(out), "-v",
                               "--backend", "numpy"], timeout)
    rec["stages"] = _stages(rec.pop("log_tail", ""))
    rec["status"] = "ok" if rec["returncode"] == 0 and out.exists() else "failed"
    out.unlink(missing_ok=True)
    return rec


def _check_build(name: str, checkout: Path) -> None:
    """Fail unless ``checkout``'s own gpualign package is the one its runs import."""
    res = subprocess.run([sys.executable, "-c", "import gpualign; print(gpualign.__file__)"],
                         env=_env(checkout), check=True, capture_output=True, text=True)
    found = Path(res.stdout.strip()).resolve()
    if checkout not in found.parents:
        raise SystemExit(f"build {name}: imports {found}, not {checkout}'s gpualign")


def _rewarm(builds: dict[str, Path], fields: list[Path]) -> None:
    """Read the fields' files and import each build's engine (untimed): page cache warm."""
    for folder in fields:
        for f in sorted(folder.glob("*.fits")):
            with f.open("rb") as fh:
                while fh.read(1 << 24):
                    pass
    for checkout in builds.values():
        subprocess.run([sys.executable, "-c", "import gpualign.cli._align, sep"],
                       env=_env(checkout), check=True, capture_output=True)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fields", type=Path)
    ap.add_argument("--field", action="append", default=[])
    ap.add_argument("--build", action="append", default=[], metavar="NAME=CHECKOUT")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peers", nargs="*", default=["astroalign", "spalipy"])
    ap.add_argument("--peers-python", default="/tmp/depth/venv-peers/bin/python")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--note", default="")
    ap.add_argument("--name", default="cpu", help="results file name (NAME.md, NAME.jsonl)")
    args = ap.parse_args(argv)
    builds = dict(b.split("=", 1) for b in args.build) or {"current": str(HERE.parent)}
    builds = {k: Path(v).resolve() for k, v in builds.items()}
    args.fields, args.results = args.fields.resolve(), args.results.resolve()
    fields = args.field or ["wide4k"]
    runs: list[dict] = []
    for checkout in builds.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "gpualign")],
                       check=True, capture_output=True)
    _rewarm(builds, [args.fields / f for f in fields])
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        # ``python -m`` puts the working directory first on sys.path: run from an empty
        # one, so that each build's PYTHONPATH decides which gpualign runs
        os.chdir(scratch)
        for name, checkout in builds.items():
            _check_build(name, checkout)
        for rnd in range(args.repeat):
            for name, checkout in builds.items():
                for what, cli in (("--version", ["--version"]), ("--help", ["align", "--help"])):
                    rec = _startup(checkout, cli)
                    runs.append({"round": rnd, "build": name, "case": what,
                                 "wall_s": rec["wall_s"], "ok": rec["returncode"] == 0})
            for field in fields:
                for name, checkout in builds.items():
                    rec = _align(checkout, args.fields / field, scratch, args.timeout)
                    runs.append({"round": rnd, "build": name, "case": field, **{
                        k: rec.get(k) for k in ("wall_s", "peak_rss_mb", "stages", "status")}})
                    print(f"round {rnd + 1} {name:8s} {field}: {rec['status']} "
                          f"{rec['wall_s']:.2f} s {rec.get('peak_rss_mb') or 0:.0f} MB "
                          f"{rec['stages']}", flush=True)
                for peer in args.peers:
                    rec = run_peer(peer, args.fields, field, args.peers_python, scratch)
                    runs.append({"round": rnd, "build": peer, "case": field, **rec})
                    print(f"round {rnd + 1} {peer:8s} {field}: {rec.get('status')} "
                          f"{rec.get('wall_s') or float('nan'):.2f} s", flush=True)
                    _rewarm(builds, [args.fields / f for f in fields])
    _write(runs, builds, fields, args)
    return 0


def _write(runs: list[dict], builds: dict, fields: list[str], args) -> None:
    stamp = (f"Run: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} | {machine()} | "
             f"NumPy backend | commit {commit_id()} | script "
             f"`benchmarks/bench_cpu.py` | {args.repeat} interleaved rounds, medians"
             + (f" | {args.note}" if args.note else ""))
    lines = ["# CPU speed: whole runs and stages", "", stamp, "",
             "Builds: " + ", ".join(f"`{k}` = {v}" for k, v in builds.items()), "",
             "## Start-up", "", "| build | --version s | align --help s |", "|---|---:|---:|"]
    for name in builds:
        cell = [_median([r["wall_s"] for r in runs if r["build"] == name and r["case"] == c
                         and r["ok"]]) for c in ("--version", "--help")]
        lines.append(f"| {name} | {_fmt(cell[0])} | {_fmt(cell[1])} |")
    lines += ["", "## Whole runs (fresh process, default settings)", "",
              "| field | tool | median wall s | min-max s | median peak RSS MB | ok |",
              "|---|---|---:|---:|---:|---:|"]
    for field in fields:
        for name in [*builds, *args.peers]:
            rs = [r for r in runs if r["build"] == name and r["case"] == field]
            ok = [r for r in rs if r.get("status") == "ok" and r.get("wall_s") is not None]
            walls = [r["wall_s"] for r in ok]
            rss = [r["peak_rss_mb"] for r in ok if r.get("peak_rss_mb")]
            lines.append(f"| {field} | {name} | {_fmt(_median(walls))} | "
                         f"{_fmt(min(walls) if walls else None)}-"
                         f"{_fmt(max(walls) if walls else None)} | "
                         f"{_fmt(_median(rss), 0)} | {len(ok)}/{len(rs)} |")
    lines += ["", "## Stages (from `-v`, median s)", ""]
    for field in fields:
        stage_names: list[str] = []
        for r in runs:
            if r["case"] == field and r.get("stages"):
                stage_names += [s for s in r["stages"] if s not in stage_names]
        lines += [f"### {field}", "", "| build | " + " | ".join(stage_names) + " |",
                  "|---|" + "---:|" * len(stage_names)]
        for name in builds:
            rs = [r for r in runs if r["build"] == name and r["case"] == field
                  and r.get("stages")]
            cells = [_fmt(_median([r["stages"][s] for r in rs if s in r["stages"]]))
                     for s in stage_names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    with (args.results / f"{args.name}.jsonl").open("a") as fh:
        for r in runs:
            fh.write(json.dumps({**r, "stamp": stamp}) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
