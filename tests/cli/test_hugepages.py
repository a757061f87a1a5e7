"""The command line turns NumPy's huge-page advice off unless the user chose (issue 14)."""

import os

import pytest

from gpualign.cli import main


def _run_version() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0


def test_cli_sets_numpy_madvise_hugepage_off(monkeypatch, capsys):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    _run_version()
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "0"
    assert "gpualign" in capsys.readouterr().out


def test_cli_keeps_the_users_choice(monkeypatch, capsys):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    _run_version()
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1"
