"""CPU vs GPU on the benchmark fields: one registration per backend, compared field by field.

Run on a CUDA machine (``benchmarks/gpu_session.sh`` runs it)::

    python benchmarks/gpu_compare.py                              # every field of fields.py
    python benchmarks/gpu_compare.py --only wide4k flip --out cmp.md

The fields are those of ``benchmarks/fields.py`` (the benchmark's simulated cases with
known truth: undistorted rotations and scales, wide 4k/8k distorted fields, crowded,
seeing, overlap, few stars, other shape, mirror, hot pixels). Missing ones are generated
into ``--fields`` first (seeded: the same pixels as the benchmark's).

For each field ``gpualign.align(source, template)`` runs on the NumPy backend (CPU) and
on the CuPy backend (GPU), in this process, with the same settings; the record holds

* each backend's accuracy against the truth (landing error of the evaluation stars,
  ``benchmarks/_metrics.py``, the metric of the benchmark tables), matches, degree, time;
* ``transform_rms_diff_px`` / ``transform_max_diff_px``: where the two fitted mappings
  send the template's pixels (a 32 px grid of the template, in source px);
* ``pixel_rms_diff``: RMS of GPU - CPU output pixels where both footprints have data,
  also relative to the RMS of the CPU pixels there (``pixel_rms_diff_rel``), the largest
  difference (``pixel_max_diff``) and the number of pixels whose footprint differs.

One JSON line per field is appended to ``--jsonl``; the table goes to stdout and
``--out``. Without CuPy or a CUDA device it prints one line saying why and exits 2.
Exit 1 if a field failed on either backend.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _metrics  # noqa: E402

#: Grid step (template px) on which the two fitted mappings are compared.
GRID_STEP = 32


class NoGpu(Exception):
    """CuPy or a CUDA device is unavailable (the script exits 2 with one line)."""


def gpu_backend() -> Any:
    """The CuPy backend, or :class:`NoGpu` with a one-line reason."""
    import gpualign

    try:
        return gpualign.get_backend("cupy")
    except gpualign.BackendUnavailable as exc:
        raise NoGpu(str(exc.args[0]).splitlines()[0]) from None


def ensure_fields(folder: Path, names: Sequence[str]) -> list[Path]:
    """The field folders, generated (benchmarks/fields.py, seeded) where missing."""
    import fields

    unknown = [n for n in names if n not in fields.FIELDS]
    if unknown:
        raise SystemExit(f"gpu_compare: unknown field(s) {unknown}; see fields.py --list")
    return [fields.make_field(name, folder) for name in names]


def _accuracy(transform: Any, truth: dict) -> dict[str, Any]:
    errors = _metrics.landing_errors(transform, truth["stars_template"], truth["stars_source"])
    return _metrics.error_stats(errors)


def mapping_difference(a: Any, b: Any, shape: tuple[int, int],
                       step: int = GRID_STEP) -> dict[str, float]:
    """RMS and max of |a(p) - b(p)| (source px) over a grid of template pixels ``p``."""
    gy, gx = np.mgrid[0:shape[0]:step, 0:shape[1]:step].astype(np.float64)
    ax, ay = a(gx.ravel(), gy.ravel())
    bx, by = b(gx.ravel(), gy.ravel())
    d = np.hypot(np.asarray(ax) - np.asarray(bx), np.asarray(ay) - np.asarray(by))
    d = d[np.isfinite(d)]
    return {"transform_rms_diff_px": float(np.sqrt(np.mean(d**2))) if d.size else None,
            "transform_max_diff_px": float(d.max()) if d.size else None}


def pixel_difference(cpu: Any, gpu: Any) -> dict[str, Any]:
    """GPU - CPU output pixels where both have data, and footprint disagreements."""
    fc, fg = np.asarray(cpu.footprint, bool), np.asarray(gpu.footprint, bool)
    dc, dg = np.asarray(cpu.data, np.float64), np.asarray(gpu.data, np.float64)
    both = fc & fg & np.isfinite(dc) & np.isfinite(dg)
    out: dict[str, Any] = {"footprint_mismatch": int(np.count_nonzero(fc != fg)),
                           "pixels_compared": int(np.count_nonzero(both))}
    if not both.any():
        return {**out, "pixel_rms_diff": None, "pixel_rms_diff_rel": None,
                "pixel_max_diff": None}
    d = dg[both] - dc[both]
    rms = float(np.sqrt(np.mean(d**2)))
    scale = float(np.sqrt(np.mean(dc[both] ** 2)))
    return {**out, "pixel_rms_diff": rms, "pixel_rms_diff_rel": rms / scale if scale else None,
            "pixel_max_diff": float(np.abs(d).max())}


def compare_field(folder: Path, backend: Any, *, order: int = 3) -> dict[str, Any]:
    """Align one field on the CPU and on ``backend``; accuracy of each and their difference."""
    from astropy.io import fits

    import gpualign

    truth = _metrics.load_truth(folder)
    source = np.asarray(fits.getdata(folder / "source.fits"), dtype=np.float32)
    template = np.asarray(fits.getdata(folder / "template.fits"), dtype=np.float32)
    rec: dict[str, Any] = {"field": truth["name"], "shape": list(template.shape),
                           "order": order, "status": "ok", "message": ""}
    results = {}
    for side, be in (("cpu", "numpy"), ("gpu", backend)):
        t0 = time.perf_counter()
        try:
            res = gpualign.align(source, template, backend=be, interp_order=order)
        except Exception as exc:
            rec.update(status="failed", message=f"{side}: {type(exc).__name__}: {exc}")
            rec[f"{side}_traceback"] = traceback.format_exc(limit=3)
            continue
        rec[f"{side}_s"] = time.perf_counter() - t0
        rec[f"{side}_backend"] = res.backend
        rec[f"{side}_n_match"] = int(res.solution.stats["n_match"])
        rec[f"{side}_degree"] = int(res.solution.degree)
        acc = _accuracy(res.transform, truth)
        rec[f"{side}_rms_px"], rec[f"{side}_max_px"] = acc["rms_px"], acc["max_px"]
        results[side] = res
    if len(results) == 2:
        cpu, gpu = results["cpu"], results["gpu"]
        rec.update(mapping_difference(cpu.transform, gpu.transform, template.shape))
        rec.update(pixel_difference(cpu, gpu))
    return rec


TABLE_HEAD = ("| field | CPU RMS / max px | GPU RMS / max px | matches CPU / GPU | degree | "
              "mapping diff RMS / max px | pixel diff RMS (rel) | footprint diff px | "
              "CPU s | GPU s |")


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_row(r: dict) -> str:
    """A markdown row of one field's record."""
    if r["status"] != "ok":
        return f"| {r['field']} | failed: {r['message'][:120]} |"
    return (f"| {r['field']} | {_f(r['cpu_rms_px'], '.4f')} / {_f(r['cpu_max_px'], '.4f')} | "
            f"{_f(r['gpu_rms_px'], '.4f')} / {_f(r['gpu_max_px'], '.4f')} | "
            f"{r['cpu_n_match']} / {r['gpu_n_match']} | {r['cpu_degree']} / {r['gpu_degree']} | "
            f"{_f(r.get('transform_rms_diff_px'), '.2e')} / "
            f"{_f(r.get('transform_max_diff_px'), '.2e')} | "
            f"{_f(r.get('pixel_rms_diff'), '.3g')} ({_f(r.get('pixel_rms_diff_rel'), '.1e')}) | "
            f"{r.get('footprint_mismatch', '-')} | {r['cpu_s']:.2f} | {r['gpu_s']:.2f} |")


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` works without a GPU)."""
    import fields

    ap = argparse.ArgumentParser(prog="gpu_compare.py", description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=Path, default=HERE.parent / "bench-out" / "fields",
                    help="folder of the benchmark fields (missing ones are generated)")
    ap.add_argument("--only", nargs="+", default=None, metavar="FIELD",
                    help=f"field names (default: all {len(fields.FIELDS)})")
    ap.add_argument("--order", type=int, default=3, choices=range(6), help="spline order")
    ap.add_argument("--jsonl", type=Path, default=HERE / "results" / "gpu_compare.jsonl",
                    help="JSON-lines file the records are appended to")
    ap.add_argument("--no-jsonl", action="store_true", help="write no JSON-lines record")
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the table")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Find the GPU (exit 2 with one line if there is none), then compare every field."""
    import fields

    args = build_parser().parse_args(argv)
    try:
        backend = gpu_backend()
    except NoGpu as exc:
        print(f"gpu_compare: no usable GPU: {exc}; run it on a CUDA machine with CuPy "
              "(pip install '.[cuda12]')", file=sys.stderr)
        return 2
    names = args.only or list(fields.FIELDS)
    folders = ensure_fields(args.fields, names)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# CPU vs GPU on the benchmark fields ({date})", "",
             f"Device: {backend.device}; {_metrics.machine()}; spline order {args.order}. "
             "Accuracy: landing error of the evaluation stars against the truth; mapping "
             f"diff: the two fitted mappings on a {GRID_STEP} px grid; pixel diff: GPU - CPU "
             "output where both have data.", "", TABLE_HEAD,
             "|" + "---|" * (TABLE_HEAD.count("|") - 1)]
    print("\n".join(lines), flush=True)
    failed = 0
    for folder in folders:
        rec = compare_field(folder, backend, order=args.order)
        failed += rec["status"] != "ok"
        rec.update(kind="cpu_vs_gpu", date=date, device=backend.device, host=platform.node(),
                   machine=_metrics.machine())
        if not args.no_jsonl:
            args.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        lines.append(table_row(rec))
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
