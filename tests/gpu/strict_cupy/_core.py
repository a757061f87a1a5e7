"""The stand-in ``ndarray``, its ufuncs, and the wrappers that delegate to NumPy.

Device semantics reproduced (from ``cupy/_core/core.pyx`` and ``_kernel.pyx``):

* ``ndarray.__array__`` raises ``TypeError``: NumPy, SciPy and anything calling
  ``np.asarray`` cannot read a device array. ``.get()`` / ``cupy.asnumpy`` copy it.
* Kernel arguments are device arrays or Python/NumPy *scalars*; a ``numpy.ndarray``
  (even 0-d) is an ``Unsupported type``. ``__array_ufunc__`` and
  ``__array_function__`` send NumPy calls on device arrays to the CuPy function of
  the same name, which then rejects any NumPy array among the operands.
* Results are device arrays, 0-d ones included (never NumPy scalars).
  ``float()``, ``int()``, ``complex()``, ``bool()``, ``.item()``, ``.tolist()`` and
  ``repr`` are explicit synchronising copies: allowed, and logged as transfers.
* Indexing with NumPy arrays or assigning NumPy values copies them to the device
  (CuPy does this implicitly); logged as transfers.

* Every new buffer (not a view) is a device allocation: recorded, and refused with
  CuPy's ``OutOfMemoryError`` past the free memory (:mod:`._memory`).

Not reproduced: CuPy's numerics (everything is computed by NumPy/SciPy; GPU-like
last-bit differences are injected on request, :mod:`._numerics`), its wrap-around of
out-of-bounds integer indices, asynchronous execution, streams.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from . import _numerics
from ._cuda import STATE as _cuda_state
from ._memory import MEMORY
from ._transfers import TransferLog

__all__ = [
    "TRANSFERS",
    "ndarray",
    "ufunc",
    "delegate",
    "unsupported",
    "to_device",
    "to_host",
    "is_scalar",
]

#: Every host <-> device copy (``strict_cupy.transfers``).
TRANSFERS = TransferLog()

_PY_SCALAR_TYPES = frozenset({int, float, bool, complex})
_NP_SCALAR_TYPES = frozenset(np.dtype(c).type for c in "?bhilqBHILQefdFD")


def is_scalar(x: Any) -> bool:
    """Whether CuPy accepts ``x`` as a scalar kernel argument (``_scalar.scalar_type_set``)."""
    t = type(x)
    return t in _PY_SCALAR_TYPES or t in _NP_SCALAR_TYPES


def unsupported(x: Any, where: str) -> TypeError:
    """The ``TypeError`` CuPy raises for an argument it cannot pass to a kernel."""
    msg = f"Unsupported type {type(x)}"
    if isinstance(x, np.ndarray):
        msg += (f" (strict_cupy: {where} was given a NumPy array; CuPy never copies host "
                "arrays implicitly: move it with cupy.asarray first)")
    else:
        msg += f" (strict_cupy: argument of {where})"
    return TypeError(msg)


def check_dtype(dtype: np.dtype) -> None:
    """Raise ``ValueError`` for dtypes CuPy cannot hold (object, strings, long double)."""
    if (dtype.kind in "OSUMm" or (dtype.kind == "f" and dtype.itemsize > 8)
            or (dtype.kind == "c" and dtype.itemsize > 16)):
        raise ValueError(f"Unsupported dtype {dtype}")


# --------------------------------------------------------------------------------------
# Host <-> device
# --------------------------------------------------------------------------------------


def _native(a: np.ndarray) -> np.ndarray:
    """CuPy stores little-endian data: big-endian host arrays are swapped on upload."""
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        return a.astype(a.dtype.newbyteorder("<"))
    return a


def _has_device(obj: Any) -> bool:
    if isinstance(obj, ndarray):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_device(o) for o in obj)
    return False


def _has_host_array(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_host_array(o) for o in obj)
    return False


def to_device(obj: Any, dtype: Any = None, *, copy: bool | None = True, order: str = "K",
              ndmin: int = 0, via: str = "asarray") -> ndarray:
    """``cupy.array`` semantics: device input stays on the device, host input is copied.

    A device array is returned unchanged when no copy is needed (``copy`` not True and
    the dtype/order already match), as ``cupy.asarray`` does.
    """
    if isinstance(obj, ndarray):
        res = np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        return obj if res is obj._a else ndarray._wrap(res)
    if _has_device(obj):  # a (nested) sequence of device arrays: assembled on the device
        host_part = _has_host_array(obj)
        res = np.array(_unwrap(obj, "cupy.array", host_ok=True), dtype=dtype, order=order,
                       ndmin=ndmin)
        check_dtype(res.dtype)
        if host_part:
            TRANSFERS.record("h2d", res.nbytes, res.shape, res.dtype, via)
        return ndarray._wrap(res)
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array from host data "
                         "(strict_cupy: a host -> device copy is always a copy)")
    res = np.array(obj, dtype=dtype, copy=True, order="C" if order in ("K", "A") else order,
                   ndmin=ndmin)
    if not res.flags.owndata or res.base is not None:  # pragma: no cover - defensive
        res = res.copy()
    check_dtype(res.dtype)
    res = _native(res)
    TRANSFERS.record("h2d", res.nbytes, res.shape, res.dtype, via)
    return ndarray._wrap(res)


def to_host(a: ndarray, *, order: str = "C", out: np.ndarray | None = None,
            via: str = "get") -> np.ndarray:
    """Device -> host copy (``ndarray.get``): always a new NumPy array (or ``out``)."""
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.dtype != a.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {a.dtype} array")
        if out.shape != a.shape:
            raise ValueError(f"Shape mismatch. Expected shape: {a.shape}, "
                             f"actual shape: {out.shape}")
        np.copyto(out, a._a)
        TRANSFERS.record("d2h", a.nbytes, a.shape, a.dtype, via)
        return out
    order = order.upper()
    if order == "A":
        order = "F" if a._a.flags.f_contiguous and not a._a.flags.c_contiguous else "C"
    if order not in ("C", "F"):
        raise ValueError(f"unsupported order: {order}")
    res = np.array(a._a, order=order, copy=True)
    TRANSFERS.record("d2h", res.nbytes, res.shape, res.dtype, via)
    return res


def _sync(a: ndarray, via: str = "scalar") -> np.ndarray:
    """A synchronising read of a whole (small) array, logged as a d2h transfer."""
    TRANSFERS.record("d2h", a.nbytes, a.shape, a.dtype, via)
    return a._a.copy()


# --------------------------------------------------------------------------------------
# Argument unwrapping / result wrapping
# --------------------------------------------------------------------------------------


def _unwrap(obj: Any, where: str, *, host_ok: bool = False) -> Any:
    """Replace device arrays by their NumPy payload; reject host arrays unless allowed."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        if host_ok:
            return obj
        raise unsupported(obj, where)
    if type(obj) in (list, tuple):
        return type(obj)(_unwrap(o, where, host_ok=host_ok) for o in obj)
    return obj


