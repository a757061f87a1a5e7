"""strict_cupy: a strict CPU stand-in for CuPy, to prove gpualign's GPU path without a GPU.

The module looks like ``cupy`` to code that receives it as its array module, and it is
*stricter* than NumPy in exactly the ways a GPU is:

* only the names of a pinned CuPy release exist (``cupy_api_snapshot.json``, generated
  from the real package by ``make_api_snapshot.py``); a NumPy-only name raises
  ``AttributeError``; functions check their arguments against CuPy's signatures;
* a device array refuses implicit conversion (``np.asarray(x)`` raises CuPy's
  ``TypeError``), and CuPy functions refuse NumPy arrays; NumPy functions called on
  device arrays are dispatched to the CuPy function, as CuPy's ``__array_function__``
  does;
* every host <-> device copy is logged in :data:`transfers`;
* every device allocation is recorded in :data:`allocations` (dtype, size, caller),
  and the memory pool honours the device's free memory: past it, CuPy's
  ``cupy.cuda.memory.OutOfMemoryError`` (:mod:`._memory`);
* ``RawModule``/``RawKernel`` compile the CUDA source for the host (C++ compiler,
  once per session) and run each launch thread after thread on the device arrays,
  arguments checked against the kernel's parameters (:mod:`._rawkernel`); launches
  are logged in :data:`launches`.

The arithmetic is NumPy's and ``ndimage`` is SciPy's, so results equal the NumPy
backend's bit for bit wherever the code paths are the same; raw kernels are built
without floating-point contraction. ``configure(perturb=seed)`` injects instead the
last-bit differences a GPU has (reduction order, libdevice, cupyx's accumulation,
FMA in kernels: :mod:`._numerics`).

Use in a test::

    import strict_cupy

    def test_on_gpu_path(monkeypatch):
        cp = strict_cupy.install(monkeypatch)      # gpualign's CuPy is now the stand-in
        backend = gpualign.get_backend("cupy")
        ...
        assert cp.transfers.count("h2d", min_bytes=image.nbytes) == 1

Names beyond CuPy's (the stand-in's own): :data:`ndimage` (for ``cupyx.scipy.ndimage``),
:data:`transfers`, :data:`allocations`, :data:`launches`, :func:`install`,
:func:`configure`, :data:`snapshot`, :class:`TransferForbidden`,
:class:`OutOfMemoryError` (also ``cuda.memory.OutOfMemoryError``, as in CuPy),
:class:`KernelOutOfBounds`.
"""

import sys as _sys
from typing import Any as _Any

from . import _api, _core, _cuda, _memory, _rawkernel, _snapshot
from ._memory import OutOfMemoryError as OutOfMemoryError
from ._rawkernel import KernelOutOfBounds as KernelOutOfBounds
from ._transfers import TransferForbidden as TransferForbidden

#: The recorded API of the CuPy release this stand-in mimics.
snapshot = _snapshot.default()
#: ``cupy.__version__`` of that release.
__version__ = snapshot.cupy_version
#: Every host <-> device copy: ``transfers.h2d``, ``transfers.count("d2h", min_bytes=...)``.
transfers = _core.TRANSFERS
#: Every device allocation: ``allocations.peak_bytes("float64")``, ``.count()``, ``.summary()``.
allocations = _memory.MEMORY
#: Every raw kernel launch: ``launches.count("gpualign_warp_fused")``.
launches = _rawkernel.LAUNCHES

ndarray = _core.ndarray
ufunc = _core.ufunc
_core.install_methods(snapshot.classes["cupy.ndarray"])

_NS = _api.build_namespaces(snapshot, _sys.modules[__name__])
#: Stand-in for ``cupyx.scipy.ndimage`` (SciPy's ndimage on device arrays).
ndimage = _NS["ndimage"]
cuda = _NS["cuda"]
linalg = _NS["linalg"]
fft = _NS["fft"]
random = _NS["random"]

#: Names of this package that are not CuPy's (documented above).
EXTRAS = frozenset({"ndimage", "transfers", "allocations", "launches", "install",
                    "configure", "snapshot", "TransferForbidden", "OutOfMemoryError",
                    "KernelOutOfBounds", "EXTRAS"})


def __getattr__(name: str) -> _Any:
    """Resolve a CuPy name from the snapshot (AttributeError for any other name)."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = _NS["cupy"].resolve(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_NS["cupy"].names() | EXTRAS)


def configure(**changes: _Any) -> _Any:
    """Context manager changing what the fake device reports, restored on exit.

    Keywords: ``device_count`` (0: no GPU visible), ``free_memory`` (bytes free *now*:
    allocations made inside the block take from it, past it ``OutOfMemoryError``),
    ``total_memory`` (bytes), ``fail`` (a message: every CUDA runtime call raises
    ``CUDARuntimeError``), ``perturb`` (a nonzero seed: GPU-like last-bit numerics)
    and ``perturb_ulps`` (their size, default 2).
    """
    return _cuda.configured(**changes)


def install(monkeypatch: _Any, *, reset: bool = True) -> _Any:
    """Make the stand-in gpualign's CuPy for one test.

    ``gpualign.backend._import_cupy`` is patched to return ``(strict_cupy,
    strict_cupy.ndimage)``, so ``gpualign.get_backend("cupy")`` (and ``"auto"``) build
    the real CuPy-path backend on the stand-in.

    Parameters
    ----------
    monkeypatch : pytest.MonkeyPatch
        The test's fixture (the patch is undone after the test).
    reset : bool
        Clear :data:`transfers`, :data:`launches` and the :data:`allocations` records
        first.

    Returns
    -------
    module
        This module.
    """
    import gpualign.backend as backend_module

    module = _sys.modules[__name__]
    monkeypatch.setattr(backend_module, "_import_cupy", lambda: (module, module.ndimage))
    if reset:
        transfers.reset()
        launches.reset()
        allocations.reset()
    return module
