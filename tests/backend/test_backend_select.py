"""Choosing the backend: one log line saying which and why, clean errors, ``gpualign info``.

CuPy is absent on the test machines; the strict stand-in (``strict_cupy``) plays an
installed CuPy with one device, with none (``device_count=0``) or with a broken driver
(``fail=...``), and a patched import hook plays a machine without CuPy.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import pytest
import strict_cupy
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
import gpualign.backend as backend_module
from gpualign.cli import app


@pytest.fixture
def cp(monkeypatch):
    return strict_cupy.install(monkeypatch)


def _missing():
    raise ModuleNotFoundError("No module named 'cupy'")


@pytest.fixture
def no_cupy(monkeypatch):
    """A machine where ``import cupy`` fails."""
    monkeypatch.setattr(backend_module, "_import_cupy", _missing)


@pytest.fixture(autouse=True)
def propagating_logger(restore_gpualign_logger):
    """caplog sees gpualign's records even after a CLI test configured the logger."""
    restore_gpualign_logger.handlers[:] = []
    restore_gpualign_logger.propagate = True


def _auto(caplog) -> tuple[gpualign.Backend, str]:
    """get_backend("auto") and its single log line."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="gpualign"):
        backend = gpualign.get_backend("auto")
    lines = [r.getMessage() for r in caplog.records if r.name == "gpualign"]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    assert caplog.records[0].levelno == logging.INFO
    return backend, lines[0]


def test_auto_uses_the_stand_in_gpu(cp, caplog):
    backend, line = _auto(caplog)
    assert backend.name == "cupy" and backend.xp is cp and backend.is_gpu
    assert line.startswith("backend: cupy")
    assert "strict-cupy CPU stand-in" in line and "16.0 GiB" in line  # which device
    assert "CuPy 14.2.0 with a CUDA device" in line  # why


def test_auto_falls_back_without_a_visible_device(cp, caplog):
    with cp.configure(device_count=0):
        backend, line = _auto(caplog)
    assert backend.name == "numpy" and backend.xp is np and not backend.is_gpu
    assert line == ("backend: numpy (CuPy not used: CuPy is installed but no CUDA device "
                    "is visible)")


def test_auto_falls_back_with_a_broken_driver(cp, caplog):
    with cp.configure(fail="cudaErrorInsufficientDriver: driver too old"):
        backend, line = _auto(caplog)
    assert backend.name == "numpy"
    assert line.startswith("backend: numpy (CuPy not used: CuPy is installed but no CUDA "
                           "device answers")
    assert "driver too old" in line


def test_auto_falls_back_without_cupy(no_cupy, caplog):
    backend, line = _auto(caplog)
    assert backend.name == "numpy"
    assert line == ("backend: numpy (CuPy not used: CuPy cannot be imported "
                    "(ModuleNotFoundError: No module named 'cupy'))")


def test_auto_on_this_machine_says_why(caplog):
    """Unpatched: whatever this machine has, the line names the backend and a reason."""
    backend, line = _auto(caplog)
    assert line.startswith(f"backend: {backend.name}")
    if backend.name == "numpy":
        assert "CuPy not used: " in line


@pytest.mark.parametrize("situation", ["no cupy", "no device", "broken driver"])
def test_get_backend_cupy_raises_backend_unavailable(situation, monkeypatch):
    ctx = contextlib.nullcontext()
    if situation == "no cupy":
        monkeypatch.setattr(backend_module, "_import_cupy", _missing)
    else:
        cp = strict_cupy.install(monkeypatch)
        ctx = cp.configure(**({"device_count": 0} if situation == "no device"
                              else {"fail": "broken"}))
    with ctx:
        with pytest.raises(gpualign.BackendUnavailable) as info:
            gpualign.get_backend("cupy")
    assert info.value.hint and "--backend numpy" in info.value.hint


@pytest.fixture(scope="module")
def fits_pair(tmp_path_factory, request):
    make_pair = request.getfixturevalue("make_pair")
    pair = make_pair((384, 384), shift=(4.2, -3.1), rotation_deg=12.0, n_stars=500, seed=2)
    d = tmp_path_factory.mktemp("backend_select")
    fits.writeto(d / "s.fits", pair.source)
    fits.writeto(d / "t.fits", pair.template)
    return pair, d / "s.fits", d / "t.fits"


@pytest.mark.parametrize("situation", ["no cupy", "no device"])
def test_cli_backend_cupy_without_gpu_exits_2(situation, fits_pair, tmp_path, monkeypatch,
                                              restore_gpualign_logger):
    if situation == "no cupy":
        monkeypatch.setattr(backend_module, "_import_cupy", _missing)
        reason = "CuPy cannot be imported"
    else:
        strict_cupy.install(monkeypatch)
        monkeypatch.setattr(strict_cupy._cuda.STATE, "device_count", 0)
        reason = "no CUDA device is visible"
    _, src, tmpl = fits_pair
    out = tmp_path / "out"
    out.mkdir()
    res = CliRunner().invoke(app, ["align", str(src), "-t", str(tmpl), "-o",
                                   str(out / "a.fits"), "--backend", "cupy"])
    assert res.exit_code == 2, res.output
    text = (res.stdout + res.stderr).strip()
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) <= 2, lines  # the error, and at most its hint
    assert reason in lines[0]
    assert os.listdir(out) == []  # nothing written


def test_cli_backend_cupy_with_the_stand_in_works(cp, fits_pair, tmp_path,
                                                  restore_gpualign_logger):
    """The same command line succeeds on a (stand-in) GPU, with the right pixels."""
    pair, src, tmpl = fits_pair
    out = tmp_path / "a.fits"
    res = CliRunner().invoke(app, ["align", str(src), "-t", str(tmpl), "-o", str(out),
                                   "--backend", "cupy"])
    assert res.exit_code == 0, res.output
    assert fits.getheader(out)["GA_BACK"] == "cupy"
    ref = gpualign.align(pair.source, pair.template, backend="numpy")
    np.testing.assert_array_equal(fits.getdata(out), ref.data)


def _info() -> dict[str, str]:
    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    rows = [ln.split(":", 1) for ln in res.stdout.splitlines() if ":" in ln]
    return {k.strip(): v.strip() for k, v in rows}


def test_info_with_the_stand_in_gpu(cp, restore_gpualign_logger):
    info = _info()
    assert info["backend"] == "cupy"
    assert info["cupy"] == "14.2.0"
    assert info["cuda_runtime"].startswith("12.9")
    assert info["cuda_driver"].startswith("12.9")
    assert "strict-cupy CPU stand-in" in info["device"]  # device name
    assert "16.0 GiB" in info["device"] and "15.0 GiB free" in info["device"]  # memory
    assert info["numpy"] == np.__version__


def test_info_when_the_device_is_missing(cp, restore_gpualign_logger):
    with cp.configure(device_count=0):
        info = _info()
    assert info["backend"] == "numpy"
    assert "no CUDA device is visible" in info["reason"]
    assert info["device"] == "cpu"
    assert info["cupy"] == "14.2.0"


def test_info_without_cupy(no_cupy, restore_gpualign_logger):
    info = _info()
    assert info["backend"] == "numpy"
    assert info["cupy"] == "not installed"
    assert "CuPy cannot be imported" in info["reason"]
    assert "cuda_runtime" not in info


def test_free_memory_counts_the_pool_and_its_limit(cp, monkeypatch):
    """Tiles and chunks are sized from what allocations can really get."""
    backend = gpualign.get_backend("cupy")
    with cp.configure(free_memory=3 * 2**30):
        assert backend.free_memory() == 3 * 2**30
        pool = cp.get_default_memory_pool()
        # Blocks the pool caches count as free (the driver counts them as used) ...
        monkeypatch.setattr(type(pool), "free_bytes", lambda self: 2**30)
        monkeypatch.setattr(type(pool), "used_bytes", lambda self: 5 * 2**29)
        assert backend.free_memory() == 4 * 2**30
        # ... and a pool limit caps the answer at what is left under it.
        monkeypatch.setattr(type(pool), "get_limit", lambda self: 3 * 2**30)
        assert backend.free_memory() == 3 * 2**30 - 5 * 2**29
