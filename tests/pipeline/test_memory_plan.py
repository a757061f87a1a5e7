"""The warp's memory plan: checked before anything is allocated, with the sizes in one
line; an output file is streamed tile by tile when only the tiled plan fits; an
explicit ``max_memory`` (``--max-memory``) sets the budget either way."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
import gpualign.pipeline._runner as runner
from gpualign._system import available_memory, virtual_memory_size
from gpualign.cli import app
from gpualign.pipeline._memory import GIB, warp_memory

SHAPE = (200, 200)


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    pair = make_pair(SHAPE, shift=(2.5, -1.5), n_stars=180, seed=19)
    d = tmp_path_factory.mktemp("memplan")
    fits.PrimaryHDU(pair.source).writeto(d / "s.fits")
    fits.PrimaryHDU(pair.template).writeto(d / "t.fits")
    return d, pair


def test_plan_counts_every_output_plane():
    m = warp_memory((1000, 2000), dtype=np.float32, resident=123, threads=2,
                    mask_itemsize=2, mask_planes=3, weight=True)
    assert m.resident == 123
    assert m.output == 1000 * 2000 * (4 + 1 + 2 + 4)  # data, footprint, mask, weight
    assert m.tiles == 2 * (1 << 20) * (24 + 8 + 3 * 3 + 16)
    assert m.new(streamed=True) == m.tiles < m.new(streamed=False)
    small = warp_memory((10, 10), dtype=np.float64, resident=0, threads=8)
    assert small.tiles == 8 * 100 * (24 + 16)  # a tile is never bigger than the output


def test_available_memory_respects_an_address_space_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    free = available_memory()
    vm = virtual_memory_size()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), hard))
    try:
        assert available_memory() <= min(free, 1 << 30)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_max_memory_refuses_a_run_whose_output_does_not_fit(files):
    d, pair = files
    with pytest.raises(gpualign.InputError, match=r"the 200x200 output needs .* GiB, more than "
                       r"the .* GiB allowed by max_memory"):
        gpualign.align(pair.source, pair.template, backend="numpy", max_memory=0.0003)


def test_the_source_is_checked_before_it_is_read(files, monkeypatch):
    d, pair = files
    real = runner.load_image

    def guarded(obj, ext=None, *, name="image"):
        assert name != "source", "the source was read"
        return real(obj, ext, name=name)

    monkeypatch.setattr(runner, "load_image", guarded)
    # 200x200 float32 read into a float32 copy: 320 kB, more than 0.0002 GiB (215 kB)
    with pytest.raises(gpualign.InputError, match=r"reading the 200x200 source needs .* GiB, "
                       r"more than the .* GiB allowed by max_memory"):
        gpualign.align(d / "s.fits", pair.template, backend="numpy", max_memory=0.0002)


def test_in_memory_default_says_how_to_allow_more(files):
    d, pair = files
    with pytest.raises(gpualign.InputError) as info:
        gpualign.align(pair.source, pair.template, backend="numpy",
                       output_shape=(300_000, 300_000))
    assert "more than the" in str(info.value) and "GiB available" in str(info.value)
    assert "max_memory" in info.value.hint and "streamed" in info.value.hint


def test_a_generous_max_memory_runs(files):
    d, pair = files
    res = gpualign.align(pair.source, pair.template, backend="numpy", max_memory=2.0)
    ref = gpualign.align(pair.source, pair.template, backend="numpy")
    np.testing.assert_array_equal(res.data, ref.data)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "2G", True])
def test_bad_max_memory(files, bad):
    _, pair = files
    with pytest.raises(gpualign.InputError, match="max_memory must be a positive number"):
        gpualign.align(pair.source, pair.template, backend="numpy", max_memory=bad)


def test_a_file_output_is_streamed_when_only_the_tiled_plan_fits(files, tmp_path,
                                                                 monkeypatch,
                                                                 restore_gpualign_logger):
    """Below the streaming size, but the in-memory output exceeds the budget: streamed,
    and the file is the one the in-memory run writes, byte for byte."""
    d, _ = files
    args = ["align", str(d / "s.fits"), "-t", str(d / "t.fits"), "--backend", "numpy",
            "--threads", "1"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "mem.fits")])
    assert res.exit_code == 0, res.output
    calls = []
    real = runner.warp_to_fits
    monkeypatch.setattr(runner, "warp_to_fits", lambda *a, **k: calls.append(1) or real(*a, **k))
    resident = SHAPE[0] * SHAPE[1] * 4  # the source's float32 pixels
    tiles = SHAPE[0] * SHAPE[1] * (24 + 8)
    budget = (resident + tiles + SHAPE[0] * SHAPE[1] * 2) / GIB  # less than data+footprint
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "tiled.fits"),
                                   "--max-memory", f"{budget:.9f}"])
    assert res.exit_code == 0, res.output
    assert calls == [1]
    with fits.open(tmp_path / "mem.fits") as a, fits.open(tmp_path / "tiled.fits") as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b, strict=True):
            np.testing.assert_array_equal(ha.data, hb.data)
    # and with less than the tiles need, refused in one line, nothing written
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "none.fits"),
                                   "--max-memory", f"{resident / GIB:.9f}"])
    assert res.exit_code == 2
    assert "allowed by max_memory" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "none.fits").exists()
