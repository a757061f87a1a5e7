"""Device memory on the stand-in: what is allocated, syncs, and running out (issue 13, 2-3).

The stand-in records every device allocation (``strict_cupy.allocations``: dtype,
size, caller; views are not allocations) and its pool honours the device's free
memory, raising CuPy's ``OutOfMemoryError`` past it. So these tests measure, on the
real CuPy path of the pipeline:

* which device arrays are float64, and why each may be (:data:`FLOAT64_ALLOWED`),
  against budgets of float64 bytes;
* the scalar synchronisations (``float()``, ``int()``, ``bool()``, ``.item()``,
  ``.tolist()``) per frame and per warp tile;
* that warp tiles sized from the free memory fit in it, and that a device that runs
  out mid-warp costs smaller tiles or one line of error with a hint, never a crash.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import strict_cupy
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign.backend import DeviceOutOfMemory, is_out_of_memory
from gpualign.cli import app
from gpualign.match import _quad_match
from gpualign.match._neighbours import chunk_elements_for
from gpualign.warp import _resample as _warp

REPO = Path(__file__).resolve().parents[2]
MiB = 2**20

#: Files whose device arrays may be float64, and why. Everything else on the device
#: is float32 (the image, its spline coefficients, sampled values), bool/uint8 (masks,
#: footprints, packed bits) or integer (indices).
FLOAT64_ALLOWED = {
    "gpualign/match/_neighbours.py":
        "star positions, quad hash codes and their distance matrices: the device must "
        "find exactly the KD-tree's (float64) neighbours, at any position of a 30000 px "
        "mosaic (float32 resolves 0.002 px there, and a pair at the match radius flips)",
    "gpualign/transform/_transform.py":
        "source positions [sy, sx] of output pixels, for the mask lookups and the cupyx "
        "path: 0.01 px in a 30000 px source needs float64",
    "gpualign/transform/_polynomial.py":
        "the distortion surfaces' Vandermonde factors: one row or column of a tile each",
    "gpualign/warp/_sampler.py":
        "positions rounded to the nearest source pixel (exact at any size), one "
        "temporary per axis",
    "gpualign/backend/_kernels.py":
        "the fused kernel's parameter block (matrix and coefficients: 1152 bytes)",
}


@pytest.fixture
def cp(monkeypatch):
    cp = strict_cupy.install(monkeypatch)
    monkeypatch.setattr(_warp, "_FUSED_STATUS", {})
    # Earlier tests' garbage freed in the middle of a measurement would give the device
    # memory back and loosen the budgets under test: collect it first.
    gc.collect()
    return cp


@pytest.fixture
def gpu(cp) -> gpualign.Backend:
    return gpualign.get_backend("cupy")


@pytest.fixture(scope="module")
def frames(request):
    """The 512^2 distorted pair, with NaN regions and without, and a bitmask (cached)."""
    make_pair = request.getfixturevalue("make_pair")
    kw = dict(shift=(9.3, -5.7), rotation_deg=35.0, scale=1.03, corner_distortion_px=3.0,
              n_stars=900, seed=31)
    nan = make_pair((512, 512), nan_fraction=0.03, **kw)
    clean = make_pair((512, 512), **kw)
    rng = np.random.default_rng(5)
    mask = np.zeros((512, 512), np.uint16)
    mask[rng.random(mask.shape) < 0.002] |= 1
    mask[100:120, 300:340] |= 1 << 3
    return nan, clean, mask


@pytest.fixture(scope="module")
def transform(frames, solve_pair):
    return solve_pair(frames[0]).transform


def _measure(cp):
    """Start a measurement; returns the live bytes it starts from."""
    live = cp.allocations.live_bytes()
    cp.allocations.reset()
    return live


def _syncs(cp) -> int:
    return cp.transfers.count("d2h", via="scalar") + cp.transfers.count("d2h", via="tolist")


# ---- the pool ------------------------------------------------------------------------------


def test_the_pool_honours_free_memory(cp):
    pool = cp.get_default_memory_pool()
    with cp.configure(free_memory=1024):
        assert cp.cuda.Device().mem_info[0] == 1024
        with pytest.raises(cp.cuda.memory.OutOfMemoryError,
                           match=r"Out of memory allocating 800,000,512 bytes"):
            cp.empty(200_000_064, dtype=cp.float32)  # 800 MB (in 512-byte units): refused
        a = cp.zeros(100)  # 800 bytes take a 1024-byte block (512-byte units)
        assert cp.cuda.Device().mem_info[0] == 0
        with pytest.raises(MemoryError) as info:
            a + 1  # the result does not fit either
        assert is_out_of_memory(info.value) and not is_out_of_memory(MemoryError())
        view = a[10:20]  # a view is no allocation
        assert cp.cuda.Device().mem_info[0] == 0
        del a, view, info  # (the traceback held the operand)
        assert cp.cuda.Device().mem_info[0] == 1024  # freed blocks go back at once
    used = pool.used_bytes()
    pool.set_limit(size=used + 4096)
    try:
        b = cp.ones(512)  # 4096 bytes: exactly the limit
        with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="limit set to"):
            cp.ones(1)
        del b
    finally:
        pool.set_limit(size=0)
    assert cp.cuda.Device().mem_info[0] > 10 * 2**30


def test_allocations_are_recorded_with_dtype_size_and_caller(cp):
    _measure(cp)
    live64 = cp.allocations.live_bytes("float64")
    x = cp.asarray(np.zeros((64, 32), np.float32))
    y = x.astype(cp.float64)
    z = y[::2].T  # views: no allocation
    assert cp.allocations.count() == 2 and cp.allocations.count("float64") == 1
    assert cp.allocations.allocated_bytes("float64") == 64 * 32 * 8
    assert cp.allocations.peak_bytes("float32") == 64 * 32 * 4
    rec = cp.allocations.records[-1]
    assert (rec.dtype, rec.shape, rec.nbytes) == ("float64", (64, 32), 64 * 32 * 8)
    assert rec.where.startswith(__file__)
    del x, y, z
    assert cp.allocations.live_bytes("float64") == live64
    assert "float64 at" in cp.allocations.summary("float64")


# ---- float64 on the device -----------------------------------------------------------------


def test_float64_device_arrays_are_named_and_budgeted(gpu, cp, frames, monkeypatch):
    """One align (NaN regions, a bitmask) on the device: every float64 allocation comes
    from a place :data:`FLOAT64_ALLOWED` names; the matching's stay within its
    distance-chunk budget, the warp's within 24 bytes per output pixel (positions
    for the mask lookups, one rounding temporary); without invalid pixels or a mask
    the warp holds none but the kernel's parameter block."""
    nan, clean, mask = frames
    # The template's quad index is kept between frames, with the chunk budget of the
    # device's free memory when it was made: make it afresh on this small device.
    monkeypatch.setattr(_quad_match, "_TEMPLATE_QUADS", OrderedDict())
    with cp.configure(free_memory=64 * MiB):  # a small device: 2^20 distances per chunk
        chunk = chunk_elements_for(gpu)
        assert chunk == 2**20
        f64 = cp.allocations.live_bytes("float64")  # (earlier tests' cached arrays)
        live = _measure(cp)
        sol = gpualign.find_transform(nan.source, nan.template, backend=gpu)
        match_f64 = cp.allocations.peak_bytes("float64") - f64
        assert cp.allocations.peak_bytes() - live <= 64 * MiB
        records = cp.allocations.records
    # Two float64 (rows x band) arrays per chunk: squared distances and a difference.
    assert match_f64 <= 16 * chunk + 1 * MiB, cp.allocations.summary("float64")
    f64 = cp.allocations.live_bytes("float64")
    _measure(cp)
    got = gpualign.apply_transform(sol, nan.source, (512, 512), backend=gpu, mask=mask)
    assert got.footprint.any()
    warp_f64 = cp.allocations.peak_bytes("float64") - f64
    records += cp.allocations.records
    # (+ the surfaces' row and column factors and the parameters: O(rows + columns))
    assert warp_f64 <= 24 * 512 * 512 + 256 * 1024, cp.allocations.summary("float64")
    by_file: dict[str, int] = {}
    for r in records:
        if r.dtype == "float64":
            path = Path(r.where.rsplit(":", 1)[0]).resolve()
            rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
            assert rel in FLOAT64_ALLOWED, f"float64 device array from {r.where}: {r}"
            by_file[rel] = by_file.get(rel, 0) + r.nbytes
    assert set(by_file) >= {"gpualign/match/_neighbours.py", "gpualign/backend/_kernels.py"}
    # The images themselves are float32 on the device, nothing image-sized is float64
    # but the positions (2, rows, cols) and their rounding.
    big64 = {r.where for r in records if r.dtype == "float64" and r.nbytes >= 512 * 512 * 8}
    assert all("_transform.py" in w or "_sampler.py" in w or "_neighbours.py" in w
               for w in big64), big64
    # A clean frame without a mask: the fused kernel needs no positions at all.
    f64 = cp.allocations.live_bytes("float64")
    _measure(cp)
    gpualign.apply_transform(sol, clean.source, (512, 512), backend=gpu)
    assert cp.allocations.peak_bytes("float64") - f64 <= 2048, \
        cp.allocations.summary("float64")
    assert cp.allocations.allocated_bytes("float64") <= 2048
    assert cp.allocations.allocated_bytes("float32") >= 2 * 512 * 512 * 4  # image, output


