"""Namespaces of the stand-in: each exposes exactly the names of one snapshot module."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import scipy.ndimage

from . import _core, _cuda, _memory, _rawkernel
from ._snapshot import ApiSnapshot

__all__ = ["Resolver", "StrictModule", "build_namespaces"]

#: CuPy names whose NumPy 2 counterpart was renamed or removed.
_RENAMED = {
    "alltrue": "all",
    "sometrue": "any",
    "product": "prod",
    "cumproduct": "cumprod",
    "round_": "round",
    "trapz": "trapezoid",
}
#: CuPy type aliases that NumPy 2 dropped.
_TYPE_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "cfloat": np.complex128,
    "singlecomplex": np.complex64,
}
#: Functions that read host data (files, buffers, Python callables): result copied h2d.
_FROM_HOST = frozenset({
    "frombuffer", "fromfile", "fromfunction", "fromiter", "fromstring", "loadtxt",
    "genfromtxt", "load",
})
#: cupyx.scipy.ndimage parameters that must be device arrays (CuPy reads their
#: ``.shape``/``.dtype`` or launches kernels on them).
_NDIMAGE_DEVICE_PARAMS = ("input", "coordinates", "weights")


class Resolver:
    """Turns a snapshot name into the stand-in object for it.

    Parameters
    ----------
    key : str
        Snapshot module (``"cupy"``, ``"cupy.linalg"``, ``"cupyx.scipy.ndimage"``...).
    snapshot : ApiSnapshot
    counterparts : iterable of module
        NumPy/SciPy modules that compute the functions, searched in order.
    overrides : dict
        Names implemented by the stand-in itself (creation, transfers, CUDA...).
    require_device : iterable of str
        Parameters of every function here that must be device arrays.
    """

    def __init__(self, key: str, snapshot: ApiSnapshot, counterparts: Iterable[Any],
                 overrides: dict[str, Any] | None = None,
                 require_device: Iterable[str] = ()) -> None:
        self.key = key
        self.snapshot = snapshot
        self.counterparts = tuple(counterparts)
        self.overrides = dict(overrides or {})
        self.require_device = tuple(require_device)
        unknown = set(self.overrides) - snapshot.names(key)
        if unknown:
            raise ValueError(f"overrides of {key} not in the CuPy snapshot: {sorted(unknown)}")

    def names(self) -> frozenset[str]:
        """The public names of this namespace (exactly the snapshot's)."""
        return self.snapshot.names(self.key)

    def _counterpart(self, name: str) -> Any:
        for mod in self.counterparts:
            obj = getattr(mod, _RENAMED.get(name, name), None)
            if obj is not None:
                return obj
        return None

    def resolve(self, name: str) -> Any:
        """The stand-in object for ``<key>.<name>``; AttributeError if CuPy lacks it."""
        entry = self.snapshot.entry(self.key, name)
        if entry is None:
            raise AttributeError(
                f"module '{self.key}' has no attribute '{name}' (strict_cupy: not in the "
                f"CuPy {self.snapshot.cupy_version} API snapshot)")
        qualname = f"{self.key}.{name}"
        if name in self.overrides:
            return self.overrides[name]
        if name in _TYPE_ALIASES and self.key == "cupy":
            return _TYPE_ALIASES[name]
        np_obj = self._counterpart(name)
        if entry.numpy_alias and np_obj is not None:
            return np_obj
        kind = entry.kind
        if kind == "constant":
            return entry.value
        if kind == "ufunc" and callable(np_obj):
            return _core.ufunc(np_obj, name, entry.raw.get("nin"), entry.raw.get("nout"))
        if kind == "function" and callable(np_obj) and not isinstance(np_obj, type):
            return _core.delegate(
                qualname, np_obj, entry.signature, require_device=self.require_device,
                from_host=name in _FROM_HOST and self.key == "cupy",
                version=self.snapshot.cupy_version)
        return _core.unavailable(qualname, kind)


class StrictModule(types.ModuleType):
    """A module whose attributes are exactly the names of one snapshot module."""

    def __init__(self, name: str, resolver: Resolver, doc: str = "") -> None:
        super().__init__(name, doc)
        self.__dict__["_resolver"] = resolver

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self.__dict__["_resolver"].resolve(name)
        self.__dict__[name] = value
        return value

    def __dir__(self) -> list[str]:
        return sorted(self.__dict__["_resolver"].names())


# ---- creation / transfer functions of the top-level namespace -----------------------


def array(obj: Any, dtype: Any = None, copy: bool | None = True, order: str = "K",
          subok: bool = False, ndmin: int = 0, *, blocking: bool = False) -> _core.ndarray:
    """``cupy.array``: host data is copied to the device (a logged h2d transfer)."""
    return _core.to_device(obj, dtype, copy=copy, order=order, ndmin=ndmin, via="array")


def asarray(a: Any, dtype: Any = None, order: str | None = None, *, copy: bool | None = None,
            blocking: bool = False) -> _core.ndarray:
    """``cupy.asarray``: device arrays pass through, host data is copied (logged)."""
    return _core.to_device(a, dtype, copy=copy, order=order or "K", via="asarray")


def asanyarray(a: Any, dtype: Any = None, order: str | None = None, *,
               copy: bool | None = None, blocking: bool = False) -> _core.ndarray:
    """``cupy.asanyarray`` (same as :func:`asarray`)."""
    return _core.to_device(a, dtype, copy=copy, order=order or "K", via="asanyarray")


def _device_only(name: str, func: Callable[..., np.ndarray]) -> Callable[..., Any]:
    def wrapper(a: Any, dtype: Any = None) -> _core.ndarray:
        if not isinstance(a, _core.ndarray):
            raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                            f"{type(a).__module__}.{type(a).__name__}) (strict_cupy: "
                            f"cupy.{name} does not copy host data to the device)")
        res = func(a._a, dtype=dtype)
        return a if res is a._a else _core.wrap(res)

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = f"``cupy.{name}``: device arrays only."
    return wrapper


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            *, blocking: bool = True) -> np.ndarray:
    """``cupy.asnumpy``: device -> host copy (logged); other input through ``np.asarray``."""
    if isinstance(a, _core.ndarray):
        return _core.to_host(a, order=order, out=out, via="asnumpy")
    if out is not None:
        out[...] = np.asarray(a, order=order)
        return out
    return np.asarray(a, order=order)


