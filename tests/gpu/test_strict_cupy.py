"""The strict CPU stand-in for CuPy is strict, faithful to its snapshot, and counts copies.

Without a GPU, gpualign's CuPy path is proven on ``strict_cupy``; these tests prove that
the stand-in itself fails wherever a GPU would: implicit device -> host conversion,
NumPy arrays mixed into device computations, names CuPy lacks. They also check the
committed API snapshot against the script that generates it.
"""

from __future__ import annotations

import json
import operator
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as sndi
import strict_cupy as cp
from strict_cupy import _snapshot

import gpualign
from gpualign.backend import Backend

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "strict_cupy" / "make_api_snapshot.py"
IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


@pytest.fixture(scope="module")
def script(load_script) -> types.ModuleType:
    """make_api_snapshot.py, imported by path (it must not need CuPy to import)."""
    return load_script(SCRIPT, "_strict_cupy_make_api_snapshot")


@pytest.fixture
def host() -> np.ndarray:
    return np.arange(20, dtype=np.float32).reshape(4, 5)


@pytest.fixture
def dev(host: np.ndarray) -> cp.ndarray:
    return cp.asarray(host)


# ---- the snapshot -----------------------------------------------------------------------


def test_snapshot_is_the_pinned_release(script):
    snap = _snapshot.default()
    assert snap.cupy_version == script.PINNED_VERSION == cp.__version__ == "14.2.0"
    assert snap.distribution == script.PINNED_DISTRIBUTION == "cupy-cuda12x"
    assert snap.provenance["distribution_version"] == script.PINNED_VERSION
    for key, names in {
        "cupy": {"asarray", "asnumpy", "ndarray", "where", "float32", "cuda", "RawModule"},
        "cupy.cuda": {"Device", "Stream", "runtime"},
        "cupy.cuda.runtime": {"getDeviceCount", "getDeviceProperties", "runtimeGetVersion"},
        "cupyx.scipy.ndimage": {"map_coordinates", "spline_filter1d", "maximum_filter"},
        "cupy.linalg": {"solve", "norm"},
        "cupy.fft": {"fft", "rfft"},
        "cupy.random": {"normal", "seed"},
    }.items():
        assert names <= snap.names(key), key
    assert {"get", "__array__", "__array_ufunc__", "__array_function__"} <= snap.classes[
        "cupy.ndarray"]
    assert "__index__" not in snap.classes["cupy.ndarray"]


def test_committed_snapshot_is_the_scripts_serialisation(script):
    text = _snapshot.SNAPSHOT_PATH.read_text(encoding="utf-8")
    assert script.dumps(json.loads(text)) == text


def _fake_cupy() -> tuple[dict, dict, dict, dict]:
    """Module objects shaped like CuPy's, built from NumPy/SciPy (no CuPy needed)."""
    def mod(name: str, **attrs: object) -> types.ModuleType:
        m = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(m, k, v)
        return m

    def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
        return a

    runtime = mod("cupy.cuda.runtime", getDeviceCount=lambda: 1, cudaMemcpyDefault=4)
    cuda = mod("cupy.cuda", Device=type("Device", (), {"id": 0}), runtime=runtime)

    class ndarray:  # noqa: N801
        def get(self): ...

    modules = {
        "cupy": mod("cupy", asarray=asarray, float32=np.float32, add=np.add, pi=np.pi,
                    inf=np.inf, ndarray=ndarray, cuda=cuda, s_=np.s_, _private=1),
        "cupy.linalg": mod("cupy.linalg", norm=np.linalg.norm),
        "cupy.fft": mod("cupy.fft", fft=np.fft.fft),
        "cupy.random": mod("cupy.random", seed=np.random.seed),
        "cupy.cuda": cuda,
        "cupy.cuda.runtime": runtime,
        "cupyx.scipy.ndimage": mod("cupyx.scipy.ndimage",
                                   map_coordinates=sndi.map_coordinates),
    }
    classes = {"cupy.ndarray": ndarray, "cupy.cuda.Device": cuda.Device,
               "cupy.cuda.Stream": type("Stream", (), {})}
    return modules, classes, {"cupy": [np]}, {"cupy": "99.1.0", "numpy": np.__version__}