def _outs(kwargs: dict[str, Any], where: str) -> dict[int, ndarray]:
    """Device arrays passed as ``out``/``output`` (results that are them keep identity)."""
    found: dict[int, ndarray] = {}
    for key in ("out", "output"):
        value = kwargs.get(key)
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if isinstance(v, ndarray):
                found[id(v._a)] = v
            elif isinstance(v, np.ndarray):
                raise unsupported(v, f"{where} ({key}=)")
    return found


def wrap(res: Any, outs: dict[int, ndarray] | None = None) -> Any:
    """Wrap NumPy results as device arrays (NumPy scalars become 0-d arrays)."""
    if isinstance(res, np.ndarray):
        if outs and id(res) in outs and outs[id(res)]._a is res:
            return outs[id(res)]
        check_dtype(res.dtype)
        return ndarray._wrap(res)
    if isinstance(res, np.generic):
        return ndarray._wrap(np.asarray(res))
    if isinstance(res, tuple):
        items = [wrap(r, outs) for r in res]
        return type(res)(*items) if hasattr(res, "_fields") else tuple(items)
    if isinstance(res, list):
        return [wrap(r, outs) for r in res]
    return res


def _call(func: Callable[..., Any], where: str, args: tuple, kwargs: dict[str, Any], *,
          host_ok: bool = False) -> Any:
    outs = _outs(kwargs, where)
    a = _unwrap(args, where, host_ok=host_ok)
    k = {key: _unwrap(v, where, host_ok=host_ok) for key, v in kwargs.items()}
    res = func(*a, **k)
    if _cuda_state.perturb:  # GPU-like last bits (strict_cupy.configure(perturb=...))
        res = _numerics.perturb_result(func, where, a, k, res)
    return wrap(res, outs)


