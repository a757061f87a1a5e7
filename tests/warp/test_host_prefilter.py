"""The compiled prefilter's block paths (kernels/host_prefilter_simd.h) against SciPy, bit for bit.

Lines are filtered in blocks of 16, 8 and 4 vector lanes (8-lane blocks for lines long
enough that 16 would not stay in L2), and any 1-3 left over by the scalar path; rows
go through 4x4 transposes and columns are stored by the last pass. Every mix of those
must give ``spline_filter1d``'s float32 values exactly, bit patterns included, whatever
the number of threads and whether the CPU's vector path is on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from gpualign.backend import _host


def _lib_or_skip():
    if _host._load()[0] is None:
        pytest.skip(f"no host library: {_host.status()}")


def _reference(img, order):
    ref = ndi.spline_filter1d(img, order, axis=1, output=np.float32, mode="mirror")
    return ndi.spline_filter1d(ref, order, axis=0, output=np.float32, mode="mirror")


def _image(rng, shape):
    img = (rng.normal(size=shape) * 1000).astype(np.float32)
    img[0, -1] = -2.5e4  # ringing into the mirror sums at both ends
    img[-1, 0] = 3.0e4
    return img


@pytest.mark.parametrize("order", [2, 3, 5])
@pytest.mark.parametrize("shape", [(6300, 21), (21, 6300), (37, 23), (4, 4), (5, 17), (17, 3)])
def test_block_paths_equal_spline_filter1d(order, shape):
    """Long lines (8-lane blocks), 16/8/4-lane mixes with scalar leftovers, tiny blocks."""
    _lib_or_skip()
    rng = np.random.default_rng(7100 + order * 10 + shape[1])
    img = _image(rng, shape)
    ref = _reference(img, order)
    for threads in (1, 2):
        out = img.copy()
        assert _host.prefilter(out, order, threads)
        np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))


def test_non_finite_pixels_as_scipy():
    """A NaN or an infinity spreads through the image exactly as in SciPy's filter,
    down to the bit patterns of the NaNs."""
    _lib_or_skip()
    rng = np.random.default_rng(7200)
    for bad in (np.nan, np.inf, -np.inf):
        img = _image(rng, (40, 52))
        img[5, 7] = bad
        ref = _reference(img, 3)
        out = img.copy()
        assert _host.prefilter(out, 3, 2)
        np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
        assert not np.isfinite(ref).all()


def test_threads_split_the_image_without_changing_it():
    """Row and column blocks shared by 1, 2 or 5 threads: the same bits."""
    _lib_or_skip()
    rng = np.random.default_rng(7300)
    img = _image(rng, (333, 517))
    outs = []
    for threads in (1, 2, 5):
        out = img.copy()
        assert _host.prefilter(out, 4, threads)
        outs.append(out)
    np.testing.assert_array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    np.testing.assert_array_equal(outs[0].view(np.uint32), outs[2].view(np.uint32))
    np.testing.assert_array_equal(outs[0], _reference(img, 4))


def test_scalar_and_vector_paths_agree():
    """GA_HOST_SIMD=0 (scalar lanes only) and the vector blocks give the same bits."""
    _lib_or_skip()
    code = ("import numpy as np; from gpualign.backend import _host; "
            "rng = np.random.default_rng(7400); "
            "img = (rng.normal(size=(75, 66)) * 500).astype(np.float32); "
            "assert _host.prefilter(img, 5, 2); print(img.tobytes().hex())")
    runs = {}
    for flag in ("1", "0"):
        env = {**os.environ, "GA_HOST_SIMD": flag}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        runs[flag] = res.stdout.strip()
    assert runs["1"] == runs["0"]
    rng = np.random.default_rng(7400)
    img = (rng.normal(size=(75, 66)) * 500).astype(np.float32)
    assert bytes.fromhex(runs["0"]) == _reference(img, 5).tobytes()
