"""An output never replaces an input: not with --overwrite, not through a link.

Every case runs the CLI, expects exit code 2 and one ``gpualign: error:`` line saying
which input, and checks that every input file is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app

S = (256, 256)


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(4.2, -3.1), rotation_deg=7.0, n_stars=300, seed=41)


@pytest.fixture
def files(pair, tmp_path):
    fits.PrimaryHDU(pair.source).writeto(tmp_path / "s.fits")
    fits.PrimaryHDU(pair.template).writeto(tmp_path / "t.fits")
    return tmp_path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def _refused(folder: Path, *args) -> str:
    before = _digests(folder)
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpualign: error:"), res.stderr
    assert "Traceback" not in res.output
    assert _digests(folder) == before  # every input byte-identical, nothing new
    return lines[0]


def test_output_is_the_source(files):
    line = _refused(files, "align", files / "s.fits", "-t", files / "t.fits",
                    "-o", files / "s.fits", "--overwrite")
    assert "is the input" in line


def test_output_is_the_template(files):
    line = _refused(files, "align", files / "s.fits", "-t", files / "t.fits",
                    "-o", files / "t.fits", "--overwrite")
    assert "is the input" in line and "t.fits" in line


def test_output_is_a_link_to_the_source(files):
    os.symlink(files / "s.fits", files / "soft.fits")
    os.link(files / "s.fits", files / "hard.fits")
    for name in ("soft.fits", "hard.fits"):
        _refused(files, "align", files / "s.fits", "-t", files / "t.fits",
                 "-o", files / name, "--overwrite")


def test_saved_transform_is_an_input(files):
    _refused(files, "align", files / "s.fits", "-t", files / "t.fits",
             "-o", files / "o.fits", "--save-transform", files / "t.fits")
    assert not (files / "o.fits").exists()


def test_batch_output_would_replace_a_source(files):
    """Sources x.fits and x_aligned.fits into their own folder: x's output is an input."""
    (files / "x.fits").write_bytes((files / "s.fits").read_bytes())
    (files / "x_aligned.fits").write_bytes((files / "s.fits").read_bytes())
    line = _refused(files, "align", files / "x.fits", files / "x_aligned.fits",
                    "-t", files / "t.fits", "-o", files, "--overwrite")
    assert "x_aligned.fits" in line
    with pytest.raises(gpualign.InputError, match="is the input"):
        gpualign.align_batch([files / "x.fits", files / "x_aligned.fits"], files / "t.fits",
                             files, overwrite=True, backend="numpy")


def test_apply_onto_its_image_or_its_transform(files):
    runner = CliRunner()
    res = runner.invoke(app, ["align", str(files / "s.fits"), "-t", str(files / "t.fits"),
                              "-o", str(files / "o.fits"), "--save-transform",
                              str(files / "m.json"), "--backend", "numpy"])
    assert res.exit_code == 0, res.output
    for target in ("s.fits", "m.json"):
        _refused(files, "apply", files / "m.json", files / "s.fits", "-o", files / target,
                 "--overwrite")


def test_api_refuses_too(files, pair):
    from gpualign.pipeline import FrameOptions

    opts = FrameOptions(output=files / "t.fits", overwrite=True, protected=(files / "t.fits",))
    with pytest.raises(gpualign.InputError, match="is the input"):
        opts.check_outputs(files / "s.fits")
