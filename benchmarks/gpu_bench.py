"""GPU benchmark: time per stage and achieved bandwidth, per image size (issue 3).

Run on a CUDA machine with ``pip install .[cuda12]``::

    python benchmarks/gpu_bench.py                       # 4k 8k 16k 30k + full 16k run
    python benchmarks/gpu_bench.py --sizes 4k 8k --full-size 8k     # a quicker look
    python benchmarks/gpu_bench.py --max-size 16k --out benchmarks/results/gpu.md

For every size (a simulated, rotated and distorted n x n float32 pair, star density
of the wide8k field) each stage is timed on that size's own pair:

* detection: sep on the CPU, template and source (``detect_many``);
* matching and fitting: ``solve(..., backend=<CuPy backend>)``, i.e. the quad and
  cross matching as chunked distance matrices on the device (``match``) and the
  refinement/fits (``fit``) -- the transform found is the one warped below;
* transfers: the source image host -> device, the warped data and footprint
  device -> host (``h2d``, ``d2h``; wall time around a synchronize);
* distortion evaluation: the fitted surfaces on the whole output grid as separable
  products (``Transform.source_coords``), in the row tiles the cupyx warp uses;
* spline prefilter (cupyx ``spline_filter1d``, both axes), its own stage;
* warp via cupyx: ``map_coordinates`` with its coordinate arrays, in row tiles of
  ~64 M pixels (the reference path);
* warp via the fused kernel (``kernels/warp_fused.cu``: source position and spline
  sample in one pass, data and footprint written, no coordinate arrays).

GPU stages are the best of ``--repeat`` runs timed with CUDA events after a warm-up.
Achieved bandwidth = bytes a stage must move at least / time, as a fraction of the
device's peak (2 x memory clock x bus width; ``--peak-gbps`` overrides). The fused
warp moves 4 B read per source pixel + 4 B data + 1 B footprint per output pixel;
the prefilter reads and writes the image once per axis (16 B per pixel).

Then a whole 16384^2 registration (``gpualign.align`` on a simulated pair, detection
included, result back on the host) is timed once after a warm-up, against the issue's
"under 3 s". The issue's targets are printed beside the measurements. One JSON line
per size and one for the whole run, each with the device name, are appended to
``--jsonl``. Without CuPy or a CUDA device it prints one line saying why and exits 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: Size names of issue 3 (4k, 8k, 16k, 30k float32) and the pixels they stand for.
SIZE_ALIASES = {"4k": 4096, "8k": 8192, "16k": 16384, "30k": 30000}
DEFAULT_SIZES = ("4k", "8k", "16k", "30k")
#: Stars per pixel: the wide8k field's 20000 stars on 8192^2 (benchmarks/bench_mosaic.py).
DENSITY = 20000 / 8192**2
MIN_STARS = 300
#: Output pixels per tile of the cupyx reference warp (and of the surface evaluation).
TILE_PIXELS = 1 << 26
#: Issue 3's targets (on an H100).
TARGET_SIZE = 16384
TARGET_FUSED_S = 3e-3
TARGET_FUSED_FLOOR_RATIO = 3.0
TARGET_FUSED_SPEEDUP = 10.0
TARGET_FULL_S = 3.0


class NoGpu(Exception):
    """CuPy or a CUDA device is unavailable (the script exits 2 with one line)."""


# ---------------------------------------------------------------- pure helpers


def parse_size(text: str) -> int:
    """``"4k"`` / ``"8k"`` / ``"16k"`` / ``"30k"`` (issue 3's names) or pixels (``"2048"``)."""
    key = str(text).strip().lower()
    if key in SIZE_ALIASES:
        return SIZE_ALIASES[key]
    try:
        n = int(key)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: use pixels or one of {', '.join(SIZE_ALIASES)}"
        ) from None
    if n < 64:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: at least 64 pixels")
    return n


def select_sizes(sizes: Sequence[int], max_size: int | None = None) -> list[int]:
    """Distinct sizes, ascending, those above ``max_size`` dropped."""
    return sorted({int(n) for n in sizes if max_size is None or int(n) <= max_size})


