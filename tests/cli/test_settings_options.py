"""Settings are defined once: the API's keywords and the CLI's options follow them.

Each field of DetectSettings, MatchSettings and FitSettings must be a keyword of
``gpualign.find_transform`` (and so of ``align`` and ``align_batch``) and an option of
``gpualign align``, with the same default; the CLI's help is the field's help.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer

import gpualign
from gpualign.cli import app
from gpualign.detect import DetectSettings
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings

FIELDS = [(cls, f) for cls in (DetectSettings, MatchSettings, FitSettings)
          for f in dataclasses.fields(cls)]


def _align_command():
    group = typer.main.get_command(app)
    return group.commands["align"]


def _cli_option(f: dataclasses.Field):
    name = f.metadata["cli"] or "--" + f.name.replace("_", "-")
    for p in _align_command().params:
        if type(p).__name__.endswith("Option") and name in p.opts:
            return p
    raise AssertionError(f"no CLI option {name} for the setting {f.name}")


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f.name for _, f in FIELDS])
def test_every_setting_is_an_api_keyword_with_its_default(cls, f):
    params = inspect.signature(gpualign.find_transform).parameters
    assert f.name in params, f"find_transform has no keyword {f.name}"
    assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params[f.name].default == f.default


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f.name for _, f in FIELDS])
def test_every_setting_is_a_cli_option_with_its_default_and_help(cls, f):
    opt = _cli_option(f)
    if f.metadata["kind"] is bool:  # an on/off pair: --mirror/--no-mirror
        assert opt.is_flag and opt.secondary_opts == ["--no-" + opt.opts[0][2:]]
    assert opt.default == f.default, (f.name, opt.default, f.default)
    assert opt.help == f.metadata["help"], f.name


def test_no_api_keyword_is_outside_the_settings():
    """find_transform's keywords are the settings plus the inputs' own."""
    inputs = {"source_det", "template_det", "source_ext", "template_ext", "hdu_in",
              "source_mask", "template_mask", "backend"}
    names = {f.name for _, f in FIELDS}
    params = {n for n, p in inspect.signature(gpualign.find_transform).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert params - names == inputs


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (MatchSettings, dict(n_quad_det=3), "n_quad_det must be >= 4 (a quad has 4 stars)"),
    (MatchSettings, dict(max_match_dist=0), "max_match_dist must be > 0"),
    (MatchSettings, dict(sub_tile=1.5), "sub_tile must be an integer"),
    (DetectSettings, dict(sep_thresh=-1), "sep_thresh must be > 0"),
    (DetectSettings, dict(min_sep=None), None),
    (FitSettings, dict(spline_order=10), "spline_order must be 0-9 or None"),
    (FitSettings, dict(distortion="spline"), "distortion must be one of poly, tps, auto"),
    (FitSettings, dict(transform="AFFINE"), None),
])
def test_settings_validate_on_construction(cls, kwargs, message):
    if message is None:
        cls(**kwargs)
        return
    with pytest.raises(gpualign.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(**kwargs)


def test_settings_are_frozen():
    s = MatchSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_match_dist = 3.0  # type: ignore[misc]
