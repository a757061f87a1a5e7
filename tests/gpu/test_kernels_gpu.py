"""The fused CUDA kernels on a real device against the NumPy reference path.

Marked ``gpu``; skipped without CuPy or a CUDA device. These are the only tests that
run the kernels on a GPU (the host tests emulate them on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy", reason="CuPy is not installed")

from gpualign.backend import _kernels, numpy_backend  # noqa: E402
from gpualign.transform._transform import Transform  # noqa: E402
from gpualign.warp._resample import prefilter, warp  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _device():
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as exc:  # pragma: no cover - no driver
        pytest.skip(f"no CUDA device: {exc}")
    if n < 1:  # pragma: no cover
        pytest.skip("no CUDA device")


def _transform(rng, shape, degree=4, clip=1.0) -> Transform:
    h, w = shape
    ang, s = rng.uniform(-0.2, 0.2), rng.uniform(0.9, 1.1)
    m = np.array(
        [
            [s * np.cos(ang), -s * np.sin(ang), rng.uniform(-4, 4)],
            [s * np.sin(ang), s * np.cos(ang), rng.uniform(-4, 4)],
        ]
    )
    c = rng.normal(0.0, 1.5, size=(2, degree + 1, degree + 1))
    i, j = np.indices((degree + 1, degree + 1))
    c[:, (i + j < 2) | (i + j > degree)] = 0.0
    return Transform(
        matrix=m, coeffs=c, norm=(w / 2, h / 2, w / 2, h / 2), clip=(-clip, clip, -clip, clip)
    )


@pytest.mark.parametrize("order", range(6))
def test_fused_warp_matches_numpy_warp(order):
    rng = np.random.default_rng(order)
    src = rng.gamma(2.0, 40.0, size=(301, 257)).astype(np.float32)
    out_shape = (280, 290)
    tr = _transform(rng, out_shape)
    ref = warp(src, tr, out_shape, backend=numpy_backend(), order=order, cval=np.nan, threads=1)
    pre = prefilter(numpy_backend(), src, order)
    full = cp.full(out_shape, -1.0, dtype=cp.float32)
    foot = cp.zeros(out_shape, dtype=cp.bool_)
    for r0, r1 in ((0, 100), (100, 101), (101, 280)):
        _kernels.fused_warp(
            cp,
            cp.asarray(pre),
            tr,
            out_shape,
            r0,
            r1,
            order,
            np.nan,
            out=full[r0:r1],
            footprint=foot[r0:r1],
        )
    np.testing.assert_array_equal(cp.asnumpy(foot), ref.footprint)
    np.testing.assert_allclose(cp.asnumpy(full), ref.data, rtol=1e-5, atol=1e-4, equal_nan=True)


def test_row_striding_beyond_grid_limit():
    # 600000 rows > 65535 * 8: every thread loops over several rows
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3)).astype(np.float32)
    tr = Transform(matrix=np.array([[1.0, 0.0, 0.25], [0.0, 5e-5, 0.3]]))
    out_shape = (600_000, 2)
    out, foot = _kernels.fused_warp(cp, cp.asarray(src), tr, out_shape, 0, out_shape[0], 1, 0.0)
    ref = warp(src, tr, out_shape, backend=numpy_backend(), order=1, cval=0.0, threads=1)
    np.testing.assert_array_equal(cp.asnumpy(foot), ref.footprint)
    np.testing.assert_allclose(cp.asnumpy(out), ref.data, rtol=1e-5, atol=1e-5)


def test_surface_eval_matches_evaluate_grid():
    tr = _transform(np.random.default_rng(2), (500, 600), degree=7, clip=0.8)
    sx, sy = _kernels.surface_eval(cp, tr, 10, 590, 5, 480)
    ex, ey = tr.evaluate_grid(np, 10, 590, 5, 480)
    np.testing.assert_allclose(cp.asnumpy(sx), ex, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cp.asnumpy(sy), ey, rtol=1e-12, atol=1e-9)
