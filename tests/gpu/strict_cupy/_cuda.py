"""``cupy.cuda`` of the stand-in: one fake device, synchronous streams, memory pools."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "STATE",
    "DeviceState",
    "CUDARuntimeError",
    "Device",
    "Stream",
    "Event",
    "MemoryPool",
    "PinnedMemoryPool",
    "runtime_overrides",
    "cuda_overrides",
]

DEVICE_NAME = b"strict-cupy CPU stand-in"
#: CUDA runtime version reported (12.9, as ``cudaRuntimeGetVersion`` encodes it).
RUNTIME_VERSION = 12090
DRIVER_VERSION = 12090


@dataclass
class DeviceState:
    """What the fake device reports; tests change it with ``strict_cupy.configure``.

    Attributes
    ----------
    device_count : int
        ``getDeviceCount()``; 0 mimics "CuPy installed, no GPU visible".
    total_memory, free_memory : int
        Bytes reported by ``Device().mem_info`` and ``memGetInfo``.
    fail : str or None
        When set, every runtime call raises ``CUDARuntimeError(fail)`` (a broken driver).
    perturb : int
        0: NumPy's and SciPy's numerics. Otherwise GPU-like last-bit differences are
        injected, ``perturb`` being the seed of their pseudo-random signs (see
        ``strict_cupy._numerics``): reductions and BLAS products off by their rounding
        error bound, transcendental functions by an ulp, ``cupyx.scipy.ndimage``
        interpolation and filters by float32 ulps, and raw kernels built with FMA
        contraction, as NVRTC compiles them.
    perturb_ulps : float
        Size of the injected differences, in units of the rounding (default 2).
    """

    device_count: int = 1
    total_memory: int = 16 * 2**30
    free_memory: int = 15 * 2**30
    fail: str | None = None
    perturb: int = 0
    perturb_ulps: float = 2.0


STATE = DeviceState()


class CUDARuntimeError(RuntimeError):
    """``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""

    def __init__(self, status: int | str, msg: str | None = None) -> None:
        self.status = status
        super().__init__(msg or str(status))


def _check(device_id: int | None = None) -> None:
    if STATE.fail is not None:
        raise CUDARuntimeError(STATE.fail)
    if STATE.device_count < 1:
        raise CUDARuntimeError(100, "cudaErrorNoDevice: no CUDA-capable device is detected")
    if device_id is not None and not 0 <= int(device_id) < STATE.device_count:
        raise CUDARuntimeError(101, "cudaErrorInvalidDevice: invalid device ordinal")


class Device:
    """``cupy.cuda.Device``: the single device 0 (more if ``device_count`` says so)."""

    def __init__(self, device: Any = None) -> None:
        self._id = 0 if device is None else int(device)
        _check(self._id)

    @property
    def id(self) -> int:
        """Device ordinal."""
        return self._id

    @property
    def mem_info(self) -> tuple[int, int]:
        """``(free, total)`` bytes: the configured free memory less what was allocated since."""
        _check(self._id)
        return memGetInfo()

    @property
    def compute_capability(self) -> str:
        """Compute capability as CuPy reports it (``"90"``)."""
        return "90"

    @property
    def pci_bus_id(self) -> str:
        """PCI bus id."""
        return f"0000:{self._id:02x}:00.0"

    @property
    def attributes(self) -> dict[str, int]:
        """A few device attributes."""
        return {"MultiProcessorCount": 132, "WarpSize": 32, "MaxThreadsPerBlock": 1024}

    def synchronize(self) -> None:
        """Nothing runs asynchronously on the stand-in."""
        _check(self._id)

    def use(self) -> None:
        """Make this the current device (there is only one)."""
        _check(self._id)

    def __enter__(self) -> Device:
        self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __int__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("strict_cupy.Device", self._id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self._id}>"


class Event:
    """``cupy.cuda.Event`` recording wall time."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self._t: float | None = None

    def record(self, stream: Any = None) -> None:
        """Record the current time."""
        self._t = time.perf_counter()

    def synchronize(self) -> None:
        """Nothing to wait for."""

    @property
    def done(self) -> bool:
        """Always complete."""
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events."""
    if start._t is None or end._t is None:
        raise CUDARuntimeError(600, "cudaErrorNotReady: event not recorded")
    return (end._t - start._t) * 1e3


