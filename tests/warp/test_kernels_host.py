"""Host checks of the CUDA kernels' per-pixel maths against SciPy (no GPU needed).

tests/warp/kernels_host_shim.cpp compiles the real kernels/warp_fused.cu (and its header)
with g++ as plain C++ and exposes the maths, plus sequential emulations of the kernel
launches, through ctypes. What this cannot check: CUDA-specific behaviour (real
thread scheduling, NVRTC, device memory) -- see tests/gpu/test_kernels_nvcc.py for the
device compilation and the gpu-marked tests for execution.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.interpolate import BSpline

from gpualign.backend import _kernels

REPO = Path(__file__).resolve().parents[2]
KERNEL_DIR = REPO / "kernels"
SHIM = Path(__file__).resolve().parent / "kernels_host_shim.cpp"
ORDERS = list(range(6))

P = ctypes.POINTER
c_double_p = P(ctypes.c_double)
c_float_p = P(ctypes.c_float)
c_ll_p = P(ctypes.c_longlong)
c_u8_p = P(ctypes.c_ubyte)
LL = ctypes.c_longlong


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot build the host shim of the CUDA kernels")
    out = tmp_path_factory.mktemp("shim") / "kernels_host_shim.so"
    cmd = [
        gxx,
        "-std=c++17",
        "-O2",
        "-shared",
        "-fPIC",
        "-Wall",
        f"-I{KERNEL_DIR}",
        str(SHIM),
        "-o",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"g++ failed:\n{res.stderr}"
    so = ctypes.CDLL(str(out))
    so.ga_params_size.restype = ctypes.c_int
    so.ga_max_degree.restype = ctypes.c_int
    so.ga_mirror_coordinate.argtypes = [c_double_p, LL, LL, c_double_p]
    so.ga_mirror_index.argtypes = [c_ll_p, LL, LL, c_ll_p]
    so.ga_spline_weights.argtypes = [c_double_p, LL, ctypes.c_int, c_ll_p, c_double_p]
    so.ga_sample.argtypes = [
        c_float_p,
        LL,
        LL,
        c_double_p,
        c_double_p,
        LL,
        ctypes.c_int,
        c_double_p,
    ]
    for name in ("ga_transform", "ga_distortion"):
        getattr(so, name).argtypes = [
            c_double_p,
            c_double_p,
            c_double_p,
            LL,
            c_double_p,
            c_double_p,
        ]
    so.ga_jacobian.argtypes = [c_double_p, c_double_p, c_double_p, LL, c_double_p]
    so.ga_inside.argtypes = [c_double_p, c_double_p, LL, LL, LL, c_u8_p]
    u = ctypes.c_uint
    vp = ctypes.c_void_p
    so.ga_launch_warp_fused.argtypes = [
        ctypes.c_int,
        u,
        u,
        u,
        u,
        vp,
        LL,
        LL,
        vp,
        vp,
        vp,
        vp,
        LL,
        LL,
        LL,
        ctypes.c_double,
    ]
    so.ga_launch_surface_eval.argtypes = [u, u, u, u, vp, LL, LL, LL, LL, ctypes.c_int, vp, vp]
    return so


def ptr(a: np.ndarray, ctype):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(P(ctype))


# --------------------------------------------------------------------------- references


def ref_transform(t: dict, x, y):
    """DESIGN.md formula, written independently of the kernels (plain power sums)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(t["matrix"], dtype=np.float64)
    sx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    sy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    c = np.asarray(t["coeffs"], dtype=np.float64)
    if c.size:
        cx, cy, hx, hy = t["norm"]
        umin, umax, vmin, vmax = t["clip"]
        u = np.clip((x - cx) / hx, umin, umax)
        v = np.clip((y - cy) / hy, vmin, vmax)
        for i in range(c.shape[1]):
            for j in range(c.shape[2]):
                sx = sx + c[0, i, j] * u**i * v**j
                sy = sy + c[1, i, j] * u**i * v**j
    return sx, sy


