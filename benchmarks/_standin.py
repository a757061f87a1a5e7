"""Run a GPU benchmark script on the strict CPU stand-in for CuPy (no GPU needed).

    python benchmarks/_standin.py benchmarks/gpu_bench.py --sizes 256 --no-jsonl
    python benchmarks/_standin.py benchmarks/gpu_compare.py --only few8

``benchmarks/gpu_session.sh --dry-run`` runs its Python steps this way, so that CI
executes every step of the GPU session end to end without a GPU. The stand-in
(``tests/gpu/strict_cupy``: only CuPy's names, no implicit host/device conversion,
SciPy's arithmetic) becomes gpualign's CuPy through its own ``install``, then the
script's ``main(argv)`` runs and its return value is the exit code.

gpu_bench.py's fused-kernel stage is replaced by cupyx sampling on the surfaces'
coordinates (as tests/gpu/test_gpu_bench.py does): a dry run proves the session's
plumbing, not the kernel's speed or its pixels.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def install_standin() -> Any:
    """Make ``tests/gpu/strict_cupy`` gpualign's CuPy for the rest of this process."""
    import pytest

    sys.path.insert(0, str(REPO / "tests" / "gpu"))
    import strict_cupy

    strict_cupy.install(pytest.MonkeyPatch())  # never undone: the process ends with the run
    return strict_cupy


def fused_by_cupyx(cp: Any, coeffs: Any, t: Any, shape: tuple[int, int], order: int,
                   out: Any, foot: Any) -> tuple[Any, Any]:
    """Stand-in for the fused kernel launch: cupyx sampling and the source-bounds footprint."""
    ny, nx = shape
    coords = t.source_coords(cp, 0, nx, 0, ny)
    cp.ndimage.map_coordinates(coeffs, coords, order=order, mode="mirror", prefilter=False,
                               output=out)
    sh, sw = coeffs.shape
    foot[...] = ((coords[0] >= -0.5) & (coords[0] <= sh - 0.5)
                 & (coords[1] >= -0.5) & (coords[1] <= sw - 0.5))
    return out, foot


def run(script: Path, argv: list[str]) -> int:
    """Import ``script`` by path, adapt it to the stand-in, return ``main(argv)``."""
    install_standin()
    spec = importlib.util.spec_from_file_location(script.stem, script)
    if spec is None or spec.loader is None:
        raise SystemExit(f"_standin: cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    if hasattr(module, "_fused_stage"):  # gpu_bench.py
        module._fused_stage = fused_by_cupyx
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    return run(Path(args[0]).resolve(), args[1:])


if __name__ == "__main__":
    sys.exit(main())