def test_script_output_is_what_the_loader_reads(script, tmp_path):
    modules, classes, counterparts, versions = _fake_cupy()
    snap = script.collect(modules, classes, counterparts=counterparts, versions=versions)
    path = tmp_path / "snap.json"
    script.write(snap, path)
    loaded = _snapshot.load(path)
    assert loaded.cupy_version == "99.1.0"
    assert loaded.names("cupy") == {"asarray", "float32", "add", "pi", "inf", "ndarray",
                                    "cuda", "s_"}
    assert loaded.entry("cupy", "float32").numpy_alias
    assert loaded.entry("cupy", "float32").kind == "class"
    assert loaded.entry("cupy", "add").kind == "ufunc"
    assert loaded.entry("cupy", "add").raw["nin"] == 2
    assert loaded.entry("cupy", "pi").value == np.pi
    assert loaded.entry("cupy", "inf").value == np.inf
    assert loaded.entry("cupy", "cuda").kind == "module"
    sig = loaded.entry("cupy", "asarray").signature
    assert list(sig.parameters) == ["a", "dtype", "order", "copy", "blocking"]
    sig.bind(1, copy=True)
    with pytest.raises(TypeError):
        sig.bind(1, like=None)
    assert loaded.entry("cupy.cuda.runtime", "cudaMemcpyDefault").value == 4
    assert "get" in loaded.classes["cupy.ndarray"]
    # the same text as the committed file's serialiser produces
    assert path.read_text() == script.dumps(json.loads(path.read_text()))


def test_script_refuses_other_versions_without_flag(script):
    with pytest.raises(ValueError, match="cupy version"):
        script.collect({}, {}, versions={})


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format=99), "format"),
    (lambda d: d["modules"].pop("cupyx.scipy.ndimage"), "cupyx.scipy.ndimage"),
    (lambda d: d["classes"].pop("cupy.ndarray"), "cupy.ndarray"),
    (lambda d: d["modules"]["cupy"].update(_hidden={"kind": "function"}), "private"),
    (lambda d: d["modules"]["cupy"].update(x={"kind": "gadget"}), "bad entry"),
    (lambda d: d["modules"]["cupy"].update(x={"kind": "constant"}), "without a value"),
    (lambda d: d.update(cupy_version=None), "cupy_version"),
])
def test_loader_rejects_malformed_snapshots(mutate, match):
    data = json.loads(_snapshot.SNAPSHOT_PATH.read_text())
    mutate(data)
    with pytest.raises(_snapshot.SnapshotError, match=match):
        _snapshot.parse(data)


def test_loader_rejects_nan_literals(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"format": 1, "x": NaN}')
    with pytest.raises(_snapshot.SnapshotError, match="NaN"):
        _snapshot.load(path)


# The snapshot against the real CuPy releases (CuPy 13 and 14, CUDA 12 and 13), and
# gpualign's CuPy names against each of them: tests/gpu/test_cupy_api_snapshot.py.


# ---- only CuPy's names ------------------------------------------------------------------


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_package_exposes_only_snapshot_names():
    snap = cp.snapshot
    assert _public(cp) - cp.EXTRAS <= snap.names("cupy")
    assert {n for n in vars(cp) if not n.startswith("_")} - cp.EXTRAS <= snap.names("cupy")
    for sub, key in [(cp.linalg, "cupy.linalg"), (cp.fft, "cupy.fft"),
                     (cp.random, "cupy.random"), (cp.cuda, "cupy.cuda"),
                     (cp.cuda.runtime, "cupy.cuda.runtime"),
                     (cp.ndimage, "cupyx.scipy.ndimage")]:
        assert _public(sub) == snap.names(key), key
        assert {n for n in vars(sub) if not n.startswith("_")} <= snap.names(key), key


def _is_placeholder(obj: object) -> bool:
    """A name the stand-in cannot provide: using it raises NotImplementedError."""
    try:
        obj.anything  # noqa: B018
    except NotImplementedError:
        return True
    except AttributeError:
        return False
    return False


