"""Distortion model poly vs tps vs auto: landing errors and fit time.

(a) the benchmark fields (``benchmarks/fields.py``; an existing folder of fields
with --fields, else generated into /work/bench-fields-tps), scored as
run_gpualign.py does (landing errors of the evaluation stars vs truth.json);
(b) the real JWST epoch with the known rotation + radial distortion of
tests/pipeline/test_real_images.py (scored on the 40 brightest sources vs the truth).

Usage::

    python benchmarks/bench_tps.py [--fields DIR] [--only FIELD ...] [--no-jwst]

Prints one markdown table row per case and variant (``fit_s`` = Solution timings'
"fit": refinement, model choice, final and inverse fits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "pipeline"))

import _metrics  # noqa: E402

import gpualign  # noqa: E402

VARIANTS = ("poly", "tps", "auto")


def _row(case: str, variant: str, sol, wall: float, stats: dict) -> str:
    d = sol.transform.distortion
    extra = getattr(sol, "distortion_scores", None)
    return (f"| {case} | {variant} | {d.name} | {len(sol.template_xy)} | "
            f"{stats['rms']:.4f} | {stats['max']:.4f} | {sol.timings.get('fit', float('nan')):.2f}"
            f" | {wall:.2f} | {extra or ''} |")


def bench_fields(fields: Path, only: list[str]) -> None:
    from astropy.io import fits

    for field in sorted(p for p in fields.iterdir() if (p / "truth.json").exists()):
        if only and field.name not in only:
            continue
        truth = _metrics.load_truth(field)
        source = fits.getdata(field / "source.fits").astype(np.float32)
        template = fits.getdata(field / "template.fits").astype(np.float32)
        for v in VARIANTS:
            t0 = time.perf_counter()
            try:
                sol = gpualign.find_transform(source, template, backend="numpy", distortion=v)
            except Exception as exc:  # noqa: BLE001
                print(f"| {field.name} | {v} | failed: {exc} |", flush=True)
                continue
            wall = time.perf_counter() - t0
            err = _metrics.landing_errors(sol.transform, truth["stars_template"],
                                          truth["stars_source"])
            st = _metrics.error_stats(err)
            stats = {"rms": st["rms_px"] or float("nan"), "max": st["max_px"] or float("nan")}
            print(_row(field.name, v, sol, wall, stats), flush=True)


def bench_jwst() -> None:
    import test_real_images as tri

    from gpualign._simulate import error_stats, make_mapping, position_errors, warp_real_image

    for p in tri.JWST_CASES:
        path, kw = p.values
        template, _ = tri._image_hdu(path)
        mapping = make_mapping(source_shape=template.shape, template_shape=template.shape, **kw)
        source = warp_real_image(template, mapping, template.shape)
        stars = tri._bright_sources(template, mapping)
        for v in VARIANTS:
            t0 = time.perf_counter()
            sol = gpualign.find_transform(source, template, backend="numpy", distortion=v)
            wall = time.perf_counter() - t0
            stats = error_stats(position_errors(sol.transform, mapping, stars))
            print(_row(f"jwst-{p.id}", v, sol, wall, stats), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=Path, default=Path("/work/bench-fields"))
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--no-jwst", action="store_true")
    args = ap.parse_args(argv)
    print(f"{_metrics.now()} | {_metrics.machine()}")
    print("| case | asked | model | pairs | rms px | max px | fit s | solve s | held-out |")
    print("|---|---|---|---|---|---|---|---|---|")
    if not args.no_jwst:
        bench_jwst()
    if args.fields.exists():
        bench_fields(args.fields, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