def ref_warp(src, t, out_shape, order, cval, rows=None):
    """The reference warp of DESIGN.md (spline_filter + map_coordinates, mirror)."""
    if order > 1:
        pre = ndimage.spline_filter(src, order, mode="mirror", output=np.float32)
    else:
        pre = src.astype(np.float32)
    r0, r1 = rows if rows is not None else (0, out_shape[0])
    y, x = np.mgrid[r0:r1, 0 : out_shape[1]].astype(np.float64)
    sx, sy = ref_transform(t, x, y)
    h, w = src.shape
    inside = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    val = ndimage.map_coordinates(pre, [sy, sx], order=order, mode="mirror", prefilter=False)
    return pre, np.where(inside, val, np.float32(cval)).astype(np.float32), inside


def random_transform(rng, degree: int, shape, clip=1.2) -> dict:
    h, w = shape
    ang = rng.uniform(-0.2, 0.2)
    s = rng.uniform(0.9, 1.1)
    m = np.array(
        [
            [s * np.cos(ang), -s * np.sin(ang), rng.uniform(-4, 4)],
            [s * np.sin(ang), s * np.cos(ang), rng.uniform(-4, 4)],
        ]
    )
    if degree >= 2:
        c = rng.normal(0.0, 1.5, size=(2, degree + 1, degree + 1))
        i, j = np.indices((degree + 1, degree + 1))
        c[:, (i + j < 2) | (i + j > degree)] = 0.0
    else:
        c = np.zeros((2, 0, 0))
    return {
        "matrix": m,
        "coeffs": c,
        "norm": (w / 2.0, h / 2.0, w / 2.0, h / 2.0),
        "clip": (-clip, clip, -clip, clip),
    }


def edge_coords(n: int, rng, count: int = 300) -> np.ndarray:
    special = [
        -0.5,
        -0.49999,
        -0.25,
        0.0,
        0.25,
        0.5,
        n - 1.5,
        n - 1.0,
        n - 0.75,
        n - 0.5,
        n - 0.5 + 1e-9,
        n - 0.25,
        n,
        n + 0.5,
        -1.0,
        -1.5,
        -n,
        -n + 0.5,
        2 * n - 1.5,
        3 * n + 0.5,
        -2 * n - 0.5,
    ]
    special += list(np.arange(-2, n + 2, 0.5))
    rand = rng.uniform(-2.5 * n - 3, 3.5 * n + 3, size=count)
    return np.concatenate([np.asarray(special, dtype=np.float64), rand])


# --------------------------------------------------------------------------- primitives


def test_layout_constants_match_header(lib):
    assert lib.ga_params_size() == _kernels.PARAMS_SIZE
    assert lib.ga_max_degree() == _kernels.MAX_DEGREE


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_mirror_index_is_scipy_mirror(lib, length):
    idx = np.arange(-5 * length - 7, 6 * length + 7, dtype=np.int64)
    out = np.empty_like(idx)
    lib.ga_mirror_index(ptr(idx, LL), idx.size, length, ptr(out, LL))
    # d c b | a b c d | c b a  -- scipy's 'mirror' == numpy's 'reflect' padding
    base = np.arange(length)
    pad = 6 * length + 8
    padded = np.pad(base, pad, mode="reflect") if length > 1 else np.zeros(2 * pad + 1, int)
    expect = padded[idx + pad]
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_spline_weights_are_bsplines(lib, order):
    rng = np.random.default_rng(order)
    cc = np.concatenate([rng.uniform(0, 20, 500), np.arange(0, 6, 0.5)])
    start = np.empty(cc.size, dtype=np.int64)
    w = np.empty((cc.size, order + 1))
    lib.ga_spline_weights(
        ptr(cc, ctypes.c_double), cc.size, order, ptr(start, LL), ptr(w, ctypes.c_double)
    )
    knots = np.arange(order + 2) - (order + 1) / 2.0
    beta = BSpline.basis_element(knots, extrapolate=False)
    taps = start[:, None] + np.arange(order + 1)[None, :]
    expect = np.nan_to_num(beta(cc[:, None] - taps))
    np.testing.assert_allclose(w, expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-14)