@pytest.mark.parametrize("key", ["cupy", "cupy.linalg", "cupy.fft", "cupy.random",
                                 "cupy.cuda", "cupy.cuda.runtime", "cupyx.scipy.ndimage"])
def test_every_snapshot_name_resolves(key):
    """Every recorded name resolves to an object of the recorded kind: modules, classes,
    callables with CuPy's ufunc arity, constants with CuPy's value, NumPy's own object
    where CuPy's is NumPy's, or a placeholder that fails when used."""
    module = {"cupy": cp, "cupy.linalg": cp.linalg, "cupy.fft": cp.fft,
              "cupy.random": cp.random, "cupy.cuda": cp.cuda,
              "cupy.cuda.runtime": cp.cuda.runtime, "cupyx.scipy.ndimage": cp.ndimage}[key]
    counterpart = {"cupy": np, "cupy.linalg": np.linalg, "cupy.fft": np.fft,
                   "cupy.random": np.random}.get(key)
    names = cp.snapshot.names(key)
    assert names
    wrong = []
    for name in sorted(names):
        entry = cp.snapshot.entry(key, name)
        obj = getattr(module, name)
        kind = entry.kind
        if kind == "module":
            ok = isinstance(obj, types.ModuleType) or _is_placeholder(obj)
        elif kind == "class":
            ok = isinstance(obj, type)
        elif kind == "ufunc":
            ok = callable(obj) and all(getattr(obj, a) == entry.raw[a]
                                       for a in ("nin", "nout") if a in entry.raw)
        elif kind == "function":
            ok = callable(obj)
        elif kind == "constant":
            value = entry.value
            ok = obj == value or (isinstance(value, float) and np.isnan(value)
                                  and np.isnan(obj))
        else:  # object, unavailable
            ok = obj is not None
        if entry.numpy_alias and counterpart is not None and hasattr(counterpart, name) \
                and kind in ("class", "function", "ufunc"):
            ok = ok and obj is getattr(counterpart, name)
        if not ok:
            wrong.append((name, kind, type(obj).__name__))
    assert not wrong, wrong


def test_numpy_only_names_do_not_exist():
    missing = sorted(n for n in _public(np) if n not in cp.snapshot.names("cupy"))
    assert {"nditer", "asmatrix", "errstate", "nanpercentile", "geomspace", "insert"} <= set(
        missing)
    for name in missing:
        with pytest.raises(AttributeError, match="not in the CuPy 14.2.0 API snapshot"):
            getattr(cp, name)
    with pytest.raises(AttributeError):
        cp.ndimage.geometric_transform  # noqa: B018
    with pytest.raises(AttributeError):
        cp.linalg.matrix_norm  # noqa: B018 - NumPy 2 only


def test_ndarray_has_only_cupy_attributes():
    allowed = cp.snapshot.classes["cupy.ndarray"]
    assert _public(cp.ndarray) <= allowed
    python_internals = {"__module__", "__qualname__", "__doc__", "__slots__", "__dict__",
                        "__firstlineno__", "__static_attributes__", "__annotations__"}
    dunders = {n for n in vars(cp.ndarray) if n.startswith("__")} - python_internals
    assert dunders <= allowed, dunders - allowed
    for forbidden in ("__index__", "__array_interface__", "__array_struct__", "__buffer__",
                      "__cuda_array_interface__", "data", "ctypes"):
        assert not hasattr(cp.ndarray, forbidden), forbidden


def test_cuda_classes_have_only_cupy_attributes():
    for cls, key in [(cp.cuda.Device, "cupy.cuda.Device"), (cp.cuda.Stream, "cupy.cuda.Stream")]:
        own = {n for n in vars(cls) if not n.startswith("_")}
        assert own <= cp.snapshot.classes[key], (key, own - cp.snapshot.classes[key])


