"""The stand-in runs gpualign's CUDA kernels, and can compute like a GPU (issue 13, 1 and 4).

``strict_cupy.RawModule`` compiles the very source ``gpualign.backend._kernels`` hands
to CuPy (kernels/warp_fused.cu with its header inlined) with the host C++ compiler,
once per session, and runs a launch thread after thread on the stand-in's device
arrays, checking the arguments against the kernel's parameters. So ``warp``'s
``auto`` takes the fused kernel on the stand-in as on a GPU, and every stand-in test
of the warp runs it; these tests show that it does (a host round trip injected after
the fused call fails the run) and that the launches are checked.

``strict_cupy.configure(perturb=seed)`` injects the last-bit differences a GPU has
(reduction order, libdevice's transcendental functions, cupyx's interpolation
accumulation, FMA contraction in raw kernels); the pipeline's answers must stay
within the tolerances stated here.
"""

from __future__ import annotations

import numpy as np
import pytest
import strict_cupy
from strict_cupy import _numerics, _rawkernel

import gpualign
from gpualign.backend import _kernels
from gpualign.warp import _resample as _warp

if _rawkernel.host_compiler() is None:
    pytest.skip("no C++ compiler ($CXX, c++, g++ or clang++): the stand-in cannot build "
                "the CUDA kernels for the host", allow_module_level=True)

IMPLICIT = "Implicit conversion to a NumPy array is not allowed"


@pytest.fixture
def cp(monkeypatch):
    cp = strict_cupy.install(monkeypatch)
    monkeypatch.setattr(_warp, "_FUSED_STATUS", {})  # auto decides afresh
    cp.launches.reset()
    return cp


@pytest.fixture
def gpu(cp) -> gpualign.Backend:
    return gpualign.get_backend("cupy")


@pytest.fixture(scope="module")
def sim(request):
    """A distorted, rotated 512^2 pair with NaN regions and a bitmask (cached)."""
    make_pair = request.getfixturevalue("make_pair")
    pair = make_pair((512, 512), shift=(9.3, -5.7), rotation_deg=35.0, scale=1.03,
                     corner_distortion_px=3.0, n_stars=900, nan_fraction=0.03, seed=31)
    rng = np.random.default_rng(5)
    mask = np.zeros(pair.source.shape, np.uint16)
    mask[rng.random(mask.shape) < 0.002] |= 1
    mask[100:120, 300:340] |= 1 << 3
    return pair, mask


#: Fused kernel vs the NumPy backend: the kernel computes each pixel's source position
#: in its own order (Horner's rule per pixel; NumPy: separable BLAS products), so the
#: positions differ by an ulp (<= 1.2e-13 px) and a value by one float32 ulp, plus its
#: gradient times 1e-13 px (at most 100 x the largest |value| per px: 1e-11 of it).
FUSED_RTOL, FUSED_ATOL = 2.0**-23, 1e-11
#: Under GPU numerics (configure(perturb=...)): the prefilter's two passes and the
#: sampling each move a value by up to 2 float32 ulps of the coefficients, which the
#: order-5 prefilter makes up to ~6x the image's values; B-spline weights are positive
#: and sum to 1, so |change| <= (2 x 2 x 6 + 2 + 1) eps32 x max|image| < 32 eps32 x max.
#: Measured: <= 4.7e-7 x max (about 4 eps32).
GPU_NUMERICS_ATOL = 32 * 2.0**-23


def assert_close(got: np.ndarray, ref: np.ndarray, atol_frac: float, rtol: float = 0.0
                 ) -> None:
    """NaN where ``ref`` is NaN; elsewhere within ``rtol`` + ``atol_frac`` x max|ref|."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    scale = float(np.nanmax(np.abs(ref)))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol_frac * scale)


def crossings(cp, in_shape, out_shape) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every host <-> device copy of at least one byte per pixel."""
    floor = min(in_shape[0] * in_shape[1], out_shape[0] * out_shape[1])
    return sorted((t.direction, t.dtype, t.shape) for t in cp.transfers.select(min_bytes=floor))


