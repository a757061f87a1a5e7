"""``cupy.RawModule`` / ``cupy.RawKernel`` of the stand-in: the CUDA source run on the host.

A GPU compiles the source with NVRTC and runs ``grid x block`` threads. The stand-in
compiles the *same source* with the host C++ compiler (``$CXX``, ``c++``, ``g++`` or
``clang++``), once per source and options (the shared library is cached in a
temporary directory, keyed on everything that goes into it), and runs a launch by
calling the kernel for every (block, thread) index in turn, ``blockIdx``,
``threadIdx``, ``blockDim`` and ``gridDim`` being thread-local globals. That is exact
for kernels whose threads are independent (no shared memory, barriers, warp
intrinsics or atomics); a source using those is refused when it is compiled. The
host build is not CUDA's: ``__CUDACC__`` is not defined (a source picks its host
branch, as ``kernels/gpualign_warp.cuh`` does) and, unless
``strict_cupy.configure(perturb=...)`` asks for GPU-like numerics (then multiply-adds
are contracted to FMA, as NVRTC does by default), floating-point contraction is off.

What CuPy does and the stand-in reproduces (``cupy/_core/raw.pyx``,
``cupy/cuda/function.pyx``):

* compilation happens on first use (``get_function``, ``compile``, the first call of
  a ``RawKernel``), not when the ``RawModule`` is made;
* arguments are converted as ``_pointer`` does: ``None`` -> NULL, a device array ->
  its data pointer, NumPy scalars by their dtype, Python ``int``/``bool`` -> int64,
  ``float`` -> float64, ``complex`` -> complex128, anything else (a NumPy array,
  even 0-d, included) -> ``TypeError: Unsupported type``;
* ``grid`` and ``block`` must be tuples, padded with 1 and clamped to at least 1;
  the driver's limits (1024 threads per block, grid y and z <= 65535) apply.

Stricter than CuPy, which hands the driver raw bytes (a mismatch reads garbage on a
GPU, it never raises): every argument is checked against the kernel's declared
parameter (their number; a pointer takes ``None`` or a C-contiguous device array of
the pointee's size and kind, ``void*`` any; a scalar takes a value of exactly its
size and kind: a Python ``int`` is int64, so an ``int`` parameter needs
``numpy.int32``), two ``__restrict__`` pointers must not overlap, and every array
is handed to the kernel inside guard zones: a write out of its bounds raises
:class:`KernelOutOfBounds`, a read out of them reads 0xFF bytes (NaN as a float).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _cuda

__all__ = [
    "RawModule",
    "RawKernel",
    "CompileException",
    "CUDADriverError",
    "KernelOutOfBounds",
    "host_compiler",
    "fma_supported",
    "LAUNCHES",
]

#: Bytes of guard zone on either side of every array handed to a kernel.
GUARD_BYTES = 4096
_GUARD = 0xFF
#: Launch limits of the driver (compute capability 9.0).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)

_MARKER = "__strict_cupy_global__"

# Prepended to the source. ``__global__`` marks kernels; the rest of CUDA's language
# that a kernel with independent threads uses is plain C++ on the host.
_PRELUDE = r"""// strict_cupy: CUDA source compiled for the host (see strict_cupy/_rawkernel.py)
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
struct strict_cupy_dim3 { unsigned int x, y, z; };
static thread_local strict_cupy_dim3 blockIdx, threadIdx, blockDim, gridDim;
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
"""

# Appended to the source: per kernel, a launcher running every thread of the grid,
# and the sizes of its parameters (checked against the Python-side parse).
_LAUNCHER = r"""
template <typename... A, std::size_t... I>
static inline void strict_cupy_call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<A*>(args[I])...);
}
template <typename... A>
static void strict_cupy_run(void (*f)(A...), const unsigned* g, const unsigned* b,
                            void** args) {
    gridDim = {g[0], g[1], g[2]};
    blockDim = {b[0], b[1], b[2]};
    for (unsigned bz = 0; bz < g[2]; ++bz)
        for (unsigned by = 0; by < g[1]; ++by)
            for (unsigned bx = 0; bx < g[0]; ++bx)
                for (unsigned tz = 0; tz < b[2]; ++tz)
                    for (unsigned ty = 0; ty < b[1]; ++ty)
                        for (unsigned tx = 0; tx < b[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            strict_cupy_call(f, args, std::index_sequence_for<A...>{});
                        }
}
template <typename... A>
static int strict_cupy_sizes(void (*)(A...), long long* out) {
    const long long s[] = {0, (long long)sizeof(A)...};
    for (std::size_t i = 0; i < sizeof...(A); ++i) out[i] = s[i + 1];
    return (int)sizeof...(A);
}
"""

_LAUNCHER_ENTRY = r"""
extern "C" void strict_cupy_launch_{name}(const unsigned* g, const unsigned* b, void** a) {{
    strict_cupy_run(&{name}, g, b, a);
}}
extern "C" int strict_cupy_sizes_{name}(long long* out) {{
    return strict_cupy_sizes(&{name}, out);
}}
"""

#: What a kernel run thread after thread cannot do.
_UNSUPPORTED = {
    "__shared__": "shared memory",
    "__syncthreads": "block barriers",
    "__syncwarp": "warp barriers",
    "__shfl": "warp shuffles",
    "__ballot": "warp votes",
    "__any_sync": "warp votes",
    "__all_sync": "warp votes",
    "atomicAdd": "atomics",
    "atomicCAS": "atomics",
    "atomicMax": "atomics",
    "atomicMin": "atomics",
    "atomicExch": "atomics",
    "cooperative_groups": "cooperative groups",
}

#: C scalar types -> (kind family, size). Families: "i" integers and bool, "f" floats,
#: "c" complex.
_C_TYPES = {
    "bool": ("i", 1), "char": ("i", 1), "signed char": ("i", 1), "unsigned char": ("i", 1),
    "short": ("i", 2), "short int": ("i", 2), "unsigned short": ("i", 2),
    "unsigned short int": ("i", 2), "int": ("i", 4), "signed": ("i", 4),
    "signed int": ("i", 4), "unsigned": ("i", 4), "unsigned int": ("i", 4),
    "long": ("i", 8), "long int": ("i", 8), "unsigned long": ("i", 8),
    "unsigned long int": ("i", 8), "long long": ("i", 8), "long long int": ("i", 8),
    "unsigned long long": ("i", 8), "unsigned long long int": ("i", 8),
    "size_t": ("i", 8), "ptrdiff_t": ("i", 8),
    "int8_t": ("i", 1), "uint8_t": ("i", 1), "int16_t": ("i", 2), "uint16_t": ("i", 2),
    "int32_t": ("i", 4), "uint32_t": ("i", 4), "int64_t": ("i", 8), "uint64_t": ("i", 8),
    "half": ("f", 2), "__half": ("f", 2), "float": ("f", 4), "double": ("f", 8),
    "void": (None, 0),
}
_QUALIFIERS = frozenset({"const", "volatile", "__restrict__", "__restrict", "restrict"})
_FAMILY = {"b": "i", "i": "i", "u": "i", "f": "f", "c": "c"}


class CompileException(Exception):
    """``cupy.cuda.compiler.CompileException``: the source did not compile (host build)."""

    def __init__(self, msg: str, source: str = "", name: str = "",
                 options: tuple[str, ...] = ()) -> None:
        self._msg = msg
        self.source = source
        self.name = name
        self.options = options
        super().__init__(msg)


class CUDADriverError(RuntimeError):
    """``cupy_backends.cuda.api.driver.CUDADriverError``."""


class KernelOutOfBounds(RuntimeError):
    """A kernel wrote outside an array it was given (caught by the guard zones).

    On a GPU such a write corrupts other arrays or raises
    ``cudaErrorIllegalAddress``; the stand-in names the argument.
    """


# --------------------------------------------------------------------------------------
# The host compiler
# --------------------------------------------------------------------------------------


@functools.cache
def host_compiler() -> tuple[str, ...] | None:
    """The C++ compiler command (``$CXX`` first), or None when there is none."""
    env = os.environ.get("CXX", "").strip()
    if env:
        cmd = shlex.split(env)
        if cmd and shutil.which(cmd[0]):
            return tuple(cmd)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return (path,)
    return None


@functools.cache
def _compiler_id(cmd: tuple[str, ...]) -> str:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):  # pragma: no cover - broken compiler
        out = ""
    return out.splitlines()[0] if out else " ".join(cmd)


@functools.cache
def fma_supported() -> bool:
    """Whether this CPU has FMA instructions (the GPU-like build contracts to them)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return " fma " in f" {line.split(':', 1)[-1].strip()} "
    except OSError:  # pragma: no cover - not Linux
        pass
    return False


def _cache_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"strict_cupy_kernels_{uid}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _host_options(options: tuple[str, ...]) -> tuple[list[str], str]:
    """NVRTC options -> host compiler flags (include paths, macros) and the C++ standard."""
    flags: list[str] = []
    std = "c++17"
    it = iter(options)
    for opt in it:
        if not isinstance(opt, str):
            raise TypeError(f"compile options must be str, got {type(opt).__name__}")
        for prefix in ("--include-path=", "-I"):
            if opt.startswith(prefix):
                value = opt[len(prefix):] or next(it, "")
                flags.append(f"-I{value}")
                break
        else:
            for prefix in ("--define-macro=", "-D"):
                if opt.startswith(prefix):
                    value = opt[len(prefix):] or next(it, "")
                    flags.append(f"-D{value}")
                    break
            else:
                m = re.fullmatch(r"-{1,2}std=(c\+\+\d\d)", opt)
                if m:
                    std = m.group(1)
                # Other NVRTC options (-arch, --use_fast_math, -lineinfo...) have no
                # host meaning; they are ignored.
    return flags, std


@dataclass(frozen=True)
class _Param:
    name: str
    ctype: str
    pointer: bool
    restrict: bool
    family: str | None  # None: void* (any array)
    size: int

    def describe(self) -> str:
        return f"{self.ctype}{'*' if self.pointer else ''} {self.name}".strip()


def _parse_params(text: str, kernel: str) -> tuple[_Param, ...]:
    text = text.strip()
    if text in ("", "void"):
        return ()
    params = []
    for k, part in enumerate(text.split(",")):
        tokens = re.findall(r"[A-Za-z_]\w*|\*|&|\[|::", part)
        if "&" in tokens or "[" in tokens or "::" in tokens:
            raise CompileException(f"strict_cupy: parameter {part.strip()!r} of kernel "
                                   f"{kernel} is not modelled (references, arrays, "
                                   "namespaced types)")
        restrict = any(t in ("__restrict__", "__restrict", "restrict") for t in tokens)
        n_ptr = tokens.count("*")
        words = [t for t in tokens if t not in _QUALIFIERS and t != "*"]
        name = f"arg{k}"
        if len(words) >= 2 and " ".join(words) not in _C_TYPES:
            name = words[-1]
            words = words[:-1]
        ctype = " ".join(words)
        if ctype not in _C_TYPES or n_ptr > 1 or (ctype == "void" and not n_ptr):
            raise CompileException(f"strict_cupy: parameter {part.strip()!r} of kernel "
                                   f"{kernel} has a type the stand-in does not model")
        family, size = _C_TYPES[ctype]
        params.append(_Param(name, ctype, bool(n_ptr), restrict, family, size))
    return tuple(params)


_KERNEL_RE = re.compile(
    r'(extern\s*"C"\s*)?' + _MARKER + r'\s+void\s+([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{')


@dataclass
class _HostModule:
    """One compiled source: the library and, per ``extern "C"`` kernel, its parameters."""

    path: Path
    lib: ctypes.CDLL
    kernels: dict[str, tuple[_Param, ...]]
    mangled: frozenset[str]
    fma: bool


_BUILDS: dict[str, _HostModule] = {}
_BUILD_LOCK = threading.Lock()


def _run(cmd: list[str], what: str, code: str, options: tuple[str, ...]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover
        raise CompileException(f"strict_cupy: {what} failed to run: {exc}", code, "",
                               options) from None
    if res.returncode != 0:
        raise CompileException(
            f"strict_cupy: {what} of the CUDA source for the host failed:\n{res.stderr}",
            code, "", options)
    return res.stdout


def build(code: str, options: tuple[str, ...], *, fma: bool = False) -> _HostModule:
    """Compile ``code`` for the host (cached per process and on disk); see the module doc.

    Raises
    ------
    NotImplementedError
        No C++ compiler (nothing can run the kernels on this machine).
    CompileException
        The source does not compile, or uses what a sequential run cannot reproduce.
    """
    cmd = host_compiler()
    if cmd is None:
        raise NotImplementedError(
            "strict_cupy: RawModule/RawKernel compile the CUDA source for the host and no "
            "C++ compiler was found (set CXX, or install g++ or clang++)")
    flags, std = _host_options(options)
    mode = ["-mfma", "-ffp-contract=fast"] if fma else ["-ffp-contract=off"]
    base = [*cmd, f"-std={std}", "-O2", "-fPIC", "-w", *mode, *flags]
    key = hashlib.sha256("\0".join(
        [code, _PRELUDE, _LAUNCHER, _LAUNCHER_ENTRY, _compiler_id(cmd), *base]).encode()
    ).hexdigest()[:32]
    with _BUILD_LOCK:
        if key in _BUILDS:
            return _BUILDS[key]
        directory = _cache_dir()
        src = directory / f"{key}.cuda.h"
        if not src.exists():
            tmp = directory / f"{key}.{os.getpid()}.h.tmp"
            tmp.write_text(code, encoding="utf-8")
            os.replace(tmp, src)
        # Find the kernels in the preprocessed source (macros expanded).
        pre = directory / f"{key}.{os.getpid()}.pre.cpp"  # per process: no torn reads
        pre.write_text(f'{_PRELUDE}#define __global__ {_MARKER}\n'
                       f'int {_MARKER}source;\n#include "{src.name}"\n', encoding="utf-8")
        try:
            expanded = _run([*base, "-E", "-P", f"-I{directory}", str(pre)],
                            "preprocessing", code, options)
        finally:
            pre.unlink(missing_ok=True)
        expanded = expanded.split(f"int {_MARKER}source;", 1)[-1]
        for token, what in _UNSUPPORTED.items():
            if token in expanded:
                raise CompileException(
                    f"strict_cupy: the kernel source uses {what} ({token}); the CPU "
                    "stand-in runs threads one after the other and cannot reproduce it",
                    code, "", options)
        kernels: dict[str, tuple[_Param, ...]] = {}
        mangled = set()
        for m in _KERNEL_RE.finditer(expanded):
            if m.group(1):
                kernels[m.group(2)] = _parse_params(m.group(3), m.group(2))
            else:
                mangled.add(m.group(2))
        so = directory / f"{key}.so"
        if not so.exists():
            host = directory / f"{key}.{os.getpid()}.host.cpp"
            entries = "".join(_LAUNCHER_ENTRY.format(name=n) for n in kernels)
            host.write_text(f'{_PRELUDE}#define __global__\n'
                            f'#include "{src.name}"\n{_LAUNCHER}{entries}', encoding="utf-8")
            tmp_so = directory / f"{key}.{os.getpid()}.so.tmp"
            try:
                _run([*base, "-shared", f"-I{directory}", str(host), "-o", str(tmp_so)],
                     "compilation", code, options)
            finally:
                host.unlink(missing_ok=True)
            os.replace(tmp_so, so)
        lib = ctypes.CDLL(str(so))
        for name, params in kernels.items():
            sizes = (ctypes.c_longlong * max(1, len(params)))()
            n = getattr(lib, f"strict_cupy_sizes_{name}")(sizes)
            got = [int(s) for s in sizes[:n]]
            want = [8 if p.pointer else p.size for p in params]
            if got != want:  # pragma: no cover - a parse the compiler disagrees with
                raise CompileException(f"strict_cupy: parameters of {name} parsed as "
                                       f"{want} bytes, the compiler says {got}", code,
                                       name, options)
            fn = getattr(lib, f"strict_cupy_launch_{name}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = None
        module = _HostModule(so, lib, kernels, frozenset(mangled), fma)
        _BUILDS[key] = module
        return module


# --------------------------------------------------------------------------------------
# Launches
# --------------------------------------------------------------------------------------


@dataclass
class LaunchLog:
    """Kernel launches on the stand-in: ``(kernel name, grid, block)`` in order."""

    records: list[tuple[str, tuple[int, int, int], tuple[int, int, int]]]

    def count(self, prefix: str = "") -> int:
        """Launches of kernels whose name starts with ``prefix``."""
        return sum(1 for r in self.records if r[0].startswith(prefix))

    def reset(self) -> None:
        """Forget all launches."""
        self.records.clear()


#: Every launch (``strict_cupy.launches``).
LAUNCHES = LaunchLog([])


def _dims(value: Any, what: str) -> tuple[int, int, int]:
    if not isinstance(value, tuple):
        raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got "
                        f"{type(value).__name__})")
    padded = (value + (1, 1))[:3]
    try:
        return tuple(max(1, int(v)) for v in padded)  # type: ignore[return-value]
    except TypeError:
        raise TypeError(f"{what} must hold integers, got {value!r}") from None


def _scalar(x: Any) -> np.generic:
    """CuPy's conversion of a non-array kernel argument (``function.pyx`` ``_pointer``)."""
    from ._core import _NP_SCALAR_TYPES

    if type(x) in _NP_SCALAR_TYPES:
        return x
    if isinstance(x, int):  # bool included: CuPy tests int first
        return np.int64(x)
    if isinstance(x, float):
        return np.float64(x)
    if isinstance(x, complex):
        return np.complex128(x)
    msg = f"Unsupported type {type(x)}"
    if isinstance(x, np.ndarray):
        msg += (" (strict_cupy: a NumPy array passed to a RawKernel; CuPy passes device "
                "arrays as pointers and refuses host arrays: move it with cupy.asarray)")
    raise TypeError(msg)


class _Arena:
    """Arrays handed to one launch, each inside guard zones (written back after)."""

    def __init__(self) -> None:
        self.keep: list[Any] = []
        self.guarded: list[tuple[str, np.ndarray, np.ndarray, int]] = []

    def array(self, where: str, a: np.ndarray, guard: bool) -> int:
        if not guard:
            self.keep.append(a)
            return int(a.ctypes.data)
        n = a.nbytes
        buf = np.full(n + 2 * GUARD_BYTES, _GUARD, dtype=np.uint8)
        if n:
            buf[GUARD_BYTES:GUARD_BYTES + n] = a.reshape(-1).view(np.uint8)
        self.guarded.append((where, a, buf, n))
        return int(buf.ctypes.data) + GUARD_BYTES

    def finish(self, kernel: str) -> None:
        for where, a, buf, n in self.guarded:
            if not (np.all(buf[:GUARD_BYTES] == _GUARD)
                    and np.all(buf[GUARD_BYTES + n:] == _GUARD)):
                raise KernelOutOfBounds(
                    f"strict_cupy: kernel {kernel} wrote outside argument {where} "
                    f"({a.dtype}{list(a.shape)}, {n} bytes); on a GPU this corrupts "
                    "other memory or raises cudaErrorIllegalAddress")
            if n:
                a.reshape(-1).view(np.uint8)[...] = buf[GUARD_BYTES:GUARD_BYTES + n]


def launch(module: _HostModule, name: str, grid: Any, block: Any, args: Any,
           shared_mem: int = 0) -> None:
    """Run kernel ``name`` of ``module`` on the stand-in's device arrays."""
    from ._core import ndarray

    _cuda._check()
    g, b = _dims(grid, "grid"), _dims(block, "block")
    if (any(v > m for v, m in zip(b, MAX_BLOCK, strict=True))
            or b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK
            or any(v > m for v, m in zip(g, MAX_GRID, strict=True))):
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (strict_cupy: "
                              f"grid {g}, block {b} exceed the device's launch limits)")
    if int(shared_mem):
        raise NotImplementedError("strict_cupy: dynamic shared memory is not modelled")
    params = module.kernels[name]
    args = tuple(args)
    if len(args) != len(params):
        raise TypeError(f"strict_cupy: kernel {name} takes {len(params)} arguments "
                        f"({', '.join(p.describe() for p in params)}), got {len(args)}; "
                        "on a GPU the missing ones are read from garbage")
    arrays = [(k, a._a) for k, a in enumerate(args) if isinstance(a, ndarray)]
    shared = set()
    for i, (ka, a) in enumerate(arrays):
        for kb, other in arrays[i + 1:]:
            if a.size and other.size and np.may_share_memory(a, other):
                if params[ka].restrict or params[kb].restrict:
                    raise ValueError(
                        f"strict_cupy: kernel {name}: arguments {params[ka].name} and "
                        f"{params[kb].name} overlap but are declared __restrict__")
                shared.update((ka, kb))
    arena = _Arena()
    ptrs = (ctypes.c_void_p * max(1, len(params)))()
    for k, (x, p) in enumerate(zip(args, params, strict=True)):
        where = f"{k} ({p.describe()})"
        if p.pointer:
            if x is None:
                slot = np.zeros(1, dtype=np.uint64)  # a NULL pointer
            elif isinstance(x, ndarray):
                a = x._a
                if p.family is not None and (_FAMILY[a.dtype.kind] != p.family
                                             or a.dtype.itemsize != p.size):
                    raise TypeError(f"strict_cupy: kernel {name} argument {where} got a "
                                    f"{a.dtype} array; the kernel reads it as {p.ctype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"strict_cupy: kernel {name} argument {where} got a "
                                     "non-C-contiguous array; a raw kernel indexes flat "
                                     "memory and would read it as contiguous")
                slot = np.array([arena.array(where, a, k not in shared)], dtype=np.uint64)
            else:
                if isinstance(x, np.ndarray):
                    _scalar(x)  # raises CuPy's Unsupported type
                raise TypeError(f"strict_cupy: kernel {name} argument {where} is a "
                                f"pointer and got {type(x).__name__}")
        else:
            if isinstance(x, ndarray):
                raise TypeError(f"strict_cupy: kernel {name} argument {where} got a device "
                                "array, which CuPy passes as a pointer; pass a scalar "
                                "(e.g. numpy.float64(float(x)))")
            if x is None:
                raise TypeError(f"strict_cupy: kernel {name} argument {where} got None "
                                "(a NULL pointer)")
            s = _scalar(x)
            if _FAMILY[s.dtype.kind] != p.family or s.dtype.itemsize != p.size:
                raise TypeError(
                    f"strict_cupy: kernel {name} argument {where} got {s.dtype} "
                    f"({s.dtype.itemsize} bytes); CuPy passes it as such and the kernel "
                    f"reads {p.size} bytes of {p.ctype} (pass numpy.{_np_name(p)})")
            slot = np.array([s])
        arena.keep.append(slot)
        ptrs[k] = slot.ctypes.data
    dims = (ctypes.c_uint * 6)(*g, *b)
    LAUNCHES.records.append((name, g, b))
    getattr(module.lib, f"strict_cupy_launch_{name}")(
        ctypes.addressof(dims), ctypes.addressof(dims) + 3 * ctypes.sizeof(ctypes.c_uint),
        ctypes.addressof(ptrs))
    arena.finish(name)


def _np_name(p: _Param) -> str:
    if p.family == "f":
        return {2: "float16", 4: "float32", 8: "float64"}[p.size]
    signed = not p.ctype.startswith("unsigned") and not p.ctype.startswith("uint")
    if p.ctype == "bool":
        return "bool_"
    return f"{'' if signed else 'u'}int{8 * p.size}"


# --------------------------------------------------------------------------------------
# The CuPy classes
# --------------------------------------------------------------------------------------


def _gpu_numerics() -> bool:
    """GPU-like numerics asked for (``configure(perturb=...)``) and FMA available."""
    return bool(_cuda.STATE.perturb) and fma_supported()


class RawKernel:
    """``cupy.RawKernel``: one kernel of a CUDA source, run on the host.

    Parameters follow CuPy's; ``backend``, ``translate_cucomplex``, ``jitify`` and
    ``enable_cooperative_groups`` are accepted and have no effect (the last one is
    refused when true: cooperative launches are not modelled).
    """

    def __init__(self, code: str, name: str, options: tuple = (), backend: str = "nvrtc",
                 *, translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, jitify: bool = False) -> None:
        if not isinstance(code, str) or not isinstance(name, str):
            raise TypeError("code and name must be str")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        if enable_cooperative_groups:
            raise NotImplementedError("strict_cupy: cooperative groups are not modelled")
        self.code = code
        self.name = self.__name__ = name
        self.options = options
        self.backend = backend
        self.translate_cucomplex = translate_cucomplex
        self.enable_cooperative_groups = enable_cooperative_groups
        self.jitify = jitify
        self.file_path = None
        self.name_expressions = None

    def _module(self) -> _HostModule:
        _cuda._check()
        module = build(self.code, self.options, fma=_gpu_numerics())
        if self.name not in module.kernels:
            hint = (" (it is not extern \"C\": its name is mangled; CuPy finds it only "
                    "through name_expressions, which the stand-in does not model)"
                    if self.name in module.mangled else "")
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found "
                                  f"({self.name}){hint}")
        return module

    @property
    def kernel(self) -> Any:
        """The compiled kernel (compiles on first access)."""
        return self._module()

    def compile(self, log_stream: Any = None) -> None:
        """Compile now (CuPy compiles on the first call otherwise)."""
        self._module()

    def __call__(self, grid: Any, block: Any, args: Any, *, shared_mem: int = 0) -> None:
        launch(self._module(), self.name, grid, block, args, shared_mem)

    @property
    def attributes(self) -> dict[str, int]:
        """Kernel attributes as CuPy reports them (fixed values on the stand-in)."""
        self._module()
        return {"max_threads_per_block": MAX_THREADS_PER_BLOCK, "shared_size_bytes": 0,
                "const_size_bytes": 0, "local_size_bytes": 0, "num_regs": 32,
                "ptx_version": 90, "binary_version": 90, "cache_mode_ca": 0,
                "max_dynamic_shared_size_bytes": 0,
                "preferred_shared_memory_carveout": -1}

    @property
    def max_threads_per_block(self) -> int:
        """Most threads a block of this kernel may have."""
        return self.attributes["max_threads_per_block"]


class RawModule:
    """``cupy.RawModule``: a CUDA source whose ``extern "C"`` kernels run on the host.

    As in CuPy, nothing is compiled before :meth:`get_function` or :meth:`compile`.
    ``path`` (a cubin or PTX file) needs a GPU and is refused.
    """

    def __init__(self, *, code: str | None = None, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Any = None, jitify: bool = False) -> None:
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be "
                            "given.")
        if path is not None:
            raise NotImplementedError("strict_cupy: RawModule(path=...) loads a cubin/PTX "
                                      "binary, which needs a CUDA device")
        if not isinstance(code, str):
            raise TypeError(f"Argument 'code' has incorrect type (expected str, got "
                            f"{type(code).__name__})")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        if name_expressions is not None:
            raise NotImplementedError("strict_cupy: name_expressions (C++ template kernels) "
                                      "are not modelled; declare kernels extern \"C\"")
        if enable_cooperative_groups:
            raise NotImplementedError("strict_cupy: cooperative groups are not modelled")
        self.code = code
        self.file_path = None
        self.options = options
        self.backend = backend
        self.translate_cucomplex = translate_cucomplex
        self.enable_cooperative_groups = enable_cooperative_groups
        self.name_expressions = None
        self.jitify = jitify

    def compile(self, log_stream: Any = None) -> None:
        """Compile now (CuPy compiles on first use otherwise)."""
        _cuda._check()
        build(self.code, self.options, fma=_gpu_numerics())

    @property
    def module(self) -> Any:
        """The compiled module (compiles on first access)."""
        _cuda._check()
        return build(self.code, self.options, fma=_gpu_numerics())

    def get_function(self, name: str) -> RawKernel:
        """The kernel ``name`` (compiles the module on first use, as CuPy does)."""
        if not isinstance(name, str):
            raise TypeError(f"Argument 'name' has incorrect type (expected str, got "
                            f"{type(name).__name__})")
        kernel = RawKernel(self.code, name, self.options, self.backend,
                           translate_cucomplex=self.translate_cucomplex, jitify=self.jitify)
        kernel.compile()
        return kernel

    def get_global(self, name: str) -> Any:
        """Global symbols need device memory handles; not modelled."""
        raise NotImplementedError("strict_cupy: RawModule.get_global is not modelled")