def test_functions_take_cupy_signatures(dev):
    with pytest.raises(TypeError, match="like"):
        cp.zeros((2, 2), like=None)
    with pytest.raises(TypeError, match="method"):
        cp.median(dev, method="linear")  # NumPy has it, CuPy 14.2 does not
    with pytest.raises(TypeError, match="signature"):
        cp.ndimage.map_coordinates(dev, cp.zeros((2, 1)), order=1, bogus=True)
    assert float(cp.median(dev, overwrite_input=False)) == 9.5


def test_cuda_only_features_raise_not_implemented():
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        cp.RawModule(path="kernels.cubin")  # a binary; RawModule(code=) runs on the host
    with pytest.raises(NotImplementedError):
        cp.ElementwiseKernel("T x", "T y", "y = x", "copy")
    with pytest.raises(NotImplementedError):
        cp.cuda.compiler.compile_using_nvrtc  # noqa: B018

    @cp.fuse()
    def f(x, y):
        return x + y

    assert float(f(cp.asarray(1.0), 2.0)) == 3.0


# ---- implicit conversion ----------------------------------------------------------------


@pytest.mark.parametrize("convert", [
    np.asarray, np.array, np.ascontiguousarray,
    lambda x: np.zeros(x.shape)[:] + np.asarray(x),
    lambda x: sndi.gaussian_filter(x, 1.0),
    lambda x: sndi.map_coordinates(x, np.zeros((2, 1))),
    lambda x: np.asarray([x, x]),
    lambda x: np.stack([np.zeros(5), x[0]]),
])
def test_implicit_conversion_raises(dev, convert):
    with pytest.raises(TypeError) as info:
        convert(dev)
    assert IMPLICIT in str(info.value) or "Unsupported type" in str(info.value)


def test_implicit_conversion_message_is_cupys(dev):
    with pytest.raises(TypeError) as info:
        np.asarray(dev)
    assert str(info.value) == IMPLICIT


def test_explicit_syncs_are_allowed_and_counted(dev, host):
    cp.transfers.reset()
    s = dev.sum()
    assert isinstance(s, cp.ndarray) and s.ndim == 0
    assert float(s) == host.sum()
    assert int(dev[1, 2]) == 7
    assert bool(dev[0, 1])
    assert dev[3, 4].item() == 19.0
    assert dev.get().tolist() == host.tolist()
    assert cp.transfers.count("d2h", via="scalar") == 4
    assert cp.transfers.count("d2h", via="get") == 1
    assert cp.transfers.h2d == 0


def test_scalar_like_use_needs_explicit_conversion(dev):
    with pytest.raises(TypeError):
        operator.index(dev[0, 1])  # CuPy arrays have no __index__
    with pytest.raises(TypeError):
        range(dev[0, 3])  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="ambiguous"):
        bool(dev)
    with pytest.raises(TypeError, match="len"):
        len(dev[0, 0])


def test_results_are_device_arrays_never_numpy_scalars(dev):
    for res in (dev.sum(), dev.max(), dev[0, 0], dev.mean(axis=None), cp.linalg.norm(dev),
                np.sum(dev), np.median(dev), dev.any(), cp.count_nonzero(dev) + 0):
        assert isinstance(res, cp.ndarray), type(res)
        assert res.ndim == 0


# ---- mixing host and device arrays ------------------------------------------------------


@pytest.mark.parametrize("mix", [
    lambda d, h: d + h,
    lambda d, h: h + d,
    lambda d, h: d * h,
    lambda d, h: d < h,
    lambda d, h: h == d,
    lambda d, h: d @ h.T,
    lambda d, h: np.add(d, h),
    lambda d, h: np.where(h > 3, d, 0),
    lambda d, h: cp.where(h > 3, d, 0),
    lambda d, h: cp.where(d > 3, h, 0),
    lambda d, h: cp.concatenate([d, h]),
    lambda d, h: cp.stack([d, h]),
    lambda d, h: cp.maximum(d, h),
    lambda d, h: cp.clip(d, h, 10.0),
    lambda d, h: cp.add(d, 1.0, out=h),
    lambda d, h: cp.ascontiguousarray(h),
    lambda d, h: d + h[0, 0:1].reshape(()),  # even 0-d NumPy arrays
    lambda d, h: cp.linalg.solve(d[:4, :4], h[:4, 0]),
    lambda d, h: cp.fft.fft(h),
    lambda d, h: cp.ndimage.uniform_filter(h, 3),
    lambda d, h: cp.ndimage.map_coordinates(d, h[:2]),
    lambda d, h: cp.ndimage.spline_filter1d(d, 3, output=h),
])
def test_numpy_arrays_are_refused_by_device_code(dev, host, mix):
    with pytest.raises(TypeError):
        mix(dev, host)


