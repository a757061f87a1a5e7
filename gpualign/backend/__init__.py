"""Array backends: the only place in gpualign that imports CuPy.

Stage code is written once against the array module of the :class:`Backend` it is
handed (``backend.xp``, ``backend.ndimage``). Nothing here is global: two backends can
be used side by side in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from gpualign._errors import BackendUnavailable, GpuAlignError, GpuAlignWarning, warn

log = logging.getLogger("gpualign")

__all__ = ["Backend", "DeviceOutOfMemory", "backend_report", "get_backend",
           "is_out_of_memory", "numpy_backend", "release_device_memory"]


@dataclass(frozen=True)
class Backend:
    """An array module and the few operations whose implementation differs per device.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"cupy"`` (or the name of a stand-in used in tests).
    xp : module
        The NumPy-like array module.
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    to_device : callable
        Host NumPy array -> array of ``xp`` (one explicit copy on a GPU).
    to_host : callable
        Array of ``xp`` -> NumPy array (one explicit copy on a GPU).
    reason : str
        Why this backend was chosen.
    device : str
        Device description (name and memory) or ``"cpu"``.
    free_memory : callable
        Returns the free bytes on the device, used to size tiles.
    """

    name: str
    xp: ModuleType
    ndimage: ModuleType | Any
    to_device: Callable[[np.ndarray], Any]
    to_host: Callable[[Any], np.ndarray]
    reason: str = ""
    device: str = "cpu"
    free_memory: Callable[[], int] = field(default=lambda: 0, repr=False)

    @property
    def is_gpu(self) -> bool:
        """Whether arrays of this backend live on a GPU (anything but NumPy)."""
        return self.name != "numpy"


class DeviceOutOfMemory(GpuAlignError):
    """The GPU had not enough free memory, even for the smallest tiles."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed device allocation.

    CuPy's pool raises ``cupy.cuda.memory.OutOfMemoryError`` (a ``MemoryError``);
    allocations outside the pool fail with a CUDA runtime or driver error of status 2
    (``cudaErrorMemoryAllocation``, ``CUDA_ERROR_OUT_OF_MEMORY``). A plain host
    ``MemoryError`` is not one.
    """
    if isinstance(exc, MemoryError):
        return type(exc).__name__ == "OutOfMemoryError"
    return (type(exc).__name__ in ("CUDARuntimeError", "CUDADriverError")
            and getattr(exc, "status", None) == 2)


def release_device_memory(backend: Backend) -> None:
    """Return the blocks CuPy's pool caches to the device (nothing on NumPy)."""
    if not backend.is_gpu:
        return
    try:
        backend.xp.get_default_memory_pool().free_all_blocks()
    except Exception:  # pragma: no cover - a pool without it
        pass


def _host_free_memory() -> int:
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**32


