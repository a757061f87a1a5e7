"""``gpualign info``: one line per package with its version or "not installed" (issue 12).

gpualign, NumPy, SciPy, astropy, sep, CuPy with its CUDA runtime and device count (or
why CuPy cannot be used) and Dask (dask, distributed), after the backend ``auto``
would pick. CuPy is absent on the test machines: the strict stand-in plays one.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import scipy
import strict_cupy
from typer.testing import CliRunner

import gpualign
import gpualign.backend as backend_module
from gpualign.cli import app

PACKAGES = ["gpualign", "numpy", "scipy", "astropy", "sep", "cupy", "dask", "distributed"]


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture
def cp(monkeypatch):
    return strict_cupy.install(monkeypatch)


@pytest.fixture
def no_cupy(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'cupy'")

    monkeypatch.setattr(backend_module, "_import_cupy", missing)


def _info() -> dict[str, str]:
    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert res.stderr == ""
    rows = [ln.split(":", 1) for ln in res.stdout.splitlines()]
    assert all(len(r) == 2 for r in rows), res.stdout  # every line is "key: value"
    keys = [k.strip() for k, _ in rows]
    assert len(keys) == len(set(keys)), keys
    return {k.strip(): v.strip() for k, v in rows}


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def test_every_package_has_a_line_with_its_version(no_cupy):
    info = _info()
    keys = list(info)
    assert [k for k in keys if k in PACKAGES] == PACKAGES  # in this order
    assert keys[0] == "gpualign"
    assert info["gpualign"] == gpualign.__version__
    assert info["numpy"] == np.__version__
    assert info["scipy"] == scipy.__version__
    for name in ("astropy", "sep", "dask", "distributed"):
        assert info[name] == _installed(name), name
    assert info["astropy"] != "not installed" and info["sep"] != "not installed"
    # without CuPy: said so, why the backend is NumPy, and no CUDA lines
    assert info["cupy"] == "not installed"
    assert info["backend"] == "numpy" and "CuPy cannot be imported" in info["reason"]
    assert not any(k.startswith("cuda") for k in info), keys


def test_a_missing_package_reads_not_installed(no_cupy, monkeypatch):
    real = metadata.version

    def version(name):
        if name in ("dask", "distributed"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    info = _info()
    assert info["dask"] == "not installed" and info["distributed"] == "not installed"
    assert info["astropy"] == real("astropy")


def test_cupy_with_its_cuda_runtime_and_device_count(cp):
    info = _info()
    assert info["backend"] == "cupy"
    assert info["cupy"] == "14.2.0"
    assert info["cuda_runtime"].startswith("12.9")
    assert info["cuda_devices"] == "1"


def test_cupy_without_a_device_says_why_it_is_not_used(cp):
    with cp.configure(device_count=0):
        info = _info()
    assert info["backend"] == "numpy"
    assert info["cuda_devices"] == "0"
    assert "no CUDA device is visible" in info["reason"]


def test_cupy_with_a_broken_driver_says_why(cp):
    with cp.configure(fail="driver gone"):
        info = _info()
    assert info["backend"] == "numpy"
    assert info["cuda_devices"].startswith("unavailable (") and "driver gone" in info[
        "cuda_devices"], info
    assert "no CUDA device answers" in info["reason"]