@pytest.mark.parametrize("op", [
    lambda xp, d: d + 1.0,
    lambda xp, d: 2 * d,
    lambda xp, d: np.float32(2) * d,
    lambda xp, d: np.float64(0.5) + d,
    lambda xp, d: d ** 2,
    lambda xp, d: -d,
    lambda xp, d: abs(d),
    lambda xp, d: d < np.array(3.0),  # CuPy unwraps 0-d NumPy arrays in comparisons only
    lambda xp, d: np.sqrt(d),
    lambda xp, d: np.isfinite(d),
    lambda xp, d: xp.where(d > 3, d, np.float32(0)),
    lambda xp, d: xp.clip(d, -np.inf, 5.0),
])
def test_scalars_mix_with_device_arrays(dev, host, op):
    res = op(cp, dev)
    assert isinstance(res, cp.ndarray)
    np.testing.assert_array_equal(res.get(), op(np, host))


def test_ufuncs_refuse_sequences(dev):
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.add(dev[0], [1, 2, 3, 4, 5])
    with pytest.raises(TypeError):
        dev[0] + [1, 2, 3, 4, 5]
    with pytest.raises(TypeError):
        np.add.reduce(dev)  # CuPy only handles ufunc __call__ through NumPy


def test_numpy_functions_dispatch_to_cupy(dev, host):
    np.testing.assert_allclose(np.linalg.norm(dev).get(), np.linalg.norm(host))
    np.testing.assert_allclose(np.fft.rfft(dev[0]).get(), np.fft.rfft(host[0]))
    assert isinstance(np.concatenate([dev, dev]), cp.ndarray)
    with pytest.raises(TypeError, match="no implementation found"):
        np.nanpercentile(dev, 50)  # not in CuPy 14.2


def test_creation_and_views(dev, host):
    z = cp.zeros((3, 2), dtype=cp.float32)
    assert z.dtype == np.float32 and z.shape == (3, 2) and z.nbytes == 24
    v = dev[1:3]
    v[...] = 0
    assert float(dev[1:3].sum()) == 0.0
    assert cp.asarray(dev) is dev
    assert cp.asarray(dev, dtype=cp.float32) is dev
    assert cp.ascontiguousarray(dev) is dev
    c = cp.array(dev)
    assert c is not dev
    t = dev.T
    assert t.shape == (5, 4) and isinstance(t, cp.ndarray)
    assert dev.astype(cp.float64).dtype == np.float64
    assert dev.astype(cp.float32, copy=False) is dev
    assert dev.reshape(20).shape == (20,) and dev.ravel().shape == (20,)
    assert dev.copy().get().tolist() == dev.get().tolist()
    assert len(dev) == 4 and len(list(dev)) == 4
    assert isinstance(dev.device, cp.cuda.Device)


def test_indexing_with_device_and_host_indices(dev, host):
    cp.transfers.reset()
    mask = dev > 10
    np.testing.assert_array_equal(dev[mask].get(), host[host > 10])
    idx = cp.asarray(np.array([0, 2]))
    np.testing.assert_array_equal(dev[idx].get(), host[[0, 2]])
    assert cp.transfers.count("h2d", via="index") == 0
    np.testing.assert_array_equal(dev[np.array([0, 2])].get(), host[[0, 2]])
    assert cp.transfers.count("h2d", via="index") == 1  # CuPy copies it implicitly
    dev[0] = np.arange(5)
    assert cp.transfers.count("h2d", via="setitem") == 1