# --------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------

#: CuPy-only keywords that change nothing on a synchronous CPU stand-in.
_IGNORABLE = frozenset({"blocking", "stream"})


def _numpy_params(func: Callable[..., Any]) -> frozenset[str] | None:
    """Keyword names ``func`` accepts, or None when it takes ``**kwargs`` or is opaque."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(sig.parameters)


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    plain = (type(None), bool, int, float, str)
    return isinstance(value, plain) and isinstance(default, plain) and value == default


def delegate(qualname: str, func: Callable[..., Any], signature: inspect.Signature | None,
             *, require_device: Iterable[str] = (), from_host: bool = False,
             version: str = "") -> Callable[..., Any]:
    """A CuPy-like function computed by the NumPy/SciPy ``func``.

    Parameters
    ----------
    qualname : str
        ``cupy.where``, ``cupyx.scipy.ndimage.map_coordinates``...
    func : callable
        The NumPy/SciPy implementation.
    signature : inspect.Signature or None
        CuPy's recorded signature: a call CuPy would refuse (an unknown keyword, too
        many arguments) raises ``TypeError`` here too.
    require_device : iterable of str
        Parameters that must be device arrays (``input`` of cupyx.scipy.ndimage).
    from_host : bool
        ``func`` reads host data (``fromfile``...): its result is a logged h2d copy.
    version : str
        CuPy version, for messages.
    """
    np_params = _numpy_params(func)
    required = tuple(require_device)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = None
        if signature is not None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{qualname}(): {exc} (CuPy {version} signature: "
                                f"{qualname}{signature})") from None
        for name in required if bound is not None else ():
            value = bound.arguments.get(name)
            if name in bound.arguments and not isinstance(value, ndarray):
                if isinstance(value, np.ndarray):
                    raise unsupported(value, f"{qualname}({name}=)")
                raise TypeError(f"{qualname}(): {name} must be a cupy.ndarray, got "
                                f"{type(value).__name__}")
        if np_params is not None:
            for key in list(kwargs):
                if key not in np_params:
                    param = signature.parameters.get(key) if signature is not None else None
                    default = param.default if param is not None else inspect.Parameter.empty
                    if key in _IGNORABLE or _is_default(kwargs[key], default):
                        del kwargs[key]
                    else:
                        raise NotImplementedError(
                            f"strict_cupy: {qualname}(..., {key}=...) is CuPy-only and not "
                            "modelled by the CPU stand-in")
        if from_host:
            res = func(*_unwrap(args, qualname), **kwargs)
            return to_device(res, via=qualname)
        return _call(func, qualname, args, kwargs)

    wrapper.__qualname__ = qualname
    wrapper.__module__ = "strict_cupy"
    return wrapper


class ufunc:  # noqa: N801 - named like cupy.ufunc
    """A CuPy universal function computed by its NumPy counterpart.

    Inputs must be device arrays or Python/NumPy scalars (NumPy arrays, lists and
    tuples are an ``Unsupported type``, as for CuPy's kernels).
    """

    def __init__(self, func: Callable[..., Any], name: str, nin: int | None = None,
                 nout: int | None = None) -> None:
        self._func = func
        self.__name__ = name
        self.name = f"cupy_{name}"
        self.nin = int(nin if nin is not None else getattr(func, "nin", 1))
        self.nout = int(nout if nout is not None else getattr(func, "nout", 1))
        self.nargs = self.nin + self.nout
        self.types = list(getattr(func, "types", []))
        self.__doc__ = getattr(func, "__doc__", None)

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    def _check_inputs(self, inputs: Iterable[Any], where: str) -> None:
        for x in inputs:
            if not (isinstance(x, ndarray) or is_scalar(x)):
                raise unsupported(x, where)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) < self.nin or len(args) > self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.name!r}. "
                            f"It must be either {self.nin} or {self.nargs} (with outputs), "
                            f"but given {len(args)}.")
        inputs, pos_out = args[:self.nin], args[self.nin:]
        where = f"cupy.{self.__name__}"
        self._check_inputs(inputs, where)
        if pos_out:
            if "out" in kwargs:
                raise TypeError("cannot specify 'out' as both a positional and keyword "
                                "argument")
            kwargs["out"] = pos_out if len(pos_out) > 1 else pos_out[0]
        out = kwargs.get("out")
        for o in out if isinstance(out, tuple) else (out,):
            if o is not None and not isinstance(o, ndarray):
                raise unsupported(o, f"{where} (out=)")
        w = kwargs.get("where")
        if w is not None and not (isinstance(w, ndarray) or is_scalar(w)):
            raise unsupported(w, f"{where} (where=)")
        return _call(self._func, where, inputs, kwargs)

    def _method(self, method: str, *args: Any, **kwargs: Any) -> Any:
        where = f"cupy.{self.__name__}.{method}"
        func = getattr(self._func, method, None)
        if func is None:
            raise NotImplementedError(f"strict_cupy: {where} is not available")
        n_arrays = 2 if method == "outer" else 1
        for x in args[:n_arrays]:
            if not isinstance(x, ndarray):
                raise unsupported(x, where)
        if method == "at":
            a, indices, *rest = args
            func(a._a, _index(indices), *_unwrap(tuple(rest), where))
            return None
        return _call(func, where, args, kwargs)

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        """``ufunc.reduce`` on device arrays."""
        return self._method("reduce", *args, **kwargs)

    def accumulate(self, *args: Any, **kwargs: Any) -> Any:
        """``ufunc.accumulate`` on device arrays."""
        return self._method("accumulate", *args, **kwargs)

    def reduceat(self, *args: Any, **kwargs: Any) -> Any:
        """``ufunc.reduceat`` on device arrays."""
        return self._method("reduceat", *args, **kwargs)

    def outer(self, *args: Any, **kwargs: Any) -> Any:
        """``ufunc.outer`` on device arrays."""
        return self._method("outer", *args, **kwargs)

    def at(self, *args: Any, **kwargs: Any) -> Any:
        """``ufunc.at`` on device arrays (in place)."""
        return self._method("at", *args, **kwargs)


# --------------------------------------------------------------------------------------
# ndarray
# --------------------------------------------------------------------------------------

#: Stand-in namespaces by NumPy module (filled by the package: "numpy" -> strict_cupy...).
NAMESPACES: dict[str, Any] = {}


def _ufunc(name: str) -> ufunc:
    return getattr(NAMESPACES["numpy"], name)


def _should_use_rop(x: Any, y: Any) -> bool:
    """CuPy's NEP 13 deferral rule (``core.pyx``)."""
    try:
        y_ufunc = y.__array_ufunc__
    except AttributeError:
        return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)
    return y_ufunc is None