SHAPES = [(1, 1), (1, 7), (6, 1), (2, 2), (3, 5), (17, 23)]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sample_matches_map_coordinates(lib, order, shape):
    rng = np.random.default_rng(1000 * order + shape[0] * 31 + shape[1])
    img = rng.normal(0.0, 100.0, size=shape).astype(np.float32)
    img[0, 0] = 1e-3  # a small value, checked with the absolute tolerance
    ys = edge_coords(shape[0], rng)
    xs = edge_coords(shape[1], rng)
    # all special pairs near the corners plus random pairs
    sy = np.concatenate([np.repeat(ys[:40], 40), ys])
    sx = np.concatenate([np.tile(xs[:40], 40), rng.choice(xs, ys.size)])
    sy, sx = np.ascontiguousarray(sy), np.ascontiguousarray(sx)
    out = np.empty(sy.size)
    lib.ga_sample(
        ptr(img, ctypes.c_float),
        shape[0],
        shape[1],
        ptr(sy, ctypes.c_double),
        ptr(sx, ctypes.c_double),
        sy.size,
        order,
        ptr(out, ctypes.c_double),
    )
    ref = ndimage.map_coordinates(
        img, [sy, sx], order=order, mode="mirror", prefilter=False, output=np.float64
    )
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ORDERS)
def test_sample_matches_on_prefiltered_image(lib, order):
    # The production input: a spline-filtered float32 image, coordinates in the footprint.
    rng = np.random.default_rng(order)
    src = rng.gamma(2.0, 50.0, size=(31, 44)).astype(np.float32)
    pre = ndimage.spline_filter(src, order, mode="mirror", output=np.float32) if order > 1 else src
    sy = rng.uniform(-0.5, 30.5, 4000)
    sx = rng.uniform(-0.5, 43.5, 4000)
    out = np.empty(sy.size)
    lib.ga_sample(
        ptr(pre, ctypes.c_float),
        31,
        44,
        ptr(sy, ctypes.c_double),
        ptr(sx, ctypes.c_double),
        sy.size,
        order,
        ptr(out, ctypes.c_double),
    )
    ref = ndimage.map_coordinates(
        pre, [sy, sx], order=order, mode="mirror", prefilter=False, output=np.float64
    )
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # In practice the host build is bit-identical to SciPy (same operation order).
    assert np.max(np.abs(out - ref)) <= 1e-9 * np.max(np.abs(ref))


def test_sample_large_index_uses_64bit(lib, tmp_path):
    # A (2, 2**31 + 64) float32 image (8 GiB) as a sparse memory map: only the touched
    # pages exist. Sampling in row 1 addresses elements beyond 2**31.
    h, w = 2, 2**31 + 64
    path = tmp_path / "big.f32"
    try:
        with open(path, "wb") as f:
            f.truncate(h * w * 4)
        big = np.memmap(path, dtype=np.float32, mode="r+", shape=(h, w))
    except (OSError, ValueError) as exc:  # pragma: no cover - filesystem dependent
        pytest.skip(f"cannot create an 8 GiB sparse memory map here: {exc}")
    rng = np.random.default_rng(5)
    x_lo = 2**31 - 40
    window = rng.normal(0.0, 10.0, size=(h, 80)).astype(np.float32)
    big[:, x_lo : x_lo + 80] = window
    big.flush()
    sy = np.array([0.3, 0.9, 1.0, 0.5])
    sx = x_lo + np.array([30.25, 41.5, 47.0, 39.75])
    for order in ORDERS:
        out = np.empty(sy.size)
        lib.ga_sample(
            ptr(big, ctypes.c_float),
            h,
            w,
            ptr(sy, ctypes.c_double),
            ptr(sx, ctypes.c_double),
            sy.size,
            order,
            ptr(out, ctypes.c_double),
        )
        ref = ndimage.map_coordinates(
            window, [sy, sx - x_lo], order=order, mode="mirror", prefilter=False, output=np.float64
        )
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    del big
    path.unlink()


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (5, 1), (12, 17)], ids=str)
def test_footprint_matches_reference(lib, shape):
    rng = np.random.default_rng(3)
    sy = np.concatenate([edge_coords(shape[0], rng, 200), [np.nan, np.inf, -np.inf]])
    sx = np.concatenate(
        [rng.choice(edge_coords(shape[1], rng, 200), sy.size - 3), [0.0, 0.0, np.nan]]
    )
    out = np.empty(sy.size, dtype=np.uint8)
    lib.ga_inside(
        ptr(sy, ctypes.c_double),
        ptr(sx, ctypes.c_double),
        sy.size,
        shape[0],
        shape[1],
        ptr(out, ctypes.c_ubyte),
    )
    h, w = shape
    with np.errstate(invalid="ignore"):
        expect = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    np.testing.assert_array_equal(out.astype(bool), expect)


