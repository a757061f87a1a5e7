"""Wheel build hook: compile the host (CPU) build of the warp's primitives.

``kernels/host_warp.cpp`` (the spline sampling of ``gpualign_warp.cuh`` and the
B-spline prefilter) is built with the system C++ compiler into
``gpualign/libgpualign_host.so``, which the NumPy backend's warp calls through ctypes
(``gpualign/backend/_host.py``). Without a compiler, or with
``GPUALIGN_NO_HOST_BUILD=1``, the wheel stays pure Python and the warp uses
``scipy.ndimage`` (the same values, about half the speed). The compiler is ``$CXX``,
else ``c++``, ``g++`` or ``clang++``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LIB_NAME = "libgpualign_host.so"
SOURCE = "host_warp.cpp"
# No value-changing optimisation: the sampler must equal SciPy's bit for bit.
FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared"]


def _compiler() -> str | None:
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HostSamplerBuildHook(BuildHookInterface):
    """Compile libgpualign_host.so into the wheel (or the source tree when editable)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        """Build the library; on any failure leave a pure-Python wheel and say why."""
        if self.target_name != "wheel" or os.environ.get("GPUALIGN_NO_HOST_BUILD") == "1":
            return
        if not sys.platform.startswith("linux") and sys.platform != "darwin":
            self.app.display_warning("gpualign: host sampler not built on this platform")
            return
        kernels = Path(self.root) / "kernels"
        cxx = _compiler()
        if cxx is None:
            self.app.display_warning(
                "gpualign: no C++ compiler found; the CPU warp will use SciPy's sampler")
            return
        if version == "editable":
            target = Path(self.root) / "gpualign" / LIB_NAME
        else:
            target = Path(tempfile.mkdtemp(prefix="gpualign-host-")) / LIB_NAME
        cmd = [cxx, *FLAGS, f"-I{kernels}", str(kernels / SOURCE), "-o", str(target)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.app.display_warning(f"gpualign: host sampler not built ({exc})")
            return
        if res.returncode != 0:
            self.app.display_warning(
                "gpualign: host sampler not built; the CPU warp will use SciPy's "
                f"sampler. Compiler said:\n{res.stderr[-2000:]}")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"gpualign/{LIB_NAME}"