def _binop(np_ufunc: np.ufunc) -> tuple[Callable[..., Any], Callable[..., Any],
                                         Callable[..., Any]]:
    name = np_ufunc.__name__

    def op(self: ndarray, other: Any) -> Any:
        if isinstance(other, ndarray):
            return _ufunc(name)(self, other)
        if _should_use_rop(self, other):
            return NotImplemented
        return np_ufunc(self, other)

    def rop(self: ndarray, other: Any) -> Any:
        if _should_use_rop(self, other):
            return NotImplemented
        return np_ufunc(other, self)

    def iop(self: ndarray, other: Any) -> Any:
        return _ufunc(name)(self, other, out=self)

    return op, rop, iop


def _cmp(np_ufunc: np.ufunc) -> Callable[..., Any]:
    name = np_ufunc.__name__

    def op(self: ndarray, other: Any) -> Any:
        if isinstance(other, ndarray):
            return _ufunc(name)(self, other)
        if _should_use_rop(self, other):
            return NotImplemented
        if isinstance(other, np.ndarray) and other.ndim == 0:
            other = other.item()  # as CuPy's __richcmp__
        return np_ufunc(self, other)

    return op


class _Flags:
    """``ndarray.flags``: c_contiguous, f_contiguous, owndata (read-only)."""

    def __init__(self, a: np.ndarray) -> None:
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, key: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[key]

    def __repr__(self) -> str:
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