def test_host_data_is_detached_and_native(host):
    d = cp.asarray(host)
    host[0, 0] = 99
    assert float(d[0, 0]) == 0.0
    big = np.arange(6, dtype=">f4")
    assert cp.asarray(big).dtype == np.dtype("<f4")  # CuPy swaps big-endian uploads
    with pytest.raises(ValueError, match="copy"):
        cp.asarray(host, copy=False)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        cp.asarray(np.array(["a"]))


def test_pickle_round_trip_goes_through_the_host(dev):
    cp.transfers.reset()
    back = pickle.loads(pickle.dumps(dev))
    assert isinstance(back, cp.ndarray)
    np.testing.assert_array_equal(back.get(), dev.get())
    assert cp.transfers.count("d2h", via="pickle") == 1


# ---- ndimage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.normal(size=(24, 31)).astype(np.float32)


@pytest.mark.parametrize("name, args, kwargs", [
    ("spline_filter1d", (3,), dict(axis=1, output=np.float32, mode="mirror")),
    ("spline_filter", (3,), dict(output=np.float64, mode="mirror")),
    ("maximum_filter", (), dict(size=3, mode="nearest")),
    ("uniform_filter", (), dict(size=5, mode="constant")),
    ("gaussian_filter", (1.5,), {}),
    ("zoom", (1.3,), dict(order=3)),
    ("shift", ((1.25, -0.5),), dict(order=1)),
    ("median_filter", (), dict(size=3)),
])
def test_ndimage_equals_scipy(image, name, args, kwargs):
    got = getattr(cp.ndimage, name)(cp.asarray(image), *args, **kwargs)
    want = getattr(sndi, name)(image, *args, **kwargs)
    assert isinstance(got, cp.ndarray)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.get(), want)


@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_map_coordinates_equals_scipy(image, order):
    rng = np.random.default_rng(order)
    coords = rng.uniform(-2, 30, size=(2, 7, 9))
    pre = sndi.spline_filter(image, order, mode="mirror", output=np.float32) if order > 1 \
        else image
    want = sndi.map_coordinates(pre, coords, order=order, mode="mirror", prefilter=False,
                                output=np.float32)
    got = cp.ndimage.map_coordinates(cp.asarray(pre), cp.asarray(coords), order=order,
                                     mode="mirror", prefilter=False, output=cp.float32)
    np.testing.assert_array_equal(got.get(), want)


def test_ndimage_output_arrays(image):
    d = cp.asarray(image)
    out = cp.empty(image.shape, dtype=cp.float32)
    res = cp.ndimage.spline_filter1d(d, 3, axis=0, output=out, mode="mirror")
    assert res is out or res is None
    np.testing.assert_array_equal(out.get(), sndi.spline_filter1d(image, 3, axis=0,
                                                                  output=np.float32))
    with pytest.raises(TypeError, match="output"):
        cp.ndimage.spline_filter1d(d, 3, output=np.empty(image.shape, np.float32))


def test_ndimage_refuses_host_inputs(image):
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.ndimage.gaussian_filter(image, 1.0)
    with pytest.raises(TypeError, match="coordinates"):
        cp.ndimage.map_coordinates(cp.asarray(image), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="must be a cupy.ndarray"):
        cp.ndimage.map_coordinates(cp.asarray(image), [[0.0], [1.0]])
    with pytest.raises(TypeError, match="must be a cupy.ndarray"):
        cp.ndimage.maximum_filter([[1.0, 2.0]], size=3)


# ---- transfers --------------------------------------------------------------------------


def test_transfers_are_counted_with_sizes_and_callers(host):
    cp.transfers.reset()
    d = cp.asarray(host)
    cp.asarray(d)  # already on the device: no copy
    e = d * 2
    back = cp.asnumpy(e)
    also = e.get()
    assert isinstance(back, np.ndarray) and isinstance(also, np.ndarray)
    assert back is not also
    assert (cp.transfers.h2d, cp.transfers.d2h) == (1, 2)
    assert cp.transfers.h2d_bytes == host.nbytes
    assert cp.transfers.d2h_bytes == 2 * host.nbytes
    (first,) = cp.transfers.select("h2d")
    assert first.shape == host.shape and first.dtype == "float32" and first.via == "asarray"
    assert first.where.startswith(__file__) and ":" in first.where
    assert "asnumpy" in cp.transfers.summary()
    assert cp.asnumpy(host) is host  # host input: no transfer
    assert cp.transfers.d2h == 2
    cp.transfers.reset()
    assert len(cp.transfers) == 0