def stars_for(n: int) -> int:
    """Stars on an n x n template at the wide8k field's density (at least MIN_STARS)."""
    return max(MIN_STARS, int(round(DENSITY * n * n)))


def peak_bandwidth(memory_clock_khz: float | None, bus_width_bits: float | None) -> float | None:
    """Device memory bandwidth in bytes/s: two transfers per memory clock (DDR/HBM)."""
    if not memory_clock_khz or not bus_width_bits:
        return None
    return 2.0 * float(memory_clock_khz) * 1e3 * float(bus_width_bits) / 8.0


def warp_bytes(out_pixels: int, src_pixels: int) -> int:
    """Least bytes a warp moves: source read once (4 B), data (4 B) + footprint (1 B) written."""
    return 4 * int(src_pixels) + 5 * int(out_pixels)


def prefilter_bytes(pixels: int) -> int:
    """Least bytes of the separable prefilter: per axis, float32 read once, written once."""
    return 2 * (4 + 4) * int(pixels)


def bandwidth_fraction(nbytes: float, seconds: float | None, peak: float | None) -> float | None:
    """``nbytes / seconds`` as a fraction of ``peak`` (None when either is unknown)."""
    if not peak or not seconds or seconds <= 0:
        return None
    return float(nbytes) / float(seconds) / float(peak)


def device_bytes_needed(n: int) -> int:
    """Device memory the stage benchmark holds at once for an n x n image, roughly.

    Source, prefiltered copy, two float32 outputs (cupyx and fused) and the footprint
    (17 B per pixel), plus one cupyx tile's float64 coordinates and temporaries.
    """
    return 17 * n * n + 3 * 16 * TILE_PIXELS


def evaluate_targets(records: Sequence[dict], full: dict | None) -> list[dict[str, Any]]:
    """Issue 3's targets against the measured records.

    Returns one dict per target: ``name``, ``value`` (None when not measured),
    ``target`` (text), ``ok`` (bool, or None when not measured) and ``note``.
    """
    at = {r.get("size"): r for r in records if r.get("warp_fused_s") is not None}
    r = at.get(TARGET_SIZE)
    out: list[dict[str, Any]] = []
    if r is None:
        miss = f"{TARGET_SIZE} not among the sizes run"
        out.append(dict(name=f"fused warp {TARGET_SIZE}^2", value=None, ok=None, note=miss,
                        target=f"<= {TARGET_FUSED_FLOOR_RATIO:g}x the bandwidth floor"))
        out.append(dict(name=f"fused vs cupyx {TARGET_SIZE}^2", value=None, ok=None, note=miss,
                        target=f">= {TARGET_FUSED_SPEEDUP:g}x faster"))
    else:
        t = r["warp_fused_s"]
        floor = r.get("fused_floor_s")
        if floor:
            ratio = t / floor
            ok = ratio <= TARGET_FUSED_FLOOR_RATIO
            note = (f"{ratio:.2f}x the floor ({r['fused_bytes'] / 1e9:.2f} GB at "
                    f"{r['peak_bandwidth_gbps']:.0f} GB/s = {1e3 * floor:.3f} ms)")
        else:
            ok = t <= TARGET_FUSED_S
            note = "device peak bandwidth unknown: compared with 3 ms"
        out.append(dict(name=f"fused warp {TARGET_SIZE}^2 order {r.get('order')}", value=t,
                        ok=ok, note=note,
                        target=f"<= {TARGET_FUSED_FLOOR_RATIO:g}x the bandwidth floor "
                               f"(~{1e3 * TARGET_FUSED_S:g} ms on an H100)"))
        speedup = r["warp_cupyx_s"] / t
        out.append(dict(name=f"fused vs cupyx {TARGET_SIZE}^2", value=speedup,
                        ok=speedup >= TARGET_FUSED_SPEEDUP, note="",
                        target=f">= {TARGET_FUSED_SPEEDUP:g}x faster"))
    if full is None or full.get("full_align_s") is None:
        out.append(dict(name="full registration", value=None, ok=None,
                        target=f"< {TARGET_FULL_S:g} s at {TARGET_SIZE}^2",
                        note="not measured"))
    else:
        ok = full["full_align_s"] < TARGET_FULL_S if full["size"] == TARGET_SIZE else None
        out.append(dict(name=f"full registration {full['size']}^2 (detection included)",
                        value=full["full_align_s"], ok=ok,
                        target=f"< {TARGET_FULL_S:g} s at {TARGET_SIZE}^2",
                        note=", ".join(f"{k} {v:.2f} s" for k, v in full["timings"].items())))
    return out


