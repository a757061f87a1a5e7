"""The tests mirror the package: one folder per subpackage, unique basenames, no flat files.

The folders have no ``__init__.py`` (pytest's default "prepend" import mode imports each
test file as a top-level module named after its basename), so two files with one name
in different folders would collide; these checks say so before pytest's import error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = TESTS.parent / "gpualign"
EXTRA = {"gpu", "packaging", "data"}


def _test_files() -> list[Path]:
    return [p for p in TESTS.rglob("test_*.py")
            if "strict_cupy" not in p.parts and "__pycache__" not in p.parts]


def test_test_file_basenames_are_unique():
    names = Counter(p.name for p in _test_files())
    dup = sorted(n for n, c in names.items() if c > 1)
    assert not dup, f"test files share a basename (rename one): {dup}"


def test_no_init_py_in_test_folders():
    inits = [p.relative_to(TESTS) for p in TESTS.rglob("__init__.py")
             if "strict_cupy" not in p.parts]
    assert not inits, inits


def test_no_flat_test_files():
    flat = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not flat, f"move these into the folder of the subpackage they test: {flat}"


def test_one_test_folder_per_subpackage():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")
                   if not p.parent.name.startswith("_")}  # the private simulator: pipeline/
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert subpackages, PACKAGE
    assert subpackages <= folders, f"no test folder for {sorted(subpackages - folders)}"
    stray = sorted(folders - subpackages - EXTRA)
    assert not stray, f"no subpackage for {stray}"
    for folder in folders - {"data"}:
        assert any((TESTS / folder).glob("test_*.py")), f"tests/{folder}/ has no test file"