def test_scalar_syncs_per_frame_are_bounded(gpu, cp, frames, transform):
    """Synchronising reads of device scalars: a handful per frame, not per pixel, star or
    tile. A clean frame: one (is any pixel invalid?). NaN regions: a few per region of
    them (measured 17 for this frame), whatever the number of warp tiles."""
    nan, clean, mask = frames
    cp.transfers.reset()
    gpualign.align(clean.source, clean.template, backend=gpu)
    assert _syncs(cp) <= 2, cp.transfers.summary()
    cp.transfers.reset()
    gpualign.align(nan.source, nan.template, backend=gpu, source_mask=mask)
    per_frame = _syncs(cp)
    assert per_frame <= 24, cp.transfers.summary()
    for tile_rows in (512, 32):
        cp.transfers.reset()
        _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask,
                   tile_rows=tile_rows)
        assert _syncs(cp) <= per_frame, (tile_rows, cp.transfers.summary())


# ---- tiles sized from free memory -----------------------------------------------------------


class TileMeter:
    """Wraps the device tile loop: rows and peak device bytes of every tile."""

    def __init__(self, cp, monkeypatch) -> None:
        self.cp, self.tiles = cp, []
        original = _warp._run_device_tiles

        def run(backend, do_tile, ny, rows):
            def measured(y0, y1):
                live = _measure(cp)
                do_tile(y0, y1)
                self.tiles.append((y0, y1, cp.allocations.peak_bytes() - live))
            return original(backend, measured, ny, rows)

        monkeypatch.setattr(_warp, "_run_device_tiles", run)