def _index(key: Any) -> Any:
    """Unwrap an index; NumPy arrays/lists in it are copied to the device, as CuPy does."""
    items = key if isinstance(key, tuple) else (key,)
    out = []
    for s in items:
        if isinstance(s, ndarray):
            out.append(s._a)
        elif isinstance(s, (np.ndarray, list, tuple)):
            arr = np.asarray(s)
            TRANSFERS.record("h2d", arr.nbytes, arr.shape, arr.dtype, "index")
            out.append(arr)
        else:
            out.append(s)
    if not any(s is Ellipsis for s in out):
        out.append(Ellipsis)  # integer indexing gives a 0-d view, never a scalar
    return tuple(out)


class ndarray:  # noqa: N801 - named like cupy.ndarray
    """A "device" array: a NumPy array that refuses implicit conversion.

    Construct with ``strict_cupy.asarray`` (host -> device) or creation functions;
    ``ndarray(shape, dtype)`` allocates like ``cupy.ndarray``.
    """

    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None,
                 strides: Any = None, order: str = "C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict_cupy: memptr/strides are not modelled")
        dt = np.dtype(dtype)
        check_dtype(dt)
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        MEMORY.reserve(int(np.prod(dims, dtype=np.int64)) * dt.itemsize)
        a = np.empty(shape, dtype=dt, order=order)
        MEMORY.track(a)
        self._a = a

    @classmethod
    def _wrap(cls, a: np.ndarray) -> ndarray:
        MEMORY.track(a)  # a new buffer is a device allocation (OutOfMemoryError if full)
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # -- attributes ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Lengths of axes (settable: reshape without copy)."""
        return self._a.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._a.shape = value

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides in bytes."""
        return self._a.strides

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._a.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._a.size

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self._a.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of all elements."""
        return self._a.nbytes

    @property
    def dtype(self) -> np.dtype:
        """Element type (a NumPy dtype, as in CuPy)."""
        return self._a.dtype

    @property
    def T(self) -> ndarray:  # noqa: N802
        """Transposed view."""
        return self if self.ndim < 2 else ndarray._wrap(self._a.T)

    @property
    def mT(self) -> ndarray:  # noqa: N802
        """Matrix-transposed view (last two axes)."""
        return ndarray._wrap(self._a.mT)

    @property
    def real(self) -> ndarray:
        """Real part."""
        return ndarray._wrap(self._a.real)

    @real.setter
    def real(self, value: Any) -> None:
        self._a.real = _unwrap(value, "cupy.ndarray.real")

    @property
    def imag(self) -> ndarray:
        """Imaginary part."""
        return ndarray._wrap(self._a.imag)

    @imag.setter
    def imag(self, value: Any) -> None:
        self._a.imag = _unwrap(value, "cupy.ndarray.imag")

    @property
    def flags(self) -> _Flags:
        """Memory layout flags."""
        return _Flags(self._a)

    @property
    def base(self) -> ndarray | None:
        """The array this one is a view of, or None."""
        return None if self._a.base is None else ndarray._wrap(self._a.base)

    @property
    def device(self) -> Any:
        """The (only) device: ``strict_cupy.cuda.Device(0)``."""
        return NAMESPACES["cuda"].Device(0)

    # -- conversion (explicit syncs) -------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        """Copy to a new host NumPy array (or into ``out``)."""
        return to_host(self, order=order, out=out, via="get")

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy a host NumPy array of the same dtype and shape into this array."""
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        TRANSFERS.record("h2d", arr.nbytes, arr.shape, arr.dtype, "set")
        self._a[...] = arr

    def item(self) -> Any:
        """The single element as a Python scalar (a sync)."""
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return _sync(self).item()

    def tolist(self) -> Any:
        """Nested Python list (a full copy to the host)."""
        return _sync(self, "tolist").tolist()

    def tobytes(self, order: str = "C") -> bytes:
        """Raw bytes (a full copy to the host)."""
        return _sync(self, "tobytes").tobytes(order)

    def __int__(self) -> int:
        return int(_sync(self))

    def __float__(self) -> float:
        return float(_sync(self))

    def __complex__(self) -> complex:
        return complex(_sync(self))

    def __bytes__(self) -> bytes:
        return bytes(_sync(self, "tobytes"))

    def __bool__(self) -> bool:
        if self.size == 0:
            warnings.warn(
                "The truth value of an empty array is ambiguous. Returning False, but in "
                "future this will result in an error. Use `array.size > 0` to check that an "
                "array is not empty.", DeprecationWarning, stacklevel=2)
            return False
        if self.size == 1:
            return bool(_sync(self))
        raise ValueError("The truth value of an array with more than one element is "
                         "ambiguous. Use a.any() or a.all()")

    def __repr__(self) -> str:
        return repr(_sync(self, "repr"))

    def __str__(self) -> str:
        return str(_sync(self, "repr"))

    def __format__(self, spec: str) -> str:
        return format(_sync(self, "repr"), spec)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return NAMESPACES["numpy"].array, (to_host(self, via="pickle"),)

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> ndarray:
        return self.copy()

    # -- container -------------------------------------------------------------------
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self) -> Any:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key: Any) -> ndarray:
        return ndarray._wrap(self._a[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
            host = np.asarray(value)
            TRANSFERS.record("h2d", host.nbytes, host.shape, host.dtype, "setitem")
            value = host
        self._a[_index(key)] = value

    # -- NumPy protocols -------------------------------------------------------------
    def __array_ufunc__(self, uf: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        inout = inputs
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inout += out
            kwargs["out"] = out[0]
        if method != "__call__":
            return NotImplemented
        name = uf.__name__
        try:
            cp_ufunc = getattr(NAMESPACES["numpy"], name)
        except AttributeError:
            return NotImplemented
        for x in inout:
            if not (isinstance(x, ndarray) or is_scalar(x) or isinstance(x, np.ndarray)):
                return NotImplemented
        if name in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
            inputs = tuple(x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x
                           for x in inputs)
        return cp_ufunc(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        ns = NAMESPACES.get(getattr(func, "__module__", "") or "")
        if ns is None:
            return NotImplemented
        try:
            cp_func = getattr(ns, func.__name__)
        except AttributeError:
            return NotImplemented
        if cp_func is func:
            return NotImplemented
        for t in types:
            if t not in (ndarray, np.ndarray):
                return NotImplemented
        return cp_func(*args, **kwargs)

    # -- arithmetic ------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binop(np.add)
    __sub__, __rsub__, __isub__ = _binop(np.subtract)
    __mul__, __rmul__, __imul__ = _binop(np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = _binop(np.true_divide)
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binop(np.floor_divide)
    __mod__, __rmod__, __imod__ = _binop(np.remainder)
    __lshift__, __rlshift__, __ilshift__ = _binop(np.left_shift)
    __rshift__, __rrshift__, __irshift__ = _binop(np.right_shift)
    __and__, __rand__, __iand__ = _binop(np.bitwise_and)
    __or__, __ror__, __ior__ = _binop(np.bitwise_or)
    __xor__, __rxor__, __ixor__ = _binop(np.bitwise_xor)
    __divmod__, __rdivmod__ = _binop(np.divmod)[:2]
    __rpow__, __ipow__ = _binop(np.power)[1:]
    __lt__ = _cmp(np.less)
    __le__ = _cmp(np.less_equal)
    __eq__ = _cmp(np.equal)  # type: ignore[assignment]
    __ne__ = _cmp(np.not_equal)  # type: ignore[assignment]
    __gt__ = _cmp(np.greater)
    __ge__ = _cmp(np.greater_equal)

    def __pow__(self, other: Any, modulo: Any = None) -> Any:
        return _binop(np.power)[0](self, other)

    def __matmul__(self, other: Any) -> Any:
        if not isinstance(other, ndarray) and _should_use_rop(self, other):
            return NotImplemented
        return NAMESPACES["numpy"].matmul(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        if _should_use_rop(self, other):
            return NotImplemented
        return NAMESPACES["numpy"].matmul(other, self)

    def __neg__(self) -> ndarray:
        return _ufunc("negative")(self)

    def __pos__(self) -> ndarray:
        return self

    def __abs__(self) -> ndarray:
        return _ufunc("absolute")(self)

    def __invert__(self) -> ndarray:
        return _ufunc("invert")(self)

    # -- methods with CuPy-specific behaviour ----------------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: str | None = None,
               subok: Any = None, copy: bool = True) -> ndarray:
        """Cast; returns ``self`` when ``copy=False`` and nothing changes."""
        res = self._a.astype(dtype, order=order, casting=casting or "unsafe", copy=copy)
        if res is self._a:
            return self
        check_dtype(res.dtype)
        return ndarray._wrap(res)

    def copy(self, order: str = "C") -> ndarray:
        """Device copy."""
        return ndarray._wrap(self._a.copy(order=order))

    def view(self, dtype: Any = None, array_class: Any = None) -> ndarray:
        """A view, optionally reinterpreting the dtype."""
        if array_class is not None:
            raise NotImplementedError("strict_cupy: view(array_class=) is not modelled")
        return ndarray._wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def ptp(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        """Range (max - min) along an axis."""
        return _call(np.ptp, "cupy.ndarray.ptp", (self,), dict(axis=axis, out=out,
                                                                keepdims=keepdims))

    def reshape(self, *shape: Any, order: str = "C") -> ndarray:
        """Reshaped view (or copy)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ndarray._wrap(self._a.reshape(shape, order=order))

    def _scatter(self, op: np.ufunc, slices: Any, value: Any) -> None:
        if isinstance(value, np.ndarray):
            raise unsupported(value, f"cupy.ndarray.scatter_{op.__name__}")
        op.at(self._a, _index(slices), _unwrap(value, "cupy.ndarray.scatter"))

    def scatter_add(self, slices: Any, value: Any) -> None:
        """``self[slices] += value`` accumulating repeated indices."""
        self._scatter(np.add, slices, value)

    def scatter_max(self, slices: Any, value: Any) -> None:
        """Elementwise maximum into ``self[slices]``, accumulating repeated indices."""
        self._scatter(np.maximum, slices, value)

    def scatter_min(self, slices: Any, value: Any) -> None:
        """Elementwise minimum into ``self[slices]``, accumulating repeated indices."""
        self._scatter(np.minimum, slices, value)


