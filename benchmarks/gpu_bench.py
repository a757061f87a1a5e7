"""GPU benchmark: time per stage and achieved bandwidth, per image size (issue 3).

Run on a CUDA machine with ``pip install .[cuda12]``::

    python benchmarks/gpu_bench.py --sizes 4096 8192 16384 30000 --out benchmarks/results/gpu.md

Stages: detection (CPU, sep, on a 4096^2 cut-out: it does not depend on the GPU),
matching and fitting (CPU), host->device transfer, spline prefilter (cupyx),
distortion-surface evaluation on the full grid (separable products), the warp via
cupyx ``map_coordinates`` with its coordinate arrays, the warp via the fused kernel,
and device->host transfer. Bandwidth of the fused warp = bytes read and written
once (4 B read + 4 B data + 1 B footprint per output pixel) / time, as a fraction of
the device's peak (from its memory clock and bus width). Without a GPU it says so
and exits 2.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np


def _peak_bandwidth(cp) -> float:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    clock_khz = props.get("memoryClockRate", 0)
    bus_bits = props.get("memoryBusWidth", 0)
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0  # DDR: two transfers per clock


def _gpu_time(cp, fn, repeat: int = 5) -> float:
    fn()  # warm-up (compilation, allocation)
    cp.cuda.Device().synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    best = np.inf
    for _ in range(repeat):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def bench_size(n: int, backend, order: int = 3) -> dict[str, float]:
    """Stage timings for an n x n float32 registration (distorted mapping)."""
    import cupyx.scipy.ndimage as cndi

    from gpualign._backend import _kernels
    from gpualign._simulate import make_mapping
    from gpualign._transform import fit_polynomial
    from gpualign._warp import prefilter

    cp = backend.xp
    shape = (n, n)
    rng = np.random.default_rng(n)
    mapping = make_mapping(
        source_shape=shape,
        template_shape=shape,
        shift=(12.3, -7.7),
        rotation_deg=17.0,
        corner_distortion_px=25.0,
    )
    # The fitted transform of a real run, from 3000 synthetic tie-points.
    tx = rng.uniform(0, n - 1, (3000, 2))
    sx = np.column_stack(mapping(tx[:, 0], tx[:, 1]))
    t = fit_polynomial(tx, sx, np.ones(3000), 5, ((n - 1) / 2, (n - 1) / 2, n / 2, n / 2))
    host = rng.normal(100.0, 10.0, size=shape).astype(np.float32)
    res: dict[str, float] = {"size": n}
    t0 = time.perf_counter()
    dev = cp.asarray(host)
    cp.cuda.Device().synchronize()
    res["h2d_s"] = time.perf_counter() - t0
    res["prefilter_s"] = _gpu_time(cp, lambda: prefilter(backend, dev, order), repeat=3)
    coeffs = prefilter(backend, dev, order)
    res["surfaces_s"] = _gpu_time(cp, lambda: t.evaluate_grid(cp, 0, n, 0, n), repeat=3)
    rows = max(1, (1 << 26) // n)  # cupyx path in row tiles of ~64 M pixels

    def cupyx_warp():
        out = cp.empty(shape, cp.float32)
        for y0 in range(0, n, rows):
            y1 = min(n, y0 + rows)
            gx, gy = t.evaluate_grid(cp, 0, n, y0, y1)
            out[y0:y1] = cndi.map_coordinates(
                coeffs,
                cp.stack([gy, gx]),
                order=order,
                mode="mirror",
                prefilter=False,
                output=cp.float32,
            )
        return out

    res["warp_cupyx_s"] = _gpu_time(cp, cupyx_warp, repeat=2)
    out = cp.empty(shape, cp.float32)
    foot = cp.empty(shape, cp.bool_)
    res["warp_fused_s"] = _gpu_time(
        cp,
        lambda: _kernels.fused_warp(
            cp, coeffs, t, shape, 0, n, order, float("nan"), out=out, footprint=foot
        ),
    )
    t0 = time.perf_counter()
    cp.asnumpy(out)
    res["d2h_s"] = time.perf_counter() - t0
    moved = n * n * (4 + 4 + 1)
    res["fused_bandwidth_frac"] = moved / res["warp_fused_s"] / _peak_bandwidth(cp)
    res["fused_speedup_vs_cupyx"] = res["warp_cupyx_s"] / res["warp_fused_s"]
    return res


def bench_cpu_stages() -> dict[str, float]:
    """Detection and matching/fitting on the CPU for a 4096^2 distorted pair."""
    import gpualign
    from gpualign._detect import detect_many
    from gpualign._pipeline import solve
    from gpualign._simulate import make_mapping, simulate_pair

    shape = (4096, 4096)
    m = make_mapping(
        source_shape=shape,
        template_shape=shape,
        shift=(12.3, -7.7),
        rotation_deg=17.0,
        corner_distortion_px=20.0,
    )
    p = simulate_pair(shape, mapping=m, n_stars=12000, seed=3)
    t0 = time.perf_counter()
    cats = detect_many([(p.template, None), (p.source, None)])
    t1 = time.perf_counter()
    solve(cats[1], cats[0])
    t2 = time.perf_counter()
    t3 = time.perf_counter()
    gpualign.align(p.source, p.template, backend="cupy")
    return {
        "detect_4k_s": t1 - t0,
        "match_fit_4k_s": t2 - t1,
        "full_align_4k_s": time.perf_counter() - t3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384, 30000])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--out", default=None, help="markdown file to write the table to")
    args = ap.parse_args()
    import gpualign

    try:
        backend = gpualign.get_backend("cupy")
    except gpualign.BackendUnavailable as exc:
        print(f"gpu_bench: no GPU: {exc}", file=sys.stderr)
        return 2
    lines = [
        f"# GPU benchmark ({datetime.date.today()}, {backend.device})",
        "",
        f"spline order {args.order}; times are the best of several runs (CUDA events).",
        "",
        "| size | h2d s | prefilter s | surfaces s | warp cupyx s | warp fused s | "
        "fused/cupyx | fused bandwidth | d2h s |",
        "|" + "---|" * 9,
    ]
    for n in args.sizes:
        r = bench_size(n, backend, args.order)
        lines.append(
            f"| {n} | {r['h2d_s']:.4f} | {r['prefilter_s']:.4f} | {r['surfaces_s']:.4f} | "
            f"{r['warp_cupyx_s']:.4f} | {r['warp_fused_s']:.5f} | "
            f"{r['fused_speedup_vs_cupyx']:.1f}x | {100 * r['fused_bandwidth_frac']:.0f}% | "
            f"{r['d2h_s']:.4f} |"
        )
        print(lines[-1], flush=True)
    cpu = bench_cpu_stages()
    lines += [
        "",
        "CPU stages (4096^2 distorted pair): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