CASES = {  # name: (frame, mask, method, streamed)
    "fused-clean": (1, False, "fused", False),
    "fused-nan-mask": (0, True, "fused", False),
    "fused-nan-streamed": (0, False, "fused", True),
    "cupyx-clean": (1, False, "ndimage", False),
    "cupyx-nan-mask-streamed": (0, True, "ndimage", True),
}


@pytest.mark.parametrize("case", CASES)
def test_tiles_sized_from_free_memory_fit(gpu, cp, frames, transform, monkeypatch, case):
    """With the device's free memory just above what the source and the output hold,
    the warp cuts tiles whose temporaries stay within
    :func:`~gpualign.warp._resample.tile_bytes_per_pixel` (measured per tile, plus a
    fixed 64 KiB of parameters and pool rounding) and the whole run within the free
    memory, with no retry; the pixels are those of an unconstrained run."""
    index, with_mask, method, streamed = CASES[case]
    pair, mask = frames[index], frames[2] if CASES[case][1] else None
    chunks: dict[tuple[int, int], tuple] = {}

    def sink(y0, y1, data, foot, m):
        chunks[(y0, y1)] = (data, foot, m)

    kw = dict(backend=gpu, mask=mask, method=method, sink=sink if streamed else None)
    live = _measure(cp)
    ref = _warp.warp(pair.source, transform, (512, 512), tile_rows=1, **kw)
    resident = cp.allocations.peak_bytes() - live  # with one-row tiles: the floor
    ref_chunks = dict(chunks)
    chunks.clear()
    meter = TileMeter(cp, monkeypatch)
    free = resident + 1 * MiB
    with cp.configure(free_memory=free):
        live = cp.allocations.live_bytes()
        res = _warp.warp(pair.source, transform, (512, 512), **kw)
    tiles = meter.tiles
    if case == "fused-clean":  # the kernel writes the output rows: no temporaries,
        assert [(a, b) for a, b, _ in tiles] == [(0, 512)]  # so one tile
    else:
        assert len(tiles) > 1, tiles  # the free memory, not the tile cap, sized them
    assert len({b - a for a, b, _ in tiles[:-1]}) <= 1  # no tile was retried smaller
    per_pixel = _warp.tile_bytes_per_pixel(
        fused=method == "fused", has_bad=index == 0, n_planes=2 if with_mask else 0,
        mask_itemsize=2 if with_mask else 0, streamed=streamed)
    for a, b, peak in tiles:
        assert peak <= per_pixel * (b - a) * 512 + 64 * 1024, (a, b, peak, per_pixel)
    if streamed:
        assert sorted(chunks) == [(a, b) for a, b, _ in tiles]
        got = np.concatenate([chunks[k][0] for k in sorted(chunks)])
        want = np.concatenate([ref_chunks[k][0] for k in sorted(ref_chunks)])
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_equal(res.data, ref.data)
        np.testing.assert_array_equal(res.footprint, ref.footprint)
    assert cp.allocations.peak_bytes() - live <= free


