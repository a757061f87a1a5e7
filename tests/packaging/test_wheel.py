"""The wheel ships the CUDA sources, and the installed loader finds them there."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNEL_FILES = ["gpualign/kernels/warp_fused.cu", "gpualign/kernels/gpualign_warp.cuh"]


HOST_LIB = "gpualign/libgpualign_host.so"
HAVE_COMPILER = any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def _build_wheel(out: Path, env: dict | None = None) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (pip install build)")
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-isolation")  # fast, offline; else build fetches hatchling
    res = subprocess.run(cmd + [str(REPO)], capture_output=True, text=True, timeout=600,
                         env=env)
    assert res.returncode == 0, f"wheel build failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    wheels = sorted(out.glob("gpualign-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_contains_kernels(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in KERNEL_FILES:
        assert name in names, f"{name} missing from {wheel.name}"
    assert "gpualign/backend/_kernels.py" in names
    for src in (REPO / "kernels").glob("*.cu*"):
        assert f"gpualign/kernels/{src.name}" in names, f"{src.name} not shipped"


def test_installed_loader_reads_packaged_kernels(wheel, tmp_path):
    # Unpack the wheel (what pip would install) and import it from there, not from the repo.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import gpualign.backend._kernels as k, pathlib, sys; "
        "d = k.kernel_source_dir(); "
        f"assert d == pathlib.Path({str(site)!r}, 'gpualign', 'kernels').resolve(), d; "
        "assert 'GPUALIGN_WARP_CUH' in k.kernel_source(); "
        "assert 'cupy' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]


def test_wheel_ships_the_host_library_and_it_loads(wheel, tmp_path):
    if not HAVE_COMPILER:
        pytest.skip("no C++ compiler: the wheel is pure Python by design")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert HOST_LIB in names
    assert "gpualign/kernels/host_warp.cpp" in names
    assert "-none-any" not in wheel.name  # a platform wheel, as it carries a binary
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from gpualign.backend import _host; import pathlib; s = _host.status(); "
        f"assert s.startswith('compiled (' + str(pathlib.Path({str(site)!r}).resolve())), s"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr[-3000:]


def test_wheel_without_a_working_compiler_is_pure_python(tmp_path):
    # A compiler that fails: the build goes on, the wheel has no library, and the
    # warp falls back to SciPy (tests/warp/test_host_warp.py checks that path's pixels).
    env = {**os.environ, "CXX": shutil.which("false") or "/bin/false"}
    built = _build_wheel(tmp_path, env)
    names = set(zipfile.ZipFile(built).namelist())
    assert HOST_LIB not in names
    assert "gpualign/kernels/warp_fused.cu" in names
    assert built.name.endswith("-py3-none-any.whl"), built.name