# --------------------------------------------------------------------------- transform


def _eval_shim(lib, fn: str, params: np.ndarray, x: np.ndarray, y: np.ndarray):
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    a = np.empty(x.size)
    b = np.empty(x.size)
    getattr(lib, fn)(
        ptr(params, ctypes.c_double),
        ptr(x, ctypes.c_double),
        ptr(y, ctypes.c_double),
        x.size,
        ptr(a, ctypes.c_double),
        ptr(b, ctypes.c_double),
    )
    return a, b


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 5, 7])
def test_transform_matches_reference(lib, degree):
    rng = np.random.default_rng(degree)
    t = random_transform(rng, degree, (900, 1200), clip=0.8)
    params = _kernels.pack_transform(t)
    # covers the unclipped interior and the clipped outskirts
    x = rng.uniform(-600, 1800, 5000)
    y = rng.uniform(-450, 1350, 5000)
    sx, sy = _eval_shim(lib, "ga_transform", params, x, y)
    rx, ry = ref_transform(t, x, y)
    np.testing.assert_allclose(sx, rx, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sy, ry, rtol=1e-12, atol=1e-9)
    dx, dy = _eval_shim(lib, "ga_distortion", params, x, y)
    ax, ay = ref_transform({**t, "coeffs": np.zeros((2, 0, 0))}, x, y)
    np.testing.assert_allclose(dx, rx - ax, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dy, ry - ay, rtol=1e-9, atol=1e-9)


def test_transform_accepts_attributes_and_zero_coeffs(lib):
    t = types.SimpleNamespace(
        matrix=np.array([[1.0, 0.1, 2.0], [-0.1, 1.0, -3.0]]),
        coeffs=np.zeros((2, 3, 3)),
        norm=(0.0, 0.0, 0.0, 0.0),
        clip=(-1.0, 1.0, -1.0, 1.0),
    )
    params = _kernels.pack_transform(t)
    assert params[14] == 0  # all-zero coefficients: no distortion, u/v never computed
    x = np.array([0.0, 5.0, 10.0])
    sx, sy = _eval_shim(lib, "ga_transform", params, x, x)  # hx = 0 would give NaN
    np.testing.assert_allclose(sx, x + 0.1 * x + 2.0)
    np.testing.assert_allclose(sy, -0.1 * x + x - 3.0)


def test_pack_transform_rejects_bad_input():
    good = random_transform(np.random.default_rng(0), 3, (10, 10))
    with pytest.raises(ValueError, match="degree 8"):
        _kernels.pack_transform({**good, "coeffs": np.ones((2, 9, 9))})
    with pytest.raises(ValueError, match="matrix"):
        _kernels.pack_transform({**good, "matrix": np.eye(2)})
    with pytest.raises(ValueError, match="non-finite"):
        _kernels.pack_transform({**good, "matrix": np.full((2, 3), np.nan)})


@pytest.mark.parametrize("degree", [0, 3, 7])
def test_jacobian_matches_finite_differences(lib, degree):
    rng = np.random.default_rng(10 + degree)
    t = random_transform(rng, degree, (400, 500), clip=1.5)
    params = _kernels.pack_transform(t)
    x = rng.uniform(20, 480, 500)
    y = rng.uniform(20, 380, 500)
    jac = np.empty(x.size)
    lib.ga_jacobian(
        ptr(params, ctypes.c_double),
        ptr(x, ctypes.c_double),
        ptr(y, ctypes.c_double),
        x.size,
        ptr(jac, ctypes.c_double),
    )
    e = 1e-4
    sxp, syp = ref_transform(t, x + e, y)
    sxm, sym = ref_transform(t, x - e, y)
    sxq, syq = ref_transform(t, x, y + e)
    sxn, syn = ref_transform(t, x, y - e)
    fd = ((sxp - sxm) * (syq - syn) - (sxq - sxn) * (syp - sym)) / (4 * e * e)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)
    # clipped region: the distortion is constant, only the affine part remains
    if degree:
        far = np.array([5000.0, -3000.0])
        jf = np.empty(2)
        lib.ga_jacobian(
            ptr(params, ctypes.c_double),
            ptr(far, ctypes.c_double),
            ptr(far.copy(), ctypes.c_double),
            2,
            ptr(jf, ctypes.c_double),
        )
        np.testing.assert_allclose(jf, np.linalg.det(t["matrix"][:, :2]), rtol=1e-12)


