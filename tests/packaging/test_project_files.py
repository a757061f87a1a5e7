"""The project files a user or a packager looks for: licence, citation, changelog,
``py.typed``, project URLs, and one version everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gpualign

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the package supports 3.10)

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_the_declared_one():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "BSD-3-Clause" in str(meta["license"])


def test_citation_names_this_version():
    text = (ROOT / "CITATION.cff").read_text()
    assert re.search(r'^cff-version: 1\.2\.0$', text, re.M)
    assert re.search(rf'^version: "{re.escape(gpualign.__version__)}"$', text, re.M)


def test_changelog_has_this_version():
    assert f"## {gpualign.__version__}" in (ROOT / "CHANGES.md").read_text()


def test_typed_marker_ships_in_the_package():
    assert (Path(gpualign.__file__).parent / "py.typed").is_file()


def test_project_urls_and_a_single_version_literal():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"Homepage", "Issues", "Changelog"} <= set(meta.get("urls", {}))
    assert "version" in meta.get("dynamic", [])
    literals = [p for p in (ROOT / "gpualign").rglob("*.py")
                if re.search(r"__version__\s*=\s*['\"]", p.read_text())]
    assert [p.name for p in literals] == ["_version.py"]