class Stream:
    """``cupy.cuda.Stream``: synchronous; ``with stream:`` makes it current."""

    null: Stream
    _current: list[Stream] = []

    def __init__(self, null: bool = False, non_blocking: bool = False,
                 ptds: bool = False, priority: int | None = None) -> None:
        self.ptr = 0 if null else id(self)
        self.is_non_blocking = bool(non_blocking)
        self.priority = priority or 0

    @property
    def done(self) -> bool:
        """Always complete."""
        return True

    def synchronize(self) -> None:
        """Nothing to wait for."""

    def record(self, event: Event | None = None) -> Event:
        """Record an event on this stream."""
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Nothing to wait for."""

    def use(self) -> Stream:
        """Make this the current stream."""
        Stream._current[:] = [self]
        return self

    def __enter__(self) -> Stream:
        Stream._current.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if Stream._current:
            Stream._current.pop()

    def __repr__(self) -> str:
        return f"<Stream {self.ptr}>"


Stream.null = Stream(null=True)


def get_current_stream(device_id: int | None = None) -> Stream:
    """The innermost ``with stream:`` stream, else the null stream."""
    return Stream._current[-1] if Stream._current else Stream.null


class MemoryPool:
    """``cupy.cuda.MemoryPool``, the default pool every device array comes from.

    It holds exactly the live arrays' blocks (512-byte multiples): a freed block goes
    back to the device at once, so ``free_bytes()`` is 0. ``set_limit`` is enforced:
    an allocation past it raises ``OutOfMemoryError``, as past the free memory.
    """

    def __init__(self, allocator: Any = None) -> None:
        self._limit = 0

    def _memory(self) -> Any:
        from ._memory import MEMORY

        return MEMORY

    def used_bytes(self) -> int:
        """Bytes of the live device arrays' blocks."""
        return self._memory().used if self is _DEFAULT_POOL else 0

    def total_bytes(self) -> int:
        """Bytes held by the pool (the blocks in use)."""
        return self.used_bytes()

    def free_bytes(self) -> int:
        """Bytes held but unused (none: freed blocks are returned at once)."""
        return 0

    def n_free_blocks(self) -> int:
        """Cached free blocks (none)."""
        return 0

    def free_all_blocks(self, stream: Any = None) -> None:
        """Release cached blocks (none are cached)."""

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        """Limit the pool's bytes (0: no limit); enforced on the default pool."""
        if fraction is not None:
            size = int(fraction * STATE.total_memory)
        self._limit = int(size or 0)
        if self is _DEFAULT_POOL:
            self._memory().limit = self._limit

    def get_limit(self) -> int:
        """The pool limit."""
        return self._limit


class PinnedMemoryPool(MemoryPool):
    """``cupy.cuda.PinnedMemoryPool`` (host memory: nothing is tracked)."""


_DEFAULT_POOL = MemoryPool()
_DEFAULT_PINNED_POOL = PinnedMemoryPool()


def get_default_memory_pool() -> MemoryPool:
    """``cupy.get_default_memory_pool``."""
    return _DEFAULT_POOL


def get_default_pinned_memory_pool() -> PinnedMemoryPool:
    """``cupy.get_default_pinned_memory_pool``."""
    return _DEFAULT_PINNED_POOL


# ---- cupy.cuda.runtime --------------------------------------------------------------


def getDeviceCount() -> int:  # noqa: N802 - CUDA runtime names
    """Number of devices."""
    if STATE.fail is not None:
        raise CUDARuntimeError(STATE.fail)
    return int(STATE.device_count)


def getDeviceProperties(device: int) -> dict[str, Any]:  # noqa: N802
    """Properties of ``device`` as CuPy returns them (``name`` is bytes)."""
    _check(device)
    return {
        "name": DEVICE_NAME,
        "totalGlobalMem": int(STATE.total_memory),
        "sharedMemPerBlock": 49152,
        "regsPerBlock": 65536,
        "warpSize": 32,
        "maxThreadsPerBlock": 1024,
        "maxThreadsDim": (1024, 1024, 64),
        "maxGridSize": (2147483647, 65535, 65535),
        "clockRate": 1980000,
        "totalConstMem": 65536,
        "major": 9,
        "minor": 0,
        "multiProcessorCount": 132,
        "pciBusID": int(device),
        "pciDeviceID": 0,
        "pciDomainID": 0,
    }


