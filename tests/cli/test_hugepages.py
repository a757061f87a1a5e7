"""Commands turn NumPy's huge-page advice off unless the user chose (issue 14).

Where the kernel compacts memory on a huge-page fault (THP ``defrag=madvise``), the
first touch of every fresh image array stalls; ``benchmarks/results/floor.md``
measures detection with the advice on and off.
"""

import subprocess
import sys

import pytest

PROBE = (
    "import sys\n"
    "from gpualign.cli import main\n"
    "try:\n"
    "    main(['align', 'missing-source.fits', '-t', 'missing-template.fits'])\n"
    "except SystemExit:\n"
    "    pass\n"
    "from numpy._core.multiarray import _get_madvise_hugepage\n"
    "print('HUGEPAGE', _get_madvise_hugepage(), file=sys.stderr)\n"
)


def _advice(env_value: str | None) -> bool:
    import os

    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if env_value is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = env_value
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, check=True)
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("HUGEPAGE"))
    return line.split()[1] == "True"


def test_a_command_turns_the_advice_off():
    pytest.importorskip("numpy._core.multiarray")
    assert _advice(None) is False


def test_the_users_setting_wins():
    pytest.importorskip("numpy._core.multiarray")
    assert _advice("1") is True