# ---- the fused kernel runs on the stand-in ------------------------------------------------


def test_auto_takes_the_fused_kernel(gpu, cp, sim, monkeypatch):
    """``auto`` compiles the kernels on the stand-in and samples every pixel with them;
    cupyx's ``map_coordinates`` samples only the mask's bit planes (order 0)."""
    pair, mask = sim
    orders: list[int] = []
    original = cp.ndimage.map_coordinates

    def spy(*args, **kwargs):
        orders.append(kwargs.get("order", args[3] if len(args) > 3 else 3))
        return original(*args, **kwargs)

    monkeypatch.setattr(cp.ndimage, "map_coordinates", spy)
    ref = gpualign.align(pair.source, pair.template, backend="numpy", source_mask=mask)
    cp.transfers.reset()
    got = gpualign.align(pair.source, pair.template, backend=gpu, source_mask=mask)
    assert _warp._FUSED_STATUS[id(cp)] is True
    assert cp.launches.count("gpualign_warp_fused_o3") >= 1
    assert cp.launches.count() == cp.launches.count("gpualign_warp_fused_o3")
    assert orders and set(orders) == {0}  # the mask planes only
    np.testing.assert_array_equal(got.footprint, ref.footprint)
    np.testing.assert_array_equal(got.mask, ref.mask)
    assert_close(got.data, ref.data, FUSED_ATOL, FUSED_RTOL)
    assert crossings(cp, pair.source.shape, pair.template.shape) == sorted(
        [("h2d", "float32", (512, 512)), ("h2d", "uint16", (512, 512)),
         ("d2h", "float32", (512, 512)), ("d2h", "bool", (512, 512)),
         ("d2h", "uint16", (512, 512))]), cp.transfers.summary(512 * 512)


