"""``--help`` reads at 80 columns: options in panels, no option name cut short (issue 12).

Each command's help is rendered by ``python -m gpualign ... --help`` with COLUMNS=80,
as a user's terminal would; every name of every parameter (``--mirror`` and
``--no-mirror``, ``-t`` and ``--template``, ...) must appear whole on its row, no line
may be wider than 80 columns and each panel must be there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import pytest
import typer

from gpualign.cli import app
from gpualign.cli._app import BACKEND, BATCH, DETECTION, FIT, INPUT, MATCHING, OUTPUT, RESAMPLING
from gpualign.detect import DetectSettings
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings

PANELS = (INPUT, DETECTION, MATCHING, FIT, RESAMPLING, OUTPUT, BATCH, BACKEND)
WIDTH = 80
#: Panels of each command, in the order they are shown.
COMMAND_PANELS = {
    "align": PANELS,
    "apply": (INPUT, RESAMPLING, OUTPUT, BACKEND),
    "demo": (OUTPUT, BACKEND),
    "info": (),
    "": (),
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _group():
    return typer.main.get_command(app)


def _command(name: str):
    return _group() if not name else _group().commands[name]


def _names(param) -> list[str]:
    """What the help must show of a parameter: every opt and secondary opt."""
    if param.param_type_name == "argument":
        return [param.name]
    return [*param.opts, *param.secondary_opts]


def _render(command: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS",
                        "_TYPER_FORCE_DISABLE_TERMINAL")}
    env.update(COLUMNS=str(WIDTH), LINES="50", NO_COLOR="1")
    args = [sys.executable, "-m", "gpualign", *([command] if command else []), "--help"]
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return ANSI.sub("", res.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: _render(name) for name in COMMAND_PANELS}


@pytest.mark.parametrize("command", list(COMMAND_PANELS), ids=lambda c: c or "gpualign")
def test_no_option_name_is_cut_at_80_columns(rendered, command):
    text = rendered[command]
    lines = text.splitlines()
    assert max(len(ln.rstrip()) for ln in lines) <= WIDTH, text
    assert "…" not in text, text
    rows = [ln.split() for ln in lines if ln.startswith("│")]
    params = [p for p in _command(command).params]
    params.append(_command(command).get_help_option(typer.Context(_command(command))))
    assert params
    for param in params:
        names = _names(param)
        # every name whole, on one row (an argument shows as NAME or NAME...)
        ok = any(all(n in row or n + "..." in row for n in names) for row in rows)
        assert ok, f"{names} not shown whole in 'gpualign {command} --help':\n{text}"


@pytest.mark.parametrize("command", list(COMMAND_PANELS), ids=lambda c: c or "gpualign")
def test_each_panel_is_shown_in_order(rendered, command):
    titles = re.findall(r"^╭─ (.+?) ─", rendered[command], flags=re.M)
    shown = [t for t in titles if t in PANELS]
    assert shown == list(COMMAND_PANELS[command]), titles
    assert set(titles) - set(PANELS) <= {"Arguments", "Options", "Commands"}, titles


@pytest.mark.parametrize("command", ["align", "apply", "demo"])
def test_every_option_but_help_is_in_a_panel(command):
    for param in _command(command).params:
        panel = getattr(param, "rich_help_panel", None)
        if param.param_type_name == "argument":
            assert panel is None, param.name  # in the Arguments panel
        else:
            assert panel in PANELS, (param.opts, panel)


@pytest.mark.parametrize(("cls", "panel"), [(DetectSettings, DETECTION),
                                            (MatchSettings, MATCHING), (FitSettings, FIT)])
def test_settings_options_are_in_their_stage_panel(cls, panel):
    align = _command("align")
    for f in dataclasses.fields(cls):
        name = f.metadata["cli"] or "--" + f.name.replace("_", "-")
        (opt,) = [p for p in align.params if name in getattr(p, "opts", ())]
        assert opt.rich_help_panel == panel, (name, opt.rich_help_panel)


def test_align_panels_hold_the_expected_options():
    """Where a user looks for each of align's options."""
    expected = {
        INPUT: {"--template", "--source-ext", "--template-ext", "--source-cat",
                "--template-cat", "--source-mask", "--mask-ext", "--template-mask",
                "--template-mask-ext", "--source-weight",
                "--weight-ext", "--weight-type"},
        DETECTION: {"--sep-thresh", "--min-fwhm", "--bad-flag-bits", "--min-sep", "--n-det",
                    "--auto-depth", "--flux-col"},
        MATCHING: {"--n-quad-det", "--min-quad-sep", "--max-quad-hash-dist",
                   "--max-quad-cand", "--patience-quad-cand", "--quad-edge-buffer",
                   "--sub-tile", "--max-match-dist", "--min-n-match", "--mirror",
                   "--wcs-prior"},
        FIT: {"--spline-order", "--transform", "--distortion", "--simple"},
        RESAMPLING: {"--output-shape", "--interp-order", "--cval", "--conserve-flux",
                     "--preserve-footprints"},
        OUTPUT: {"--output", "--overwrite", "--save-transform", "--report", "--plot",
                 "--quiet", "--verbose"},
        BATCH: {"--skip-existing", "--scheduler", "--workers"},
        BACKEND: {"--backend", "--threads", "--max-memory"},
    }
    got: dict[str, set[str]] = {}
    for p in _command("align").params:
        if p.param_type_name == "option":
            long = [o for o in p.opts if o.startswith("--")][0]
            got.setdefault(p.rich_help_panel, set()).add(long)
    assert got == expected
