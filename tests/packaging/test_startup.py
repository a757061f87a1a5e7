"""Start-up stays light (issue 14): what ``--version``, ``--help`` and ``import gpualign``
import.

Timing belongs in benchmarks (benchmarks/bench_cpu.py); this checks the cause instead:
the public names are loaded on first use, and the command line imports NumPy, SciPy,
astropy and sep only in the commands that work on images.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "astropy", "sep", "matplotlib", "dask")


def _imported(code: str) -> set[str]:
    """Top-level packages imported by a fresh interpreter running ``code``."""
    probe = (f"{code}\nimport sys\n"
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return set(res.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["align", "--help"],
                                  ["apply", "--help"]])
def test_cli_help_and_version_import_no_engine(argv):
    code = ("import sys\nfrom gpualign.cli import main\n"
            f"sys.argv = ['gpualign', *{argv!r}]\n"
            "import io, contextlib\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main()\n    except SystemExit:\n        pass")
    loaded = _imported(code)
    assert "gpualign" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_import_gpualign_is_lazy():
    assert not _imported("import gpualign") & set(HEAVY)


def test_public_names_load_on_first_use():
    loaded = _imported("import gpualign\nassert callable(gpualign.align)\n"
                       "assert issubclass(gpualign.GpuAlignWarning, UserWarning)")
    assert {"numpy", "astropy"} <= loaded


def test_every_public_name_resolves():
    import gpualign

    assert set(gpualign.__all__) - {"__version__"} == set(gpualign._EXPORTS)
    for name in gpualign.__all__:
        assert getattr(gpualign, name) is not None
    assert "align" in dir(gpualign)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        gpualign.nonexistent  # noqa: B018
    assert gpualign.simulate.simulate_pair is not None  # submodules load on access too


def _imported_modules(code: str) -> set[str]:
    """Every module (dotted names) a fresh interpreter running ``code`` imports."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return set(res.stdout.split())


def test_a_default_alignment_skips_the_slow_scipy_subpackages(tmp_path):
    # scipy.stats (0.4-0.9 s to import), scipy.optimize (0.2-0.45 s) and scipy.ndimage
    # (0.3 s) are not needed by a default run on the CPU with the host library: the
    # signed-rank test, the PSF's Gaussian fit and the prefilter are gpualign's own
    import numpy as np

    from gpualign.backend import _host
    from gpualign.simulate import make_mapping, simulate_pair

    m = make_mapping(source_shape=(768, 768), template_shape=(768, 768),
                     rotation_deg=3.0, scale=1.01, corner_distortion_px=2.0)
    pair = simulate_pair((768, 768), mapping=m, n_stars=500, seed=4)
    np.save(tmp_path / "src.npy", pair.source)
    np.save(tmp_path / "tmpl.npy", pair.template)
    code = (
        "import numpy as np\n"
        "import gpualign\n"
        f"res = gpualign.align(np.load({str(tmp_path / 'src.npy')!r}),\n"
        f"                     np.load({str(tmp_path / 'tmpl.npy')!r}))\n"
        "assert np.isfinite(res.data).any()\n"
    )
    loaded = _imported_modules(code)
    assert "gpualign.fit._selection" in loaded  # the fit ran
    slow = {"scipy.stats", "scipy.optimize"}
    if _host._load()[0] is not None:  # the compiled prefilter and sampler
        slow.add("scipy.ndimage")
    assert not loaded & slow, sorted(loaded & slow)