def test_out_of_memory_mid_warp_retries_with_smaller_tiles(gpu, cp, frames, transform,
                                                           monkeypatch, caplog,
                                                           restore_gpualign_logger):
    """Tiles too big for the device (the estimate fell short, or another process took
    memory): the tile that fails is retried in halves, and so are the next ones; the
    pixels are unchanged, the source and output crossed the bus once."""
    restore_gpualign_logger.handlers[:] = []
    restore_gpualign_logger.propagate = True
    nan, _, mask = frames
    ref = _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask)
    live = _measure(cp)
    _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask, tile_rows=1)
    resident = cp.allocations.peak_bytes() - live
    meter = TileMeter(cp, monkeypatch)
    cp.transfers.reset()
    with cp.configure(free_memory=resident + 1 * MiB), caplog.at_level(logging.INFO,
                                                                        "gpualign"):
        got = _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask,
                         tile_rows=512)  # one tile of 512 rows: ~10 MB of temporaries
    sizes = [b - a for a, b, _ in meter.tiles]
    assert sizes[0] < 512 and sum(sizes) == 512, sizes
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and "out of device memory" in retries[0]
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_array_equal(got.footprint, ref.footprint)
    np.testing.assert_array_equal(got.mask, ref.mask)
    floor = 512 * 512
    assert sorted((t.direction, t.dtype) for t in cp.transfers.select(min_bytes=floor)) == \
        sorted([("h2d", "float32"), ("h2d", "uint16"), ("d2h", "float32"), ("d2h", "bool"),
                ("d2h", "uint16")])


def test_out_of_memory_no_tile_survives_is_one_line_with_a_hint(gpu, cp, frames, transform):
    """Not even one output row fits beside the source and output, or the source does not
    fit at all: a DeviceOutOfMemory (a GpuAlignError) saying so in one line, with a hint."""
    nan, _, mask = frames
    live = _measure(cp)
    _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask, tile_rows=1)
    resident = cp.allocations.peak_bytes() - live
    # The output allocated, then one row's temporaries (512 px x ~40 B) do not fit.
    for free in (resident - 12 * 1024, 256 * 1024):
        with cp.configure(free_memory=free):
            with pytest.raises(DeviceOutOfMemory) as info:
                _warp.warp(nan.source, transform, (512, 512), backend=gpu, mask=mask)
        err = info.value
        assert isinstance(err, gpualign.GpuAlignError)
        text = str(err)
        assert "\n" not in text and "the GPU ran out of memory" in text
        assert "(hint: free GPU memory" in text and "--backend numpy" in text
        assert is_out_of_memory(err.__cause__)


def test_cli_out_of_memory_is_one_line(cp, frames, transform, tmp_path,
                                       restore_gpualign_logger):
    """The CLI on a device too small for the warp: exit 1, one line on stderr, no output."""
    nan, _, _ = frames
    fits.writeto(tmp_path / "s.fits", nan.source)
    sol = gpualign.find_transform(nan.source, nan.template, backend="numpy")
    sol.save(tmp_path / "t.json")
    out = tmp_path / "out.fits"
    with cp.configure(free_memory=512 * 1024):
        res = CliRunner().invoke(app, ["apply", str(tmp_path / "t.json"),
                                       str(tmp_path / "s.fits"), "-o", str(out),
                                       "--output-shape", "512", "512", "--backend", "cupy"])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpualign: error: the GPU ran out of "
                                                   "memory"), res.stderr
    assert "(hint: " in lines[0]
    assert not out.exists()