def test_transform_matches_gpualign_transform(lib):
    rng = np.random.default_rng(77)
    obj = _lead_transform(random_transform(rng, 4, (300, 400), clip=0.9))
    x = rng.uniform(-200, 600, 3000)
    y = rng.uniform(-150, 450, 3000)
    sx, sy = _eval_shim(lib, "ga_transform", _kernels.pack_transform(obj), x, y)
    tx, ty = obj(x, y)
    np.testing.assert_allclose(sx, np.asarray(tx), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sy, np.asarray(ty), rtol=1e-12, atol=1e-9)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("order", ORDERS)
def test_emulated_fused_kernel_matches_reference_warp(lib, order):
    rng = np.random.default_rng(40 + order)
    src = rng.gamma(2.0, 30.0, size=(37, 53)).astype(np.float32)
    out_shape = (41, 47)
    t = random_transform(rng, 3 if order % 2 else 5, out_shape, clip=1.1)
    r0, r1 = 5, 33
    pre, ref, inside = ref_warp(src, t, out_shape, order, -7.5, rows=(r0, r1))
    params = _kernels.pack_transform(t)
    nrows, w = r1 - r0, out_shape[1]
    out = np.full((nrows, w), np.nan, dtype=np.float32)
    fp = np.full((nrows, w), 9, dtype=np.uint8)
    jac = np.full((nrows, w), np.nan, dtype=np.float32)
    # grid.y deliberately too small: exercises the row-stride loop
    lib.ga_launch_warp_fused(
        order,
        2,
        2,
        32,
        8,
        pre.ctypes.data,
        37,
        53,
        params.ctypes.data,
        out.ctypes.data,
        fp.ctypes.data,
        jac.ctypes.data,
        w,
        r0,
        r1,
        -7.5,
    )
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(fp.astype(bool), inside)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(jac))


