"""The documentation's sources, checked without building them (CI builds them: .ci/run).

* Every public name (``gpualign.__all__``, ``gpualign.simulate.__all__``) is documented
  by a directive of the API reference, ``docs/api.rst``.
* The gallery's scripts exist, use only the public API (no ``gpualign._...`` import or
  attribute) and read only images that the repository holds.
* Every example a page links to exists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import gpualign
import gpualign.simulate

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

_DIRECTIVE = re.compile(r"^\.\. (currentmodule|automodule|autofunction|autoclass|"
                        r"autoexception|autodata|data|function|class|exception)::\s*(\S+)")
_MEMBERS = re.compile(r"^\s+:members:\s*(.*)$")


def documented_names(rst: str) -> set[str]:
    """Fully qualified names that the directives of an API page document.

    ``.. currentmodule::`` sets the module of the directives after it; an
    ``.. automodule::`` with an explicit ``:members:`` list (possibly continued on the
    following, more indented lines) documents those members.
    """
    names: set[str] = set()
    module = ""
    lines = rst.splitlines()
    for i, line in enumerate(lines):
        found = _DIRECTIVE.match(line)
        if not found:
            continue
        kind, target = found.groups()
        if kind == "currentmodule":
            module = target
            continue
        if kind == "automodule":
            members: list[str] = []
            j = i + 1
            while j < len(lines) and lines[j].startswith(" ") and lines[j].strip():
                opt = _MEMBERS.match(lines[j])
                if opt:
                    members += opt.group(1).split(",")
                    k = j + 1
                    while (k < len(lines) and lines[k].strip()
                           and not lines[k].strip().startswith(":")):
                        members += lines[k].split(",")
                        k += 1
                j += 1
            names.update(f"{target}.{m.strip()}" for m in members if m.strip())
            continue
        names.add(target if "." in target and target.startswith("gpualign")
                  else f"{module}.{target}")
    return names


def test_every_public_name_is_in_the_api_reference():
    documented = documented_names((DOCS / "api.rst").read_text())
    public = {f"gpualign.{n}" for n in gpualign.__all__}
    public |= {f"gpualign.simulate.{n}" for n in gpualign.simulate.__all__}
    assert public - documented == set(), "add these to docs/api.rst"


def test_the_name_finder_sees_what_it_looks_for():
    rst = ("..  note:: nothing\n\n.. currentmodule:: gpualign\n\n.. autofunction:: align\n\n"
           ".. autoclass:: Solution\n\n.. automodule:: gpualign.simulate\n"
           "   :members: make_mapping, TrueMapping,\n             simulate_pair\n")
    assert documented_names(rst) == {
        "gpualign.align", "gpualign.Solution", "gpualign.simulate.make_mapping",
        "gpualign.simulate.TrueMapping", "gpualign.simulate.simulate_pair"}


def private_uses(source: str) -> list[str]:
    """Imports of private gpualign modules and ``gpualign._x`` attributes in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
            if node.module == "gpualign":
                modules += [f"gpualign.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "gpualign" and node.attr.startswith("_")
              and node.attr != "__version__"):
            found.append(f"gpualign.{node.attr}")
            continue
        else:
            continue
        found += [m for m in modules if m.split(".")[0] == "gpualign"
                  and any(part.startswith("_") for part in m.split(".")[1:])]
    return found


def test_the_private_use_finder_sees_what_it_looks_for():
    planted = ("import gpualign._simulate\nfrom gpualign.detect._sep import detect\n"
               "from gpualign import _errors\nimport gpualign\nx = gpualign._version\n"
               "from gpualign.simulate import make_mapping\ny = gpualign.__version__\n")
    assert private_uses(planted) == ["gpualign._simulate", "gpualign.detect._sep",
                                     "gpualign._errors", "gpualign._version"]


SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))


def test_the_gallery_has_its_scripts():
    assert (EXAMPLES / "README.rst").is_file()  # sphinx-gallery's index of the gallery
    assert len(SCRIPTS) >= 4, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_gallery_script_uses_the_public_api_and_shipped_images(script):
    source = script.read_text()
    assert private_uses(source) == []
    assert ast.get_docstring(ast.parse(source)), "sphinx-gallery needs a title docstring"
    held = {p.name for p in ROOT.glob("tests/data/*.fits")}
    held |= {p.name for p in ROOT.glob("gpualign/data/*.fits")}
    images = set(re.findall(r"[\"']([\w.-]+\.fits)[\"']", source))
    assert images <= held, f"not in the repository: {sorted(images - held)}"


def test_every_linked_example_exists():
    pages = [p for p in DOCS.rglob("*.rst") if "auto_examples" not in p.parts
             and "_build" not in p.parts]
    linked = {m for p in pages for m in re.findall(r"/auto_examples/(plot_\w+)", p.read_text())}
    linked |= {m for p in SCRIPTS for m in re.findall(r"/auto_examples/(plot_\w+)",
                                                          p.read_text())}
    assert linked, "the pages link to no example"
    assert linked <= {p.stem for p in SCRIPTS}


def test_the_build_needs_no_network_and_ci_fails_on_warnings():
    conf = (DOCS / "conf.py").read_text()
    assert "sphinx.ext.intersphinx" not in conf
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"sphinx\s+-W\s+--keep-going", ci), "CI must build the docs with -W"