def test_transfer_free_blocks(host):
    d = cp.asarray(host)
    with cp.transfers.forbid():
        e = (d * 2).sum(axis=0)
        with pytest.raises(cp.TransferForbidden, match="d2h"):
            float(e[0])
        with pytest.raises(cp.TransferForbidden, match="h2d"):
            cp.asarray(host)
    assert float(e[1]) == 2 * host[:, 1].sum()


def test_get_and_set_check_shapes(dev, host):
    out = np.empty_like(host)
    assert dev.get(out=out) is out
    with pytest.raises(ValueError, match="Shape mismatch"):
        dev.get(out=np.empty((2, 2), np.float32))
    with pytest.raises(TypeError):
        dev.get(out=np.empty_like(host, dtype=np.float64))
    d = cp.zeros(host.shape, dtype=cp.float32)
    d.set(host)
    np.testing.assert_array_equal(d.get(), host)
    with pytest.raises(TypeError):
        d.set(cp.asarray(host))


# ---- cuda ---------------------------------------------------------------------------------


def test_cuda_device_and_runtime():
    rt = cp.cuda.runtime
    assert rt.getDeviceCount() == 1
    props = rt.getDeviceProperties(0)
    assert props["name"] == b"strict-cupy CPU stand-in"
    assert isinstance(rt.runtimeGetVersion(), int)
    dev = cp.cuda.Device()
    assert dev.id == 0
    free, total = dev.mem_info
    assert 0 < free <= total
    dev.synchronize()
    with cp.cuda.Device(0) as d:
        assert d.id == 0
    with pytest.raises(rt.CUDARuntimeError):
        cp.cuda.Device(1)
    with cp.cuda.Stream() as s:
        assert cp.cuda.get_current_stream() is s
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    assert cp.is_available()


def test_configure_device_state():
    with cp.configure(device_count=0):
        assert cp.cuda.runtime.getDeviceCount() == 0
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
            cp.cuda.Device()
    with cp.configure(free_memory=2**20, total_memory=2**21):
        assert cp.cuda.Device().mem_info == (2**20, 2**21)
    with cp.configure(fail="cudaErrorInsufficientDriver"):
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Insufficient"):
            cp.cuda.runtime.getDeviceCount()
    assert cp.cuda.runtime.getDeviceCount() == 1


# ---- as gpualign's CuPy -------------------------------------------------------------------


def test_install_makes_the_cupy_backend(monkeypatch, host):
    module = cp.install(monkeypatch)
    assert module is cp
    be = gpualign.get_backend("cupy")
    assert isinstance(be, Backend)
    assert be.name == "cupy" and be.is_gpu
    assert be.xp is cp and be.ndimage is cp.ndimage
    assert "strict-cupy" in be.device and "14.2.0" in be.reason
    d = be.to_device(host)
    assert isinstance(d, cp.ndarray)
    np.testing.assert_array_equal(be.to_host(d), host)
    assert (cp.transfers.h2d, cp.transfers.d2h) == (1, 1)
    assert be.free_memory() == cp.cuda.Device().mem_info[0]
    assert gpualign.get_backend("auto").name == "cupy"
    with cp.configure(device_count=0):
        assert gpualign.get_backend("auto").name == "numpy"
        with pytest.raises(gpualign.BackendUnavailable, match="no CUDA device"):
            gpualign.get_backend("cupy")


def test_install_is_undone_after_the_test():
    with pytest.raises(gpualign.BackendUnavailable, match="CuPy cannot be imported"):
        gpualign.get_backend("cupy")


def test_stand_in_is_importable_without_gpualign_state():
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import strict_cupy as cp; "
            "print(cp.__version__, cp.cuda.runtime.getDeviceCount())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["14.2.0", "1"]
