"""``gpualign info``: the backend ``auto`` would pick, and the versions of what it runs on."""

from __future__ import annotations

from importlib import metadata

import typer

from gpualign._version import __version__

#: Packages reported by their installed distribution's version (none is imported).
_DISTRIBUTIONS = ("astropy", "sep")
_DASK = ("dask", "distributed")


def _installed(name: str) -> str:
    """The installed version of the distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cuda_devices() -> str:
    """How many CUDA devices CuPy sees, or why it cannot tell."""
    from gpualign.backend import _import_cupy  # the one place CuPy is imported

    try:
        cp, _ = _import_cupy()
        return str(int(cp.cuda.runtime.getDeviceCount()))
    except Exception as exc:  # a CUDA install broken in any way
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return f"unavailable ({detail})"


def info_report() -> dict[str, str]:
    """One entry per line of ``gpualign info``.

    :func:`gpualign.backend.backend_report` (the backend, why, the device, the CPU
    sampler, NumPy, SciPy and, when CuPy imports, the CUDA runtime and driver), with
    gpualign's version first, astropy's and sep's after SciPy's, the CUDA device count
    after CuPy's lines, and Dask's (dask, distributed) last. A package that is
    missing reads ``not installed``.
    """
    from gpualign.backend import backend_report

    backend = backend_report()
    report = {"gpualign": __version__}
    for key, value in backend.items():
        report[key] = value
        if key == "scipy":
            report.update((name, _installed(name)) for name in _DISTRIBUTIONS)
    if backend.get("cupy", "not installed") != "not installed":
        report["cuda_devices"] = _cuda_devices()
    report.update((name, _installed(name)) for name in _DASK)
    return report


def run_info() -> None:
    """Print :func:`info_report`, one ``key: value`` line each."""
    for key, value in info_report().items():
        typer.echo(f"{key:>13}: {value}")
