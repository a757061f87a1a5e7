"""Where a CPU run's time goes, layer by layer: the floor under each stage (issue 14).

Three measurements, each in fresh processes (a run pays for its first touch of every
page and for its imports; a warm loop would hide both), repeated ``--repeat`` times,
interleaved; the tables give the median and the minimum (the VM's noise only adds):

* **start-up**: the wall time of ``python -c "import ..."`` for each layer a run loads,
  cumulatively (the interpreter, NumPy, astropy.io.fits, the SciPy subpackages a run
  uses, sep, the command line, the engine), then ``gpualign --version`` and
  ``gpualign align --help``;
* **read**: ``gpualign.io.load_image`` of each field's template (FITS big-endian ->
  native float32, one pass);
* **detection of one image**: :class:`gpualign.detect._sep._Pixels` and its catalogue,
  split into the private copy and bad-pixel mask, the background, sep's extraction and
  the measurement of every object (half-light radius, windowed centroid, PSF), with
  the stars found; images above 2^27 pixels are detected in strips by forked workers,
  timed whole. The detection runs with NumPy's transparent huge pages off (as the
  command line sets them) and again with them on (NumPy's default), for comparison.

Usage::

    python benchmarks/bench_floor.py FIELDS_DIR --field wide4k --field wide8k \\
        --field mosaic16384 --repeat 5

Writes ``benchmarks/results/floor.md`` and ``floor.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import commit_id  # noqa: E402
from bench_mosaic import machine  # noqa: E402

#: Cumulative import layers of a default ``gpualign align`` run.
LAYERS = (
    ("python (no imports)", "pass"),
    ("+ numpy", "import numpy"),
    ("+ astropy.io.fits (with astropy.units)", "import numpy, astropy.io.fits"),
    ("+ scipy.spatial, .linalg, .special", "import numpy, astropy.io.fits, scipy.spatial, "
     "scipy.linalg, scipy.special"),
    ("+ sep", "import numpy, astropy.io.fits, scipy.spatial, scipy.linalg, scipy.special, "
     "sep"),
    ("+ typer and the command line", "import numpy, astropy.io.fits, scipy.spatial, "
     "scipy.linalg, scipy.special, sep, gpualign.cli"),
    ("+ the engine (all a run imports)", "import gpualign.cli._align, gpualign.detect, "
     "gpualign.pipeline, typer._adapters"),
)

_DETECT_WORKER = r'''
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
import sep
from gpualign.io._read import load_image
import gpualign.detect._sep as S
from gpualign.detect import detect_strips_auto
T = {}
def timed(name, f):
    def w(*a, **k):
        t = time.perf_counter(); r = f(*a, **k)
        T[name] = T.get(name, 0.0) + time.perf_counter() - t
        return r
    return w
t = time.perf_counter()
data, header, mask = load_image(sys.argv[1], None, name="template")
read_s = time.perf_counter() - t
if data.size > (1 << 27):
    t = time.perf_counter()
    cat = detect_strips_auto(data)
    out = {"strips": True, "detect_s": time.perf_counter() - t}
else:
    S._subtract_background = timed("background", S._subtract_background)
    S._extract = timed("extract", S._extract)
    real_init = S._Pixels.__init__
    S._Pixels.__init__ = timed("prepare", real_init)
    S._Pixels.catalog = timed("measure", S._Pixels.catalog)
    t = time.perf_counter()
    px = S._Pixels(data, mask)
    cat = px.catalog(px.objects(5.0))
    out = {"strips": False, "detect_s": time.perf_counter() - t,
           "copy_mask_s": T["prepare"] - T["background"], "background_s": T["background"],
           "extract_s": T["extract"], "measure_s": T["measure"]}
out.update(read_s=read_s, n=len(cat), pixels=int(data.size))
print(json.dumps(out))
'''


def _wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def _cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gpualign", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def _detect(path: Path, hugepages: bool = False) -> dict:
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "1" if hugepages else "0"}
    res = subprocess.run([sys.executable, "-c", _DETECT_WORKER, str(path)], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    """Measure and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fields", type=Path)
    ap.add_argument("--field", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    fields = args.field or ["wide4k"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "gpualign")],
                   check=True, capture_output=True)
    for field in fields:  # page cache warm: the rounds measure reading from memory
        with (args.fields / field / "template.fits").open("rb") as fh:
            while fh.read(1 << 24):
                pass
    startup: dict[str, list[float]] = {name: [] for name, _ in LAYERS}
    startup["gpualign --version"], startup["gpualign align --help"] = [], []
    detects: dict[str, list[dict]] = {f: [] for f in fields}
    for rnd in range(args.repeat):
        for name, code in LAYERS:
            startup[name].append(_wall(code))
        startup["gpualign --version"].append(_cli(["--version"]))
        startup["gpualign align --help"].append(_cli(["align", "--help"]))
        for field in fields:
            rec = _detect(args.fields / field / "template.fits")
            rec["hugepages_detect_s"] = _detect(args.fields / field / "template.fits",
                                                hugepages=True)["detect_s"]
            detects[field].append(rec)
        print(f"round {rnd + 1}: " + ", ".join(
            f"{f} detect {detects[f][-1]['detect_s']:.2f} s" for f in fields), flush=True)
    _write(args, fields, startup, detects)
    return 0


def _write(args, fields, startup, detects) -> None:
    stamp = (f"Run: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} | {machine()} | "
             f"commit {commit_id()} | script `benchmarks/bench_floor.py` | {args.repeat} "
             "interleaved rounds in fresh processes: median (minimum) s"
             + (f" | {args.note}" if args.note else ""))
    lines = ["# The floor under each stage of a CPU run", "", stamp, "",
             "## Start-up: imports, cumulative", "", "| layer | wall s |", "|---|---:|"]
    lines += [f"| {name} | {_stat(v)} |" for name, v in startup.items()]
    lines += ["", "## Reading and detecting one image (the field's template)", "",
              "| field | pixels | read s | copy + mask s | background s | extract s | "
              "measure s | detect s | ns / pixel | objects | detect s, huge pages |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for field in fields:
        rs = detects[field]
        px = rs[0]["pixels"]

        def cell(key: str, rs=rs) -> str:
            vals = [r[key] for r in rs if key in r]
            return _stat(vals) if vals else "strips"

        ns = statistics.median(r["detect_s"] for r in rs) / px * 1e9
        lines.append(f"| {field} | {px / 1e6:.1f} M | {cell('read_s')} | "
                     f"{cell('copy_mask_s')} | {cell('background_s')} | {cell('extract_s')} | "
                     f"{cell('measure_s')} | {cell('detect_s')} | {ns:.0f} | {rs[0]['n']} | "
                     f"{cell('hugepages_detect_s')} |")
    lines.append("")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "floor.md").write_text("\n".join(lines) + "\n")
    with (args.results / "floor.jsonl").open("a") as fh:
        fh.write(json.dumps({"stamp": stamp, "startup": startup, "detect": detects}) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