def _sized(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A creation function that checks the pool before NumPy allocates (empty, zeros...)."""

    def wrapper(shape: Any, *args: Any, **kwargs: Any) -> Any:
        dtype = kwargs.get("dtype", args[1 if name == "full" else 0] if
                           len(args) > (1 if name == "full" else 0) else None)
        try:
            dims = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
            if dtype is None and name == "full":
                itemsize = np.asarray(args[0] if args else kwargs["fill_value"]).itemsize
            else:
                itemsize = np.dtype(dtype if dtype is not None else float).itemsize
        except (TypeError, ValueError, KeyError, IndexError):
            dims, itemsize = (), 0  # the call itself will say what is wrong
        if all(d >= 0 for d in dims):
            _memory.MEMORY.reserve(int(np.prod(dims, dtype=np.int64)) * itemsize)
        return func(shape, *args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = getattr(func, "__doc__", None)
    return wrapper


def fuse(*args: Any, **kwargs: Any) -> Any:
    """``cupy.fuse``: returns the function unchanged (no kernel fusion on the CPU)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


def build_namespaces(snapshot: ApiSnapshot, package: types.ModuleType) -> dict[str, Any]:
    """Create the resolvers/modules of the stand-in and register them for dispatch.

    Returns
    -------
    dict
        ``"cupy"`` -> Resolver of the package's own names; ``"linalg"``, ``"fft"``,
        ``"random"``, ``"cuda"``, ``"ndimage"`` -> :class:`StrictModule`.
    """
    pkg = package.__name__

    def module(name: str, key: str, counterparts: Iterable[Any],
               overrides: dict[str, Any] | None = None,
               require_device: Iterable[str] = ()) -> StrictModule:
        res = Resolver(key, snapshot, counterparts, overrides, require_device)
        return StrictModule(f"{pkg}.{name}", res, f"Stand-in for {key} (CuPy "
                                                    f"{snapshot.cupy_version}).")

    runtime = module("cuda.runtime", "cupy.cuda.runtime", (), _cuda.runtime_overrides())
    cuda = module("cuda", "cupy.cuda", (), {**_cuda.cuda_overrides(), "runtime": runtime})
    linalg = module("linalg", "cupy.linalg", (np.linalg,))
    fft = module("fft", "cupy.fft", (np.fft,))
    random = module("random", "cupy.random", (np.random,))
    ndimage = module("ndimage", "cupyx.scipy.ndimage", (scipy.ndimage,),
                     require_device=_NDIMAGE_DEVICE_PARAMS)

    def get_array_module(*args: Any) -> types.ModuleType:
        """``cupy.get_array_module``: the stand-in if any argument is a device array."""
        return package if any(isinstance(a, _core.ndarray) for a in args) else np

    top = Resolver("cupy", snapshot, (np, np.exceptions), {
        "ndarray": _core.ndarray,
        "ufunc": _core.ufunc,
        "array": array,
        "asarray": asarray,
        "asanyarray": asanyarray,
        "ascontiguousarray": _device_only("ascontiguousarray", np.ascontiguousarray),
        "asfortranarray": _device_only("asfortranarray", np.asfortranarray),
        "asnumpy": asnumpy,
        "get_array_module": get_array_module,
        "is_available": _cuda.is_available,
        "fuse": fuse,
        "get_default_memory_pool": _cuda.get_default_memory_pool,
        "get_default_pinned_memory_pool": _cuda.get_default_pinned_memory_pool,
        "RawModule": _rawkernel.RawModule,
        "RawKernel": _rawkernel.RawKernel,
        "cuda": cuda,
        "linalg": linalg,
        "fft": fft,
        "random": random,
    })
    for name in ("empty", "zeros", "ones", "full"):
        top.overrides[name] = _sized(name, top.resolve(name))
    _core.NAMESPACES.update({
        "numpy": package, "numpy.linalg": linalg, "numpy.fft": fft, "numpy.random": random,
        "cuda": cuda,
    })
    return {"cupy": top, "cuda": cuda, "runtime": runtime, "linalg": linalg, "fft": fft,
            "random": random, "ndimage": ndimage}