class _DeferredModule:
    """A module imported when first used.

    ``scipy.ndimage`` costs 0.3 s at start-up, and a run whose prefilter and warp are
    done by the host library never needs it.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        import importlib

        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported when first used>"


_SCIPY_NDIMAGE = _DeferredModule("scipy.ndimage")


def numpy_backend(reason: str = "requested") -> Backend:
    """Return the NumPy/SciPy backend.

    Parameters
    ----------
    reason : str
        Why it was chosen (logged and reported).

    Returns
    -------
    Backend
    """
    return Backend(
        name="numpy",
        xp=np,
        ndimage=_SCIPY_NDIMAGE,
        to_device=np.asarray,
        to_host=np.asarray,
        reason=reason,
        device="cpu",
        free_memory=_host_free_memory,
    )


def _import_cupy() -> tuple[ModuleType, ModuleType]:
    """Import CuPy and ``cupyx.scipy.ndimage`` (tests replace this with a stand-in)."""
    import cupy
    import cupyx.scipy.ndimage

    return cupy, cupyx.scipy.ndimage


def _cupy_free_memory(cp: ModuleType) -> int:
    """Bytes the next allocations can get: free on the device plus the pool's cached blocks.

    CuPy's memory pool keeps freed blocks, which the driver counts as used; they are
    free to gpualign. A pool limit (``set_limit``) caps the answer.
    """
    free = int(cp.cuda.Device().mem_info[0])
    try:
        pool = cp.get_default_memory_pool()
        free += int(pool.free_bytes())
        limit = int(pool.get_limit())
        if limit > 0:
            free = min(free, max(0, limit - int(pool.used_bytes())))
    except Exception:  # pragma: no cover - a pool without these methods
        pass
    return free


def _cupy_backend() -> Backend:
    """Build the CuPy backend or raise :class:`BackendUnavailable` saying why."""
    try:
        cp, cndi = _import_cupy()
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        err = BackendUnavailable(
            f"CuPy cannot be imported ({type(exc).__name__}: {exc})".splitlines()[0],
            hint="install gpualign[cuda12] or gpualign[cuda13] on a CUDA machine, "
            "or use --backend numpy",
        )
        # Not installed at all is the ordinary CPU machine; anything else is a broken one.
        missing = (exc.name or str(exc).partition("named ")[2].strip("'\"")
                   if isinstance(exc, ModuleNotFoundError) else "")
        err.installed = missing.split(".")[0] not in ("cupy", "cupyx")
        raise err from None
    try:
        n_dev = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailable(
            f"CuPy is installed but no CUDA device answers ({type(exc).__name__}: {exc})"
            .splitlines()[0],
            hint="check the NVIDIA driver (nvidia-smi), or use --backend numpy",
        ) from None
    if n_dev < 1:
        raise BackendUnavailable(
            "CuPy is installed but no CUDA device is visible",
            hint="check CUDA_VISIBLE_DEVICES, or use --backend numpy",
        )
    dev = cp.cuda.Device()
    try:
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        dev_name = props["name"]
        dev_name = dev_name.decode() if isinstance(dev_name, bytes) else str(dev_name)
    except Exception:  # pragma: no cover - depends on the driver
        dev_name = f"CUDA device {dev.id}"
    free, total = dev.mem_info
    device = f"{dev_name} ({total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free)"
    return Backend(
        name="cupy",
        xp=cp,
        ndimage=cndi,
        to_device=cp.asarray,
        to_host=cp.asnumpy,
        reason=f"CuPy {cp.__version__} with a CUDA device",
        device=device,
        free_memory=lambda: _cupy_free_memory(cp),
    )


def get_backend(name: str | Backend = "auto") -> Backend:
    """Return the array backend to run the pipeline on.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy"} or Backend
        ``"auto"`` uses CuPy when it imports and a CUDA device answers, otherwise
        NumPy, and logs one line saying which and why; when CuPy is installed but
        unusable (no device, a broken CUDA install) it also issues a
        :class:`~gpualign.GpuAlignWarning` with the reason. ``"cupy"`` raises
        :class:`~gpualign.BackendUnavailable` when it cannot run. A :class:`Backend`
        is returned unchanged.

    Returns
    -------
    Backend

    Examples
    --------
    >>> get_backend("numpy").name
    'numpy'
    """
    if isinstance(name, Backend):
        return name
    key = str(name).lower()
    if key == "numpy":
        return numpy_backend("requested")
    if key == "cupy":
        backend = _cupy_backend()
        log.info("backend: cupy on %s", backend.device)
        return backend
    if key != "auto":
        raise BackendUnavailable(
            f"unknown backend {name!r}", hint="choose one of auto, numpy, cupy"
        )
    try:
        backend = _cupy_backend()
    except BackendUnavailable as exc:
        backend = numpy_backend(f"CuPy not used: {exc.args[0]}")
        log.info("backend: numpy (%s)", backend.reason)
        if getattr(exc, "installed", True):
            warn(f"CuPy is installed but unusable, running on the CPU: {exc.args[0]}",
                 hint=exc.hint, stacklevel=2)
        return backend
    log.info("backend: cupy on %s (%s)", backend.device, backend.reason)
    return backend


def _cuda_version(code: int) -> str:
    """``12090`` (CUDA's encoding) -> ``"12.9 (12090)"``."""
    code = int(code)
    return f"{code // 1000}.{code % 1000 // 10} ({code})"


def backend_report() -> dict[str, str]:
    """Describe the backend ``"auto"`` would pick, with versions and device.

    Returns
    -------
    dict
        Keys ``backend``, ``reason``, ``device`` (name and memory on a GPU),
        ``cpu_sampler`` (the NumPy warp's compiled sampler or SciPy's), ``numpy``,
        ``scipy`` and, when CuPy imports, ``cupy``, ``cuda_runtime`` and
        ``cuda_driver``.
    """
    import warnings

    import scipy

    from gpualign.backend import _host

    with warnings.catch_warnings():  # the report says why CuPy is not used
        warnings.simplefilter("ignore", GpuAlignWarning)
        backend = get_backend("auto")
    report = {
        "backend": backend.name,
        "reason": backend.reason,
        "device": backend.device,
        "cpu_sampler": _host.status(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    try:
        cp, _ = _import_cupy()
        report["cupy"] = cp.__version__
        for key, getter in (("cuda_runtime", "runtimeGetVersion"),
                            ("cuda_driver", "driverGetVersion")):
            try:
                report[key] = _cuda_version(getattr(cp.cuda.runtime, getter)())
            except Exception as exc:
                report[key] = f"unavailable ({type(exc).__name__})"
    except Exception:
        report["cupy"] = "not installed"
    return report