def runtimeGetVersion() -> int:  # noqa: N802
    """CUDA runtime version (``12090`` = 12.9)."""
    if STATE.fail is not None:
        raise CUDARuntimeError(STATE.fail)
    return RUNTIME_VERSION


def driverGetVersion() -> int:  # noqa: N802
    """CUDA driver version."""
    if STATE.fail is not None:
        raise CUDARuntimeError(STATE.fail)
    return DRIVER_VERSION


def getDevice() -> int:  # noqa: N802
    """Current device ordinal."""
    _check()
    return 0


def setDevice(device: int) -> None:  # noqa: N802
    """Select a device (only those ``device_count`` allows)."""
    _check(device)


def memGetInfo() -> tuple[int, int]:  # noqa: N802
    """``(free, total)`` bytes of the current device.

    ``free`` is the configured free memory less the bytes allocated since it was set
    (plus those freed since), within ``[0, total]``.
    """
    from ._memory import MEMORY

    _check()
    total = int(STATE.total_memory)
    return max(0, min(total, MEMORY.free(STATE.free_memory))), total


def deviceSynchronize() -> None:  # noqa: N802
    """Nothing runs asynchronously."""
    _check()


def is_available() -> bool:
    """Whether a device answers (``cupy.is_available``)."""
    try:
        return getDeviceCount() > 0
    except CUDARuntimeError:
        return False


def get_device_id() -> int:
    """Current device ordinal."""
    return getDevice()


def runtime_overrides() -> dict[str, Any]:
    """Implemented names of ``cupy.cuda.runtime``."""
    return {
        "CUDARuntimeError": CUDARuntimeError,
        "getDeviceCount": getDeviceCount,
        "getDeviceProperties": getDeviceProperties,
        "runtimeGetVersion": runtimeGetVersion,
        "driverGetVersion": driverGetVersion,
        "getDevice": getDevice,
        "setDevice": setDevice,
        "memGetInfo": memGetInfo,
        "deviceSynchronize": deviceSynchronize,
        "is_hip": False,
    }


def _memory_module() -> Any:
    """``cupy.cuda.memory``: the pool classes and ``OutOfMemoryError``."""
    import types

    from ._memory import OutOfMemoryError

    module = types.ModuleType("strict_cupy.cuda.memory", "Stand-in for cupy.cuda.memory.")
    module.OutOfMemoryError = OutOfMemoryError  # type: ignore[attr-defined]
    module.MemoryPool = MemoryPool  # type: ignore[attr-defined]
    module.PinnedMemoryPool = PinnedMemoryPool  # type: ignore[attr-defined]
    return module


def cuda_overrides() -> dict[str, Any]:
    """Implemented names of ``cupy.cuda`` (``runtime`` is added by the package)."""
    return {
        "memory": _memory_module(),
        "Device": Device,
        "Stream": Stream,
        "Event": Event,
        "MemoryPool": MemoryPool,
        "PinnedMemoryPool": PinnedMemoryPool,
        "get_current_stream": get_current_stream,
        "get_elapsed_time": get_elapsed_time,
        "get_device_id": get_device_id,
        "is_available": is_available,
    }


@contextlib.contextmanager
def configured(**changes: Any) -> Iterator[DeviceState]:
    """Temporarily change :data:`STATE` (``device_count``, ``free_memory``...).

    ``free_memory`` is what is free *now*: allocations made inside the block take from
    it (``mem_info``), and one that does not fit raises ``OutOfMemoryError``.
    """
    from ._memory import MEMORY

    for k in changes:
        if not hasattr(STATE, k):
            raise AttributeError(f"DeviceState has no field {k!r}")
    old = {k: getattr(STATE, k) for k in changes}
    old_base = MEMORY.base
    for k, v in changes.items():
        setattr(STATE, k, v)
    if "free_memory" in changes:
        MEMORY.base = MEMORY.used
    try:
        yield STATE
    finally:
        for k, v in old.items():
            setattr(STATE, k, v)
        MEMORY.base = old_base