@pytest.mark.parametrize("order", range(6))
def test_fused_kernel_equals_the_numpy_warp(gpu, cp, sim, solve_pair, order):
    """Every order, tiles of a few rows (the kernel's row offset), NaNs in the source."""
    pair, _ = sim
    t = solve_pair(pair).transform
    assert t.has_distortion
    ref = _warp.warp(pair.source, t, (300, 420), backend=gpualign.get_backend("numpy"),
                     order=order)
    got = _warp.warp(pair.source, t, (300, 420), backend=gpu, order=order, method="fused",
                     tile_rows=37)
    assert cp.launches.count(f"gpualign_warp_fused_o{order}") == -(-300 // 37)
    np.testing.assert_array_equal(got.footprint, ref.footprint)
    assert 0.05 < (~got.footprint).mean() < 0.9  # NaN regions and the frame's edge
    assert_close(got.data, ref.data, FUSED_ATOL, FUSED_RTOL)


def test_round_trip_after_the_fused_call_fails_the_run(gpu, cp, sim, monkeypatch):
    """A host round trip of the kernel's output breaks the run on the stand-in: made
    implicitly (``np.asarray``) it raises; made explicitly it shows in the transfer log.
    (Were the fused branch not taken, nothing would fail here.)"""
    pair, _ = sim
    original = _kernels.fused_warp

    def careless(xp, *args, **kwargs):
        vals, inside = original(xp, *args, **kwargs)
        return xp.asarray(np.asarray(vals)), inside

    monkeypatch.setattr(_kernels, "fused_warp", careless)
    assert gpualign.align(pair.source, pair.template, backend="numpy").footprint.any()
    with pytest.raises(TypeError, match=IMPLICIT):
        gpualign.align(pair.source, pair.template, backend=gpu)

    def explicit(xp, *args, **kwargs):
        vals, inside = original(xp, *args, **kwargs)
        return xp.asarray(xp.asnumpy(vals)), inside

    monkeypatch.setattr(_kernels, "fused_warp", explicit)
    cp.transfers.reset()
    gpualign.align(pair.source, pair.template, backend=gpu)
    moved = crossings(cp, pair.source.shape, pair.template.shape)
    assert moved != sorted([("h2d", "float32", (512, 512)), ("d2h", "float32", (512, 512)),
                            ("d2h", "bool", (512, 512))])
    assert moved.count(("d2h", "float32", (512, 512))) == 2  # the round trip, and the output


# ---- launches are checked as CuPy passes arguments ----------------------------------------

TOY = r"""
extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ y, int n,
                                 float a) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}
// Off by one: writes y[n].
extern "C" __global__ void overrun(float* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}
__global__ void mangled(float* y) { y[0] = 0.0f; }
"""


@pytest.fixture(scope="module")
def toy():
    return strict_cupy.RawModule(code=TOY, options=("-std=c++17",))


def test_a_raw_kernel_runs_on_device_arrays(cp, toy):
    x = cp.arange(100, dtype=cp.float32)
    y = cp.zeros(100, dtype=cp.float32)
    toy.get_function("scale")((4,), (32,), (x, y, np.int32(100), np.float32(2.5)))
    np.testing.assert_array_equal(cp.asnumpy(y), 2.5 * np.arange(100, dtype=np.float32))
    assert cp.launches.records[-1] == ("scale", (4, 1, 1), (32, 1, 1))
    # A view is passed by its own data pointer, as CuPy does.
    toy.get_function("scale")((1,), (32,), (x[50:], y[:50], np.int32(10), np.float32(-1)))
    np.testing.assert_array_equal(cp.asnumpy(y)[:10], -np.arange(50, 60, dtype=np.float32))


@pytest.mark.parametrize("args, error, match", [
    (lambda x, y: (x, y, 100, np.float32(1)), TypeError, "int64.*reads 4 bytes of int"),
    (lambda x, y: (x, y, np.int32(100), 1.0), TypeError, "float64.*reads 4 bytes of float"),
    (lambda x, y: (x.get(), y, np.int32(100), np.float32(1)), TypeError, "Unsupported type"),
    (lambda x, y: (x.astype("f8"), y, np.int32(100), np.float32(1)), TypeError,
     "float64 array"),
    (lambda x, y: (x[::2], y[:50], np.int32(50), np.float32(1)), ValueError, "contiguous"),
    (lambda x, y: (x, y, np.int32(100)), TypeError, "takes 4 arguments"),
    (lambda x, y: (x, y, x.sum(), np.float32(1)), TypeError, "device array"),
    (lambda x, y: (x, x, np.int32(100), np.float32(1)), ValueError, "__restrict__"),
    (lambda x, y: (None, y, np.int32(100), np.float32(1)), None, None),  # NULL, unused
], ids=["py-int-for-int", "py-float-for-float", "numpy-array", "wrong-dtype",
        "strided", "arg-count", "0d-array-for-scalar", "restrict-alias", "null-ok"])
def test_kernel_arguments_are_checked(cp, toy, args, error, match):
    x = cp.arange(100, dtype=cp.float32)
    y = cp.zeros(100, dtype=cp.float32)
    kernel = toy.get_function("scale")
    if error is None:
        kernel((1,), (1,), args(x, y)[:2] + (np.int32(0), np.float32(1)))
        return
    with pytest.raises(error, match=match):
        kernel((4,), (32,), args(x, y))


def test_launch_geometry_and_names_are_checked(cp, toy):
    y = cp.zeros(8, dtype=cp.float32)
    kernel = toy.get_function("overrun")
    with pytest.raises(TypeError, match="expected tuple"):
        kernel([1], (8,), (y, np.int64(7)))
    with pytest.raises(_rawkernel.CUDADriverError, match="INVALID_VALUE"):
        kernel((1,), (2048,), (y, np.int64(7)))
    with pytest.raises(_rawkernel.CUDADriverError, match="INVALID_VALUE"):
        kernel((1, 70000), (8,), (y, np.int64(7)))
    with pytest.raises(_rawkernel.CUDADriverError, match="name_expressions"):
        toy.get_function("mangled")
    with pytest.raises(_rawkernel.CUDADriverError, match="NOT_FOUND"):
        toy.get_function("nonexistent")


def test_out_of_bounds_writes_are_caught(cp, toy):
    y = cp.zeros(8, dtype=cp.float32)
    with pytest.raises(strict_cupy.KernelOutOfBounds, match="argument 0"):
        toy.get_function("overrun")((1,), (32,), (y, np.int64(8)))  # writes y[8]
    toy.get_function("overrun")((1,), (32,), (y, np.int64(7)))  # in bounds
    np.testing.assert_array_equal(cp.asnumpy(y), np.ones(8, np.float32))


def test_compilation_is_lazy_and_refuses_what_threads_in_turn_cannot_do(cp):
    bad = strict_cupy.RawModule(code="extern \"C\" __global__ void k(float* y) { y[0] = ; }")
    with pytest.raises(_rawkernel.CompileException, match="failed"):  # on first use,
        bad.get_function("k")  # as CuPy (a RawModule compiles nothing when made)
    barrier = strict_cupy.RawModule(code="""
        extern "C" __global__ void k(float* y) {
            __shared__ float s[32];
            s[threadIdx.x] = y[threadIdx.x];
            __syncthreads();
            y[threadIdx.x] = s[31 - threadIdx.x];
        }""")
    with pytest.raises(_rawkernel.CompileException, match="shared memory"):
        barrier.get_function("k")
    with strict_cupy.configure(device_count=0):
        with pytest.raises(strict_cupy.cuda.runtime.CUDARuntimeError):
            strict_cupy.RawModule(code=TOY).get_function("scale")


def test_the_loader_module_is_the_kernel_source(cp):
    """``_kernels.get_module`` on the stand-in: the source, its seven kernels, and one
    host build per session (the library is cached on disk)."""
    _kernels._raw_module.cache_clear()
    module = _kernels.get_module(cp)
    names = [f"gpualign_warp_fused_o{k}" for k in range(6)] + ["gpualign_surface_eval"]
    for name in names:
        module.get_function(name)
    build = _rawkernel.build(_kernels.kernel_source(), _kernels.compile_options())
    assert sorted(build.kernels) == sorted(names)
    assert build is _rawkernel.build(_kernels.kernel_source(), _kernels.compile_options())
    assert build.path.is_file() and build.path.parent.name.startswith("strict_cupy_kernels")
    params = build.kernels["gpualign_warp_fused_o3"]
    assert [p.describe() for p in params][:4] == [
        "float* src", "long long src_h", "long long src_w", "double* params"]
    assert [p.restrict for p in params][:4] == [True, False, False, True]
    _kernels._raw_module.cache_clear()


def test_surface_eval_kernel_equals_evaluate_grid(cp, sim, solve_pair):
    t = solve_pair(sim[0]).transform
    sx, sy = _kernels.surface_eval(cp, t, 5, 400, 3, 250)
    ex, ey = t.evaluate_grid(np, 5, 400, 3, 250)
    np.testing.assert_allclose(cp.asnumpy(sx), ex, rtol=0, atol=1e-9)
    np.testing.assert_allclose(cp.asnumpy(sy), ey, rtol=0, atol=1e-9)


# ---- GPU-like numerics ---------------------------------------------------------------------


def test_gpu_numerics_change_only_what_a_gpu_changes(cp):
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    a = rng.random((40, 40))
    d, da = cp.asarray(x), cp.asarray(a)
    eps = np.finfo(np.float64).eps
    with strict_cupy.configure(perturb=3):
        # reductions and BLAS: within 2 eps of the sum of |terms| (and the rounding) ...
        s = float(cp.sum(d))
        assert abs(s - x.sum()) <= 2 * eps * np.abs(x).sum() + np.spacing(abs(x.sum()))
        m = cp.asnumpy(da @ da)
        assert np.all(np.abs(m - a @ a)
                      <= 2 * eps * (np.abs(a) @ np.abs(a)) + np.spacing(np.abs(a @ a)))
        assert not np.array_equal(m, a @ a)
        # ... transcendental functions within 2 ulps ...
        sin = cp.asnumpy(cp.sin(d))
        assert 0 < np.mean(sin != np.sin(x)) and np.all(
            np.abs(sin - np.sin(x)) <= 2.5 * np.spacing(np.abs(np.sin(x))))
        # ... and IEEE-exact operations exact.
        for got, want in ((d * 3.0 + 1.0, x * 3.0 + 1.0), (d / 7.0, x / 7.0),
                          (cp.sqrt(cp.abs(d)), np.sqrt(np.abs(x))), (cp.max(d), x.max()),
                          (cp.sort(d), np.sort(x))):
            np.testing.assert_array_equal(cp.asnumpy(got), want)
        img = cp.asarray(rng.random((30, 30)).astype(np.float32))
        coords = cp.asarray(rng.uniform(0, 29, (2, 500)))
        near = cp.ndimage.map_coordinates(img, coords, order=0)
        np.testing.assert_array_equal(cp.asnumpy(near), __import__("scipy").ndimage
                                      .map_coordinates(cp.asnumpy(img), cp.asnumpy(coords),
                                                       order=0))
    np.testing.assert_array_equal(float(cp.sum(d)), x.sum())  # off again: NumPy's bits


def test_gpu_numerics_build_the_kernels_with_fma(gpu, cp, sim, solve_pair):
    """Raw kernels are built as NVRTC builds them (FMA contraction) under GPU numerics."""
    if not _rawkernel.fma_supported():
        pytest.skip("this CPU has no FMA instructions")
    t = solve_pair(sim[0]).transform
    plain = _kernels.surface_eval(cp, t, 0, 512, 0, 512)
    with strict_cupy.configure(perturb=1):
        fma = _kernels.surface_eval(cp, t, 0, 512, 0, 512)
    builds = [b for b in _rawkernel._BUILDS.values() if "gpualign_surface_eval" in b.kernels]
    assert {b.fma for b in builds} == {False, True}
    diff = np.abs(cp.asnumpy(fma[0]) - cp.asnumpy(plain[0]))
    assert 0 < diff.max() <= 1e-12  # positions move by an ulp or so, not more


@pytest.mark.parametrize("order, seed", [(3, 1), (5, 2)])
def test_pipeline_keeps_its_answers_under_gpu_numerics(gpu, cp, sim, order, seed, accuracy):
    """align on the stand-in computing like a GPU: the same stars matched and the same fit
    (matching is IEEE-exact: differences, squares, sums of two, argmin; the fit runs on
    the host), the same footprint and mask, pixels within :data:`GPU_NUMERICS_ATOL`."""
    pair, mask = sim
    ref = gpualign.align(pair.source, pair.template, backend="numpy", source_mask=mask,
                         interp_order=order)
    _numerics.COUNTS.clear()
    with strict_cupy.configure(perturb=seed):
        got = gpualign.align(pair.source, pair.template, backend=gpu, source_mask=mask,
                             interp_order=order)
    assert {"cupyx.scipy.ndimage.spline_filter1d", "cupy.matmul"} <= set(_numerics.COUNTS)
    np.testing.assert_array_equal(got.solution.template_xy, ref.solution.template_xy)
    np.testing.assert_allclose(got.transform.matrix, ref.transform.matrix, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.transform.coeffs, ref.transform.coeffs, rtol=0, atol=1e-9)
    assert accuracy(got.transform, pair)["rms"] == pytest.approx(
        accuracy(ref.transform, pair)["rms"], abs=1e-6)
    np.testing.assert_array_equal(got.footprint, ref.footprint)
    np.testing.assert_array_equal(got.mask, ref.mask)
    assert not np.array_equal(got.data, ref.data, equal_nan=True)  # perturbed indeed
    assert_close(got.data, ref.data, GPU_NUMERICS_ATOL)