def format_targets(targets: Sequence[dict]) -> list[str]:
    """One line per target: value, target, PASS/FAIL/not measured."""
    lines = []
    for t in targets:
        if t["value"] is None:
            verdict, value = "not measured", "-"
        else:
            verdict = {True: "PASS", False: "FAIL", None: "no target at this size"}[t["ok"]]
            value = (f"{t['value']:.1f}x" if t["name"].startswith("fused vs")
                     else f"{1e3 * t['value']:.3f} ms" if t["name"].startswith("fused warp")
                     else f"{t['value']:.2f} s")
        note = f" [{t['note']}]" if t["note"] else ""
        lines.append(f"- {t['name']}: {value} (target {t['target']}): {verdict}{note}")
    return lines


TABLE_HEAD = (
    "| size | stars | detect CPU s | match s | fit s | h2d s | surfaces s | prefilter s "
    "| warp cupyx s | warp fused s | fused/cupyx | fused BW | prefilter BW | d2h s |"
)


def table_row(r: dict) -> str:
    """A markdown row of one size's record."""
    if r.get("skipped"):
        return f"| {r['size']} | skipped: {r['skipped']} |"

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    return (
        f"| {r['size']} | {r['n_stars']} | {r['detect_s']:.2f} | {r['match_s']:.3f} | "
        f"{r['fit_s']:.3f} | {r['h2d_s']:.4f} | {r['surfaces_s']:.4f} | "
        f"{r['prefilter_s']:.4f} | {r['warp_cupyx_s']:.4f} | {r['warp_fused_s']:.5f} | "
        f"{r['fused_speedup_vs_cupyx']:.1f}x | {pct(r['fused_bandwidth_frac'])} | "
        f"{pct(r['prefilter_bandwidth_frac'])} | {r['d2h_s']:.4f} |"
    )


# ---------------------------------------------------------------- device side


def gpu_backend() -> Any:
    """The CuPy backend, or :class:`NoGpu` with a one-line reason."""
    import gpualign

    try:
        return gpualign.get_backend("cupy")
    except gpualign.BackendUnavailable as exc:
        raise NoGpu(str(exc.args[0]).splitlines()[0]) from None


def device_info(backend: Any, peak_override_gbps: float | None = None) -> dict[str, Any]:
    """Name, memory, peak bandwidth and versions of the backend's current device."""
    cp = backend.xp
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props.get("name", f"CUDA device {dev.id}")
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        attrs = dict(dev.attributes)
    except Exception:
        attrs = {}
    # cudaDeviceProp lost memoryClockRate in CUDA 13; the attribute query still has it.
    clock = props.get("memoryClockRate") or attrs.get("MemoryClockRate")
    bus = props.get("memoryBusWidth") or attrs.get("GlobalMemoryBusWidth")
    peak = (peak_override_gbps * 1e9 if peak_override_gbps else peak_bandwidth(clock, bus))
    try:
        runtime = int(cp.cuda.runtime.runtimeGetVersion())
        runtime_s = f"{runtime // 1000}.{runtime % 1000 // 10}"
    except Exception:
        runtime_s = "unknown"
    return {
        "device": name,
        "device_memory_gib": round(dev.mem_info[1] / 2**30, 1),
        "peak_bandwidth_gbps": None if peak is None else peak / 1e9,
        "peak_bandwidth_source": ("--peak-gbps" if peak_override_gbps
                                  else "memory clock x bus width" if peak else "unknown"),
        "cupy": getattr(cp, "__version__", "unknown"),
        "cuda_runtime": runtime_s,
    }


def _sync(cp: Any) -> None:
    cp.cuda.Device().synchronize()


