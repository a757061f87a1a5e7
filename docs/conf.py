"""Sphinx configuration of gpualign's documentation.

Build from a checkout (the gallery reads the images in ``tests/data``)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is fetched from the network at build time (no intersphinx inventories).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gpualign

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))  # gallery_scraper

project = "gpualign"
author = "the gpualign developers"
copyright = "the gpualign developers, BSD-3-Clause"  # noqa: A001
release = gpualign.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.extlinks",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "_generated", "examples"]
templates_path: list[str] = []
html_theme = "alabaster"
html_title = f"gpualign {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "Star-based registration of astronomical images, "
                                     "on the GPU or the CPU",
                      "page_width": "1100px", "sidebar_width": "240px"}

# The docstrings are numpydoc; numpydoc renders the types as written, without links.
autodoc_typehints = "none"
autodoc_preserve_defaults = True  # defaults as written (np.float32), not their repr
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()

# Links to files of the repository (benchmark results, sources).
_REPO = "https://github.com/gpualign/gpualign/blob/main"
extlinks = {"repo": (f"{_REPO}/%s", "%s")}

# Warnings are errors in CI (-W); every cross-reference must resolve (-n), except those to
# the scientific Python stack: no intersphinx, since nothing may be fetched at build time.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|astropy|scipy|dask|distributed|cupy|matplotlib|os|pathlib)\..*"),
    # private modules and names, which docstrings may point developers to
    (r"py:.*", r"gpualign\.(\w+\.)*_\w+(\.\w+)*"),
]

# The gallery: real images shipped in the repository, run at build time.
# GPUALIGN_DOCS_NO_GALLERY=1 builds without running the examples (quick edits).
_run_gallery = os.environ.get("GPUALIGN_DOCS_NO_GALLERY", "") in ("", "0")
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS / "examples"),
    "gallery_dirs": str(DOCS / "auto_examples"),
    "filename_pattern": r"/plot_",
    "plot_gallery": "True" if _run_gallery else "False",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "image_scrapers": ("gallery_scraper.scrape_figures", "matplotlib"),
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1,
    "show_memory": False,
    "show_signature": False,
}

os.environ.setdefault("MPLBACKEND", "Agg")


def _write_cli_help() -> None:
    """Each command's ``--help`` at 80 columns into ``_generated/`` (cli.rst includes them)."""
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "COLUMNS": "80", "LINES": "50", "NO_COLOR": "1", "TERM": "dumb"}
    for command in ("align", "apply", "demo", "info"):
        text = subprocess.run([sys.executable, "-m", "gpualign", command, "--help"],
                              capture_output=True, text=True, env=env, check=True).stdout
        lines = [line.rstrip() for line in text.splitlines()]
        (out / f"cli_{command}.txt").write_text("\n".join(lines).strip("\n") + "\n")


_write_cli_help()


def _public_alias(app, env, node, contnode):
    """Resolve a reference to a public name by its top-level name, where it is documented.

    Docstrings name classes by their home (``gpualign.batch.FrameResult``, or a bare
    ``AlignResult`` inside ``gpualign.products``); the API reference documents them as
    ``gpualign.FrameResult`` and ``gpualign.AlignResult``.
    """
    target = node.get("reftarget", "")
    name = target.rsplit(".", 1)[-1]
    if (node.get("refdomain") != "py" or name not in gpualign.__all__
            or target == f"gpualign.{name}"
            or ("." in target and not target.startswith("gpualign."))):
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                             node["reftype"], f"gpualign.{name}", node,
                                             contnode)


def setup(app):
    """Register the reference resolver above."""
    app.connect("missing-reference", _public_alias)
