"""What a user sees: one line for a failure (library noise only at -v), and where a
single source's output goes when -o names a directory."""

from __future__ import annotations

from astropy.io import fits
from typer.testing import CliRunner

from gpualign.cli import app

S = (200, 200)


def _pair(make_pair, tmp_path):
    pair = make_pair(S, shift=(3.5, -2.5), n_stars=200, seed=11)
    fits.PrimaryHDU(pair.source).writeto(tmp_path / "s.fits")
    fits.PrimaryHDU(pair.template).writeto(tmp_path / "t.fits")
    return tmp_path / "s.fits", tmp_path / "t.fits"


def test_truncated_template_is_one_line(make_pair, tmp_path, restore_gpualign_logger):
    s, t = _pair(make_pair, tmp_path)
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(t.read_bytes()[:8000])
    args = ["align", str(s), "-t", str(trunc), "-o", str(tmp_path / "o.fits")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpualign: error: "), lines
    assert "declares 200x200 pixels" in lines[0] and "truncated" in lines[0]
    res = CliRunner().invoke(app, [*args, "-v"])
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "o.fits").exists()


def test_single_source_into_an_existing_directory(make_pair, tmp_path,
                                                  restore_gpualign_logger):
    s, t = _pair(make_pair, tmp_path)
    (tmp_path / "out").mkdir()
    for extra in ([], ["--overwrite"]):
        res = CliRunner().invoke(app, ["align", str(s), "-t", str(t), "-o",
                                       str(tmp_path / "out"), "--backend", "numpy", *extra])
        assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s_aligned.fits"]