def gpu_time(cp: Any, fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best of ``repeat`` runs of ``fn`` in seconds (CUDA events), after one warm-up."""
    fn()  # compilation, allocation
    _sync(cp)
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    best = np.inf
    for _ in range(max(1, repeat)):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(best)


def simulate(n: int, seed: int | None = None) -> Any:
    """A rotated, shifted, distorted n x n float32 pair at the wide8k star density."""
    from gpualign._simulate import make_mapping, simulate_pair

    shape = (n, n)
    mapping = make_mapping(source_shape=shape, template_shape=shape, shift=(12.3, -7.7),
                           rotation_deg=17.0, corner_distortion_px=25.0 * n / 8192)
    return simulate_pair(shape, mapping=mapping, n_stars=stars_for(n),
                         seed=n if seed is None else seed)


def _free_pool(cp: Any) -> None:
    try:
        cp.get_default_memory_pool().free_all_blocks()
    except Exception:
        pass


def _fused_stage(cp: Any, coeffs: Any, transform: Any, shape: tuple[int, int], order: int,
                 out: Any, foot: Any) -> Any:
    from gpualign.backend import _kernels

    return _kernels.fused_warp(cp, coeffs, transform, shape, 0, shape[0], order,
                               float("nan"), out=out, footprint=foot)


def bench_size(n: int, backend: Any, *, order: int = 3, repeat: int = 3,
               peak: float | None = None, fused: Callable[..., Any] | None = None
               ) -> dict[str, Any]:
    """Every stage of an n x n registration on ``backend``; seconds per stage.

    ``fused(cp, coeffs, transform, shape, order, out, footprint)`` launches the fused
    warp (default: gpualign's kernel); tests without a GPU pass a stand-in.
    """
    from gpualign.detect import detect_many
    from gpualign.pipeline._api import solve
    from gpualign.warp._resample import prefilter

    cp, ndi = backend.xp, backend.ndimage
    fused = fused or _fused_stage
    shape = (n, n)
    t0 = time.perf_counter()
    pair = simulate(n)
    res: dict[str, Any] = {"size": n, "order": order, "n_stars": stars_for(n),
                           "simulate_s": time.perf_counter() - t0}

    # detection (CPU), then matching and fitting on the GPU backend
    t0 = time.perf_counter()
    tmpl_cat, src_cat = detect_many([(pair.template, None), (pair.source, None)])
    res["detect_s"] = time.perf_counter() - t0
    res["n_detected"] = [len(tmpl_cat), len(src_cat)]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    solution = solve(src_cat, tmpl_cat, timings=timings, backend=backend)
    res["solve_s"] = time.perf_counter() - t0
    res["match_s"], res["fit_s"] = timings["match"], timings["fit"]
    res["n_match"], res["degree"] = len(solution.template_xy), int(solution.degree)
    t = solution.transform
    host = np.ascontiguousarray(pair.source, dtype=np.float32)
    del pair

    # host -> device, once
    _sync(cp)
    t0 = time.perf_counter()
    dev = backend.to_device(host)
    _sync(cp)
    res["h2d_s"] = time.perf_counter() - t0
    res["h2d_gbps"] = host.nbytes / res["h2d_s"] / 1e9
    del host

    rows = max(1, TILE_PIXELS // n)
    tiles = [(y0, min(n, y0 + rows)) for y0 in range(0, n, rows)]

    def surfaces() -> None:
        for y0, y1 in tiles:
            t.source_coords(cp, 0, n, y0, y1)

    res["surfaces_s"] = gpu_time(cp, surfaces, repeat)
    res["prefilter_s"] = gpu_time(cp, lambda: prefilter(backend, dev, order), repeat)
    coeffs = prefilter(backend, dev, order)
    dev = None  # frees the raw image (the closures above hold the name, not the array)
    out_c = cp.empty(shape, dtype=cp.float32)

    def cupyx_warp() -> None:
        for y0, y1 in tiles:
            coords = t.source_coords(cp, 0, n, y0, y1)  # [sy, sx], float64
            ndi.map_coordinates(coeffs, coords, order=order, mode="mirror", prefilter=False,
                                output=out_c[y0:y1])

    res["warp_cupyx_s"] = gpu_time(cp, cupyx_warp, max(1, min(repeat, 2)))
    out = cp.empty(shape, dtype=cp.float32)
    foot = cp.empty(shape, dtype=cp.bool_)
    res["warp_fused_s"] = gpu_time(cp, lambda: fused(cp, coeffs, t, shape, order, out, foot),
                                   repeat)
    # the two warps agree inside the footprint (a sanity check of what was timed)
    diff = float(backend.to_host(cp.where(foot, cp.abs(out - out_c), 0.0).max()))
    scale = float(backend.to_host(cp.where(foot, cp.abs(out_c), 0.0).max()))
    res["fused_vs_cupyx_max_rel"] = diff / max(scale, 1e-30)
    res["footprint_frac"] = int(backend.to_host(cp.count_nonzero(foot))) / (n * n)
    coeffs = out_c = None

    # device -> host: data and footprint
    _sync(cp)
    t0 = time.perf_counter()
    backend.to_host(out)
    backend.to_host(foot)
    res["d2h_s"] = time.perf_counter() - t0
    res["d2h_gbps"] = (out.nbytes + foot.nbytes) / res["d2h_s"] / 1e9
    res["transfers_s"] = res["h2d_s"] + res["d2h_s"]
    out = foot = None
    _free_pool(cp)

    res["fused_bytes"] = warp_bytes(n * n, n * n)
    res["peak_bandwidth_gbps"] = None if peak is None else peak / 1e9
    res["fused_floor_s"] = None if peak is None else res["fused_bytes"] / peak
    res["fused_bandwidth_frac"] = bandwidth_fraction(res["fused_bytes"], res["warp_fused_s"], peak)
    res["prefilter_bandwidth_frac"] = bandwidth_fraction(prefilter_bytes(n * n),
                                                         res["prefilter_s"], peak)
    res["fused_speedup_vs_cupyx"] = res["warp_cupyx_s"] / res["warp_fused_s"]
    return res


def warm_up(backend: Any, order: int = 3, n: int = 1024) -> float:
    """One small whole registration: CuPy's and gpualign's kernels compiled before timing."""
    import gpualign

    pair = simulate(n, seed=1)
    t0 = time.perf_counter()
    gpualign.align(pair.source, pair.template, backend=backend, interp_order=order)
    return time.perf_counter() - t0


def bench_full(n: int, backend: Any, *, order: int = 3) -> dict[str, Any]:
    """A whole registration of an n x n simulated pair: ``gpualign.align``, detection included.

    Timed from the host images to the warped image back on the host (run
    :func:`warm_up` first so that kernel compilation is not counted).
    """
    import gpualign

    pair = simulate(n)
    t0 = time.perf_counter()
    result = gpualign.align(pair.source, pair.template, backend=backend, interp_order=order)
    total = time.perf_counter() - t0
    timings = {k: float(v) for k, v in result.solution.timings.items()}
    return {"size": n, "order": order, "n_stars": stars_for(n), "full_align_s": total,
            "timings": timings, "n_match": len(result.solution.template_xy),
            "degree": int(result.solution.degree), "backend": result.backend,
            "target_s": TARGET_FULL_S}


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` works without a GPU)."""
    ap = argparse.ArgumentParser(
        prog="gpu_bench.py", description=__doc__.splitlines()[0],
        epilog="Sizes: pixels per side or 4k (4096), 8k (8192), 16k (16384), 30k (30000).")
    ap.add_argument("--sizes", type=parse_size, nargs="+",
                    default=[SIZE_ALIASES[k] for k in DEFAULT_SIZES],
                    help="image sizes to time every stage at (default: 4k 8k 16k 30k)")
    ap.add_argument("--max-size", type=parse_size, default=None,
                    help="drop the sizes above this one (e.g. --max-size 16k)")
    ap.add_argument("--full-size", type=parse_size, default=TARGET_SIZE,
                    help="size of the whole-registration run (default 16k)")
    ap.add_argument("--no-full", action="store_true", help="skip the whole-registration run")
    ap.add_argument("--order", type=int, default=3, choices=range(6), help="spline order")
    ap.add_argument("--repeat", type=int, default=3, help="runs per GPU stage (best kept)")
    ap.add_argument("--peak-gbps", type=float, default=None,
                    help="device memory bandwidth in GB/s (default: from the device)")
    ap.add_argument("--jsonl", type=Path, default=HERE / "results" / "gpu.jsonl",
                    help="JSON-lines file the records are appended to")
    ap.add_argument("--no-jsonl", action="store_true", help="write no JSON-lines record")
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the table")
    return ap


def _git() -> str:
    try:
        return subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def _oom_types(cp: Any) -> tuple[type[BaseException], ...]:
    try:
        oom = cp.cuda.memory.OutOfMemoryError
    except Exception:  # a CuPy without it, or the CPU stand-in
        oom = None
    return (MemoryError,) + ((oom,) if isinstance(oom, type) else ())


def run(args: argparse.Namespace, backend: Any) -> int:
    """Time every size, the whole registration, print and record."""
    cp = backend.xp
    info = device_info(backend, args.peak_gbps)
    peak = None if info["peak_bandwidth_gbps"] is None else info["peak_bandwidth_gbps"] * 1e9
    sizes = select_sizes(args.sizes, args.max_size)
    common = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **info, "host": platform.node(), "git": _git()}
    peak_txt = ("unknown" if peak is None
                else f"{peak / 1e9:.0f} GB/s ({info['peak_bandwidth_source']})")
    lines = [
        f"# GPU benchmark: {info['device']} ({common['date']})",
        "",
        f"{info['device_memory_gib']} GiB, peak memory bandwidth {peak_txt}; CuPy {info['cupy']}, "
        f"CUDA runtime {info['cuda_runtime']}; spline order {args.order}. GPU stages: best of "
        f"{args.repeat} (CUDA events); detection is sep on the CPU (template + source).",
        "",
        TABLE_HEAD,
        "|" + "---|" * (TABLE_HEAD.count("|") - 1),
    ]
    print("\n".join(lines), flush=True)

    def record(kind: str, rec: dict) -> None:  # appended as soon as measured
        if not args.no_jsonl:
            args.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps({"kind": kind, **common, **rec}) + "\n")

    warm = warm_up(backend, args.order, n=min(1024, min(sizes or [1024]), args.full_size))
    records: list[dict[str, Any]] = []
    oom = _oom_types(cp)
    for n in sizes:
        need, free = device_bytes_needed(n), int(backend.free_memory())
        if free and need > free:
            rec = {"size": n, "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                                         f"{free / 2**30:.1f} GiB free on the device"}
        else:
            try:
                rec = bench_size(n, backend, order=args.order, repeat=args.repeat, peak=peak)
            except oom as exc:
                _free_pool(cp)
                rec = {"size": n, "skipped": f"out of memory ({type(exc).__name__})"}
        records.append(rec)
        record("stages", rec)
        lines.append(table_row(rec))
        print(lines[-1], flush=True)
    full = None
    if not args.no_full:
        full = bench_full(args.full_size, backend, order=args.order)
        full["warm_up_s"] = warm
        record("full_registration", full)
        lines += ["", f"Whole registration, {full['size']}^2 (gpualign.align, detection "
                  f"included, result on the host): {full['full_align_s']:.2f} s "
                  f"(target < {TARGET_FULL_S:g} s at {TARGET_SIZE}^2); "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in full["timings"].items())]
        print("\n" + lines[-1], flush=True)
    lines += ["", "Targets (issue 3, on an H100):"] + format_targets(
        evaluate_targets(records, full))
    text = "\n".join(lines) + "\n"
    print("\n" + "\n".join(lines[lines.index("Targets (issue 3, on an H100):"):]), flush=True)
    if args.out:
        args.out.write_text(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, find the GPU (exit 2 with one line if there is none), run."""
    args = build_parser().parse_args(argv)
    try:
        backend = gpu_backend()
    except NoGpu as exc:
        print(f"gpu_bench: no usable GPU: {exc}; run it on a CUDA machine with CuPy "
              "(pip install '.[cuda12]')", file=sys.stderr)
        return 2
    return run(args, backend)


if __name__ == "__main__":
    sys.exit(main())
