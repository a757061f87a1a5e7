"""Device compilation of the CUDA kernels (no GPU needed, only the compilers).

* nvcc: every ``kernels/*.cu`` to a cubin for sm_70, sm_80 and sm_90, warnings as
  errors. A target the installed nvcc cannot build (CUDA 13 dropped sm_70) is skipped
  with the nvcc version in the reason.
* NVRTC: the exact source and options that ``gpualign.backend._kernels`` hands to
  ``cupy.RawModule`` (header inlined, no system headers), compiled through libnvrtc
  with ctypes -- the path CuPy takes at run time. Skipped when no libnvrtc is found
  (``pip install nvidia-cuda-nvrtc-cu12`` provides the one cupy-cuda12x uses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpualign.backend import _kernels

pytestmark = pytest.mark.nvcc

REPO = Path(__file__).resolve().parents[2]
KERNEL_DIR = REPO / "kernels"
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))
ARCHS = [70, 80, 90]
ENTRY_POINTS = [f"gpualign_warp_fused_o{k}" for k in range(6)] + ["gpualign_surface_eval"]


@functools.cache
def _nvcc() -> tuple[str, str, frozenset[str]] | None:
    """(path, version line, supported sm_XX codes) of nvcc, or None."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    lines = [ln for ln in ver.stdout.splitlines() if "release" in ln]
    version = lines[-1].strip() if lines else ver.stdout.strip().splitlines()[-1]
    codes = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60)
    supported = frozenset(codes.stdout.split()) if codes.returncode == 0 else frozenset()
    return nvcc, version, supported


def test_kernel_sources_present():
    assert SOURCES, f"no .cu files in {KERNEL_DIR}"
    assert (KERNEL_DIR / "gpualign_warp.cuh").is_file()


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_nvcc_compiles_kernels(arch, tmp_path):
    info = _nvcc()
    if info is None:
        pytest.skip("nvcc not found on PATH")
    nvcc, version, supported = info
    if supported and f"sm_{arch}" not in supported:
        pytest.skip(
            f"sm_{arch} is not supported by the installed nvcc ({version}); "
            f"it builds {', '.join(sorted(supported))}"
        )
    for src in SOURCES:
        cubin = tmp_path / f"{src.stem}.sm_{arch}.cubin"
        cmd = [
            nvcc,
            "-cubin",
            f"-arch=sm_{arch}",
            "-std=c++17",
            "-O3",
            "--Werror",
            "all-warnings",
            f"-I{KERNEL_DIR}",
            "-o",
            str(cubin),
            str(src),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
        data = cubin.read_bytes()
        if src.name == "warp_fused.cu":
            for name in ENTRY_POINTS:
                assert name.encode() in data, f"{name} missing from {cubin.name}"


# --------------------------------------------------------------------------- NVRTC


def _find_nvrtc() -> str | None:
    candidates: list[str] = []
    env = os.environ.get("GPUALIGN_NVRTC")
    if env:
        candidates.append(env)
    try:
        import nvidia.cuda_nvrtc as pkg  # the wheel cupy-cuda12x loads

        for base in pkg.__path__:
            candidates += sorted(glob.glob(os.path.join(base, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    for root in filter(None, [os.environ.get("CUDA_PATH"), "/usr/local/cuda"]):
        candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "targets", "*", "lib", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for cand in candidates:
        if "builtins" in cand or ".alt." in cand:
            continue
        try:
            ctypes.CDLL(cand)
        except OSError:
            continue
        return cand
    return None


def _nvrtc_compile(lib: ctypes.CDLL, code: str, options: list[str]) -> tuple[int, str, str]:
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(
        ctypes.byref(prog), code.encode(), b"gpualign_kernels.cu", 0, None, None
    )
    assert rc == 0, f"nvrtcCreateProgram failed ({rc})"
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = ""
        if rc == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode()
        return rc, log.value.decode(errors="replace"), ptx
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"compute_{a}")
def test_nvrtc_compiles_loader_source(arch):
    path = _find_nvrtc()
    if path is None:
        pytest.skip(
            "libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or set "
            "GPUALIGN_NVRTC to the library)"
        )
    lib = ctypes.CDLL(path)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    n = ctypes.c_int()
    supported: list[int] = []
    if (
        hasattr(lib, "nvrtcGetNumSupportedArchs")
        and lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) == 0
    ):
        arr = (ctypes.c_int * n.value)()
        lib.nvrtcGetSupportedArchs(arr)
        supported = list(arr)
    if supported and arch not in supported:
        pytest.skip(f"compute_{arch} not supported by NVRTC {major.value}.{minor.value}")
    options = list(_kernels.compile_options()) + [f"-arch=compute_{arch}"]
    rc, log, ptx = _nvrtc_compile(lib, _kernels.kernel_source(), options)
    assert rc == 0, f"NVRTC {major.value}.{minor.value} failed ({rc}):\n{log}"
    # an architecture-deprecation notice (compute_70 on NVRTC 12.9) is not a code warning
    warnings = [ln for ln in log.splitlines() if "warning" in ln.lower() and "deprecated" not in ln]
    assert not warnings, log
    for name in ENTRY_POINTS:
        assert re.search(rf"\.entry\s+{name}\s*\(", ptx), f"{name} missing from PTX"
