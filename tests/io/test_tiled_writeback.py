"""The streamed writer's early writeback: same file, no thread or descriptor left behind.

``TiledFitsWriter`` hands each written byte range to a background thread that starts
its write to disk (``sync_file_range`` on Linux) while the warp goes on; ``commit``
and ``abort`` stop that thread before the file descriptor is closed. It must change
nothing in the file, with or without the system call.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from astropy.io import fits

from gpualign.io import _tiled
from gpualign.io._tiled import TiledFitsWriter


def _writeback_threads():
    return [t for t in threading.enumerate() if t.name == "gpualign-writeback"]


def _write(path, data, foot, calls=None):
    with TiledFitsWriter(path, fits.Header({"OBJECT": "wb"}), data.shape, np.float32) as w:
        if calls is not None:
            assert _writeback_threads()  # running while the tiles are written
        for y0 in range(0, data.shape[0], 7):
            w.tile(y0, min(y0 + 7, data.shape[0]), data[y0:y0 + 7], foot[y0:y0 + 7], None)


def test_same_file_with_and_without_writeback(tmp_path, monkeypatch):
    rng = np.random.default_rng(8500)
    data = rng.normal(size=(50, 61)).astype(np.float32)
    foot = rng.random((50, 61)) > 0.3
    calls = []
    real = _tiled._sync_file_range()
    if sys.platform.startswith("linux"):
        assert real is not None

    def spy():
        if real is None:
            return None

        def fn(fd, pos, n, flags):
            calls.append((pos, n, flags))
            return real(fd, pos, n, flags)
        return fn

    monkeypatch.setattr(_tiled, "_sync_file_range", spy)
    _write(tmp_path / "on.fits", data, foot, calls)
    assert not _writeback_threads()
    if real is not None:
        # Every written range, data and footprint: 2 sections x 8 tiles.
        assert len(calls) == 16 and all(n > 0 and flags == 2 for _, n, flags in calls)
    monkeypatch.setattr(_tiled, "_sync_file_range", lambda: None)
    _write(tmp_path / "off.fits", data, foot)
    assert (tmp_path / "on.fits").read_bytes() == (tmp_path / "off.fits").read_bytes()
    with fits.open(tmp_path / "on.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, data)
        np.testing.assert_array_equal(hdul["FOOTPRINT"].data, foot.astype(np.uint8))


def test_abort_stops_the_thread_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(8600)
    data = rng.normal(size=(20, 30)).astype(np.float32)
    path = tmp_path / "out.fits"
    with pytest.raises(RuntimeError, match="stop"):
        with TiledFitsWriter(path, None, data.shape, np.float32) as w:
            w.write_rows("DATA", 0, data[:10])
            raise RuntimeError("stop")
    assert not _writeback_threads()
    assert w.fd is None and w.writeback is None
    assert list(tmp_path.iterdir()) == []