def test_emulated_surface_eval(lib):
    rng = np.random.default_rng(8)
    t = random_transform(rng, 4, (60, 80), clip=0.7)
    params = _kernels.pack_transform(t)
    x0, x1, y0, y1 = 3, 70, 10, 59
    shape = (y1 - y0, x1 - x0)
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    rx, ry = ref_transform(t, x, y)
    ax, ay = ref_transform({**t, "coeffs": np.zeros((2, 0, 0))}, x, y)
    for distortion_only, (ex, ey) in ((0, (rx, ry)), (1, (rx - ax, ry - ay))):
        sx = np.full(shape, np.nan)
        sy = np.full(shape, np.nan)
        grid, block = _kernels.launch_geometry(shape[1], shape[0])
        lib.ga_launch_surface_eval(
            grid[0],
            3,
            block[0],
            block[1],
            params.ctypes.data,
            x0,
            x1,
            y0,
            y1,
            distortion_only,
            sx.ctypes.data,
            sy.ctypes.data,
        )
        np.testing.assert_allclose(sx, ex, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(sy, ey, rtol=1e-12, atol=1e-9)


# --------------------------------------------------------------------------- loader


WARP_SIG = (
    "ptr",
    np.int64,
    np.int64,
    "ptr",
    "ptr",
    "ptr",
    "ptr",
    np.int64,
    np.int64,
    np.int64,
    np.float64,
)
SURF_SIG = ("ptr", np.int64, np.int64, np.int64, np.int64, np.int32, "ptr", "ptr")


def make_fake_cupy(lib) -> types.ModuleType:
    """A NumPy stand-in for CuPy whose kernels run the host emulation of the real ones."""
    fake = types.ModuleType("fake_cupy")
    for name in (
        "empty",
        "asarray",
        "ascontiguousarray",
        "float32",
        "float64",
        "bool_",
        "uint8",
        "ndarray",
    ):
        setattr(fake, name, getattr(np, name))
    fake.compiled = []

    def as_arg(value, kind):
        if kind == "ptr":
            if value is None:
                return None
            assert isinstance(value, np.ndarray) and value.flags.c_contiguous
            return value.ctypes.data
        assert type(value) is kind, f"kernel argument {value!r} is not {kind}"
        return value.item()

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args):
            assert len(grid) == 3 and len(block) == 3 and grid[2] == 1 and block[2] == 1
            assert 0 < grid[1] <= 65535
            if self.name.startswith("gpualign_warp_fused_o"):
                assert len(args) == len(WARP_SIG)
                src, params, out, fp = args[0], args[3], args[4], args[5]
                assert src.dtype == np.float32 and params.dtype == np.float64
                assert out.dtype == np.float32 and fp.itemsize == 1
                conv = [as_arg(a, k) for a, k in zip(args, WARP_SIG, strict=True)]
                lib.ga_launch_warp_fused(
                    int(self.name[-1]), grid[0], grid[1], block[0], block[1], *conv
                )
            elif self.name == "gpualign_surface_eval":
                assert len(args) == len(SURF_SIG)
                conv = [as_arg(a, k) for a, k in zip(args, SURF_SIG, strict=True)]
                lib.ga_launch_surface_eval(grid[0], grid[1], block[0], block[1], *conv)
            else:  # pragma: no cover
                raise AssertionError(f"unknown kernel {self.name}")

    class RawModule:
        def __init__(self, code, options=()):
            assert '#include "gpualign_warp.cuh"' not in code
            assert "GPUALIGN_WARP_CUH" in code
            assert "-std=c++17" in options
            fake.compiled.append(options)

        def get_function(self, name):
            assert name in self_names
            return Kernel(name)

    self_names = {f"gpualign_warp_fused_o{k}" for k in ORDERS} | {"gpualign_surface_eval"}
    fake.RawModule = RawModule
    fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))
    return fake


@pytest.fixture
def fake_cp(lib):
    return make_fake_cupy(lib)


def test_kernel_source_dir_and_inlined_source():
    d = _kernels.kernel_source_dir()
    assert (d / "warp_fused.cu").is_file() and (d / "gpualign_warp.cuh").is_file()
    code = _kernels.kernel_source()
    assert '#include "gpualign_warp.cuh"' not in code
    assert "GPUALIGN_WARP_CUH" in code
    for k in ORDERS:
        assert f"GPUALIGN_WARP_ENTRY({k})" in code
    assert _kernels.compile_options() == ("-std=c++17", f"-I{d}")


@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_fused_warp_through_loader(fake_cp, order):
    rng = np.random.default_rng(90 + order)
    src = rng.gamma(2.0, 30.0, size=(29, 35)).astype(np.float32)
    out_shape = (33, 38)
    t = random_transform(rng, 4, out_shape, clip=1.0)
    pre, ref, inside = ref_warp(src, t, out_shape, order, 0.0)
    full = np.full(out_shape, np.nan, dtype=np.float32)
    fpf = np.zeros(out_shape, dtype=np.bool_)
    for r0, r1 in ((0, 7), (7, 8), (8, 8), (8, 33)):  # row tiles, incl. an empty one
        o, f = _kernels.fused_warp(
            fake_cp, pre, t, out_shape, r0, r1, order, 0.0, out=full[r0:r1], footprint=fpf[r0:r1]
        )
        assert o.base is full or r0 == r1
    np.testing.assert_array_equal(fpf, inside)
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-5)
    # allocated outputs, float64 input converted, jacobian requested
    jac = np.empty((33, 38), dtype=np.float32)
    o, f = _kernels.fused_warp(
        fake_cp, pre.astype(np.float64), t, out_shape, 0, 33, order, 0.0, jacobian=jac
    )
    assert o.dtype == np.float32 and f.dtype == np.bool_
    np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(f, inside)
    assert np.all(np.isfinite(jac))