#: Methods computed by the NumPy method of the same name (when CuPy has them).
DELEGATED_METHODS = (
    "all", "any", "argmax", "argmin", "argpartition", "argsort", "choose", "clip",
    "compress", "conj", "conjugate", "cumprod", "cumsum", "diagonal", "dot", "fill",
    "flatten", "max", "mean", "min", "nonzero", "partition", "prod", "put", "ravel",
    "repeat", "round", "searchsorted", "sort", "squeeze", "std", "sum", "swapaxes", "take",
    "trace", "transpose", "var",
)
#: Methods that, in CuPy, copy host arguments to the device instead of refusing them.
_HOST_ARG_METHODS = frozenset({"put", "compress"})


def _make_method(name: str) -> Callable[..., Any]:
    where = f"cupy.ndarray.{name}"

    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        if name in _HOST_ARG_METHODS:
            for x in args:
                if isinstance(x, (np.ndarray, list)):
                    arr = np.asarray(x)
                    TRANSFERS.record("h2d", arr.nbytes, arr.shape, arr.dtype, where)
            return _call(getattr(self._a, name), where, args, kwargs, host_ok=True)
        return _call(getattr(self._a, name), where, args, kwargs)

    method.__name__ = name
    method.__qualname__ = f"ndarray.{name}"
    method.__doc__ = f"``numpy.ndarray.{name}`` on the device array."
    return method


def install_methods(allowed: frozenset[str]) -> None:
    """Add the delegated methods that the snapshot's ``cupy.ndarray`` has."""
    for name in DELEGATED_METHODS:
        if name in allowed:
            setattr(ndarray, name, _make_method(name))
    for name in list(vars(ndarray)):
        if not name.startswith("_") and name not in allowed:
            delattr(ndarray, name)


def unavailable(qualname: str, kind: str) -> Any:
    """Placeholder of a CuPy name the CPU stand-in cannot provide (kernels, pools...).

    Using it raises ``NotImplementedError`` (a class placeholder raises on construction),
    like a CUDA feature failing without a device.
    """
    msg = (f"strict_cupy: {qualname} exists in CuPy but needs a CUDA device; the CPU "
           "stand-in does not provide it")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(msg)

    if kind == "class":
        return type(qualname.rsplit(".", 1)[-1], (), {
            "__init__": fail, "__doc__": msg, "__module__": "strict_cupy"})

    class _Unavailable:
        __doc__ = msg

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(msg)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise NotImplementedError(msg)

        def __repr__(self) -> str:
            return f"<strict_cupy placeholder for {qualname}>"

    return _Unavailable()

