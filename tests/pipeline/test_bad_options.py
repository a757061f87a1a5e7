"""Bad warp options and inputs are a GpuAlignError with a hint, raised before any work."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app

S = (128, 128)


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(2.5, -1.5), n_stars=120, seed=5)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(dtype=np.int8), "dtype must be float32 or float64"),
    (dict(dtype="not a dtype"), "dtype must be float32 or float64"),
    (dict(cval="x"), "cval must be a number"),
    (dict(cval=[1.0]), "cval must be a number"),
    (dict(threads=0), "threads must be a whole number >= 1"),
    (dict(threads=1.5), "threads must be a whole number >= 1"),
    (dict(interp_order=6), "interp_order must be an integer 0-5"),
    (dict(interp_order=True), "interp_order must be an integer 0-5"),
    (dict(weight_type="sigma"), "weight_type must be one of"),
])
def test_api_rejects_bad_warp_options(pair, kwargs, message):
    with pytest.raises(gpualign.InputError, match=message) as info:
        gpualign.align(pair.source, pair.template, backend="numpy", **kwargs)
    assert info.value.hint or "weight_type" in message
    if "weight_type" not in kwargs:  # a batch checks them before its first frame
        with pytest.raises(gpualign.InputError, match=message):
            gpualign.align_batch([pair.source], pair.template, backend="numpy",
                                 processes=1, **kwargs)


@pytest.mark.parametrize(("source", "message"), [
    (None, "no source given"),
    (np.zeros((64, 64), "M8[s]"), "unsupported dtype datetime64"),
    (np.zeros((64, 64), complex), "unsupported dtype complex128"),
])
def test_api_rejects_unusable_sources(pair, source, message):
    with pytest.raises(gpualign.InputError, match=message):
        gpualign.align(source, pair.template, backend="numpy")


def test_cli_threads_zero_is_one_line_before_any_work(tmp_path, restore_gpualign_logger):
    res = CliRunner().invoke(app, ["align", str(tmp_path / "missing.fits"), "-t",
                                   str(tmp_path / "missing.fits"), "-o",
                                   str(tmp_path / "o.fits"), "--threads", "0"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "gpualign: error: threads must be a whole number >= 1, got 0 "
        "(hint: omit it to use every usable core)"]
    assert list(tmp_path.iterdir()) == []