def test_fused_warp_memoizes_module_per_device(fake_cp):
    _kernels._raw_module.cache_clear()
    src = np.ones((4, 4), np.float32)
    t = random_transform(np.random.default_rng(0), 0, (4, 4))
    for _ in range(3):
        _kernels.fused_warp(fake_cp, src, t, (4, 4), 0, 4, 1, 0.0)
    assert len(fake_cp.compiled) == 1
    fake_cp.cuda.Device = lambda: types.SimpleNamespace(id=1)
    _kernels.fused_warp(fake_cp, src, t, (4, 4), 0, 4, 1, 0.0)
    assert len(fake_cp.compiled) == 2
    _kernels._raw_module.cache_clear()


def test_fused_warp_validates_arguments(fake_cp):
    src = np.ones((4, 4), np.float32)
    t = random_transform(np.random.default_rng(0), 0, (4, 4))
    with pytest.raises(ValueError, match="order"):
        _kernels.fused_warp(fake_cp, src, t, (4, 4), 0, 4, 6, 0.0)
    with pytest.raises(ValueError, match="row range"):
        _kernels.fused_warp(fake_cp, src, t, (4, 4), 2, 5, 1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        _kernels.fused_warp(fake_cp, src, t, (4, 4), 0, 4, 1, 0.0, out=np.empty((3, 4), "f4"))
    with pytest.raises(ValueError, match="dtype"):
        _kernels.fused_warp(fake_cp, src, t, (4, 4), 0, 4, 1, 0.0, out=np.empty((4, 4)))
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.fused_warp(
            fake_cp, src, t, (4, 8), 0, 4, 1, 0.0, out=np.empty((4, 16), "f4")[:, ::2]
        )
    with pytest.raises(ValueError, match="2-D"):
        _kernels.fused_warp(fake_cp, src[0], t, (4, 4), 0, 4, 1, 0.0)


def test_surface_eval_through_loader(fake_cp):
    rng = np.random.default_rng(12)
    t = random_transform(rng, 5, (50, 60), clip=0.6)
    sx, sy = _kernels.surface_eval(fake_cp, t, 4, 57, 2, 48)
    y, x = np.mgrid[2:48, 4:57].astype(np.float64)
    rx, ry = ref_transform(t, x, y)
    np.testing.assert_allclose(sx, rx, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sy, ry, rtol=1e-12, atol=1e-9)


def test_loader_does_not_import_cupy():
    import subprocess as sp
    import sys

    code = (
        "import sys, gpualign.backend._kernels as k; k.kernel_source(); "
        "assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    res = sp.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- lead's modules


def _lead_transform(t: dict):
    from gpualign.transform import Transform

    return Transform(
        matrix=np.asarray(t["matrix"]),
        coeffs=np.asarray(t["coeffs"]),
        norm=tuple(t["norm"]),
        clip=tuple(t["clip"]),
    )


@pytest.mark.parametrize("degree", [0, 3, 6])
def test_surface_eval_matches_evaluate_grid(fake_cp, degree):
    rng = np.random.default_rng(200 + degree)
    tr = _lead_transform(random_transform(rng, degree, (70, 90), clip=0.8))
    ex, ey = tr.evaluate_grid(np, 5, 83, 3, 66)
    sx, sy = _kernels.surface_eval(fake_cp, tr, 5, 83, 3, 66)
    np.testing.assert_allclose(sx, ex, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sy, ey, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("order", ORDERS)
def test_fused_warp_matches_gpualign_warp(fake_cp, order):
    import gpualign.warp._resample as warp_mod
    from gpualign.backend import numpy_backend

    rng = np.random.default_rng(300 + order)
    src = rng.gamma(2.0, 40.0, size=(45, 52)).astype(np.float32)
    out_shape = (48, 50)
    tr = _lead_transform(random_transform(rng, 4, out_shape, clip=1.0))
    backend = numpy_backend()
    ref = warp_mod.warp(src, tr, out_shape, backend=backend, order=order, cval=np.nan, threads=1)
    pre = warp_mod.prefilter(backend, src, order)
    out, foot = _kernels.fused_warp(fake_cp, pre, tr, out_shape, 0, out_shape[0], order, np.nan)
    np.testing.assert_array_equal(foot, ref.footprint)
    assert ref.footprint.any() and not ref.footprint.all()
    np.testing.assert_allclose(out, ref.data, rtol=1e-5, atol=1e-5, equal_nan=True)
