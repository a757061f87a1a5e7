"""Every way registration can fail, on the API and on the CLI.

API: a typed :class:`gpualign.GpuAlignError` subclass with a message saying what went
wrong and a hint, never an IndexError/ValueError from deep inside. CLI: exit code 2
for bad input, 1 when the images cannot be aligned, one line on stderr and no
traceback (a traceback with -vv), and no output file (nor temporary file) left.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign._simulate import make_mapping, simulate_pair
from gpualign.cli import app

S = (256, 256)


@pytest.fixture(scope="module")
def good():
    """A solvable pair (the truth is a shift and a rotation)."""
    m = make_mapping(source_shape=S, template_shape=S, shift=(3.3, -2.1), rotation_deg=15.0)
    return simulate_pair(S, mapping=m, n_stars=250, seed=21)


@pytest.fixture(scope="module")
def bad_images(good):
    rng = np.random.default_rng(0)
    three = simulate_pair(S, n_stars=3, flux_range=(3e4, 3e5), seed=2)
    far = make_mapping(source_shape=S, template_shape=S, shift=(3000.0, 0.0))
    disjoint = simulate_pair(S, mapping=far, n_stars=250, seed=3)
    other = simulate_pair(S, n_stars=250, seed=4)
    nan = np.full(S, np.nan, np.float32)
    return {
        "blank": np.full(S, 100.0, np.float32),
        "noise": rng.normal(100.0, 10.0, S).astype(np.float32),
        "three_stars": three.source,
        "all_nan": nan,
        # (source, template) pairs:
        "disjoint": (disjoint.source, disjoint.template),
        "unrelated": (other.source, good.template),
    }


def _check(exc: gpualign.GpuAlignError, cls: type, words: str) -> None:
    assert type(exc) is cls, type(exc)
    assert isinstance(exc, gpualign.GpuAlignError) and isinstance(exc, ValueError)
    assert words.lower() in str(exc).lower(), str(exc)
    assert "\n" not in str(exc)


# ----------------------------------------------------------------------------- API


@pytest.mark.parametrize("name, cls, words, hint", [
    ("blank", gpualign.TooFewStars, "only 0 usable stars in the source", "sep_thresh"),
    ("noise", gpualign.TooFewStars, "usable stars in the source", "sep_thresh"),
    ("three_stars", gpualign.TooFewStars, "usable stars in the source", "sep_thresh"),
    ("all_nan", gpualign.InputError, "source has no finite pixels", "check the file"),
])
def test_unusable_source(name, cls, words, hint, bad_images, good):
    with pytest.raises(gpualign.GpuAlignError) as info:
        gpualign.align(bad_images[name], good.template, backend="numpy")
    _check(info.value, cls, words)
    assert hint in info.value.hint


def test_unusable_template(bad_images, good):
    with pytest.raises(gpualign.TooFewStars, match="usable stars in the template"):
        gpualign.find_transform(good.source, bad_images["blank"], backend="numpy")
    with pytest.raises(gpualign.InputError, match="template has no finite pixels"):
        gpualign.align(good.source, bad_images["all_nan"], backend="numpy")


@pytest.mark.parametrize("name", ["disjoint", "unrelated"])
def test_fields_that_do_not_match(name, bad_images):
    src, tmpl = bad_images[name]
    with pytest.raises(gpualign.NoQuadMatch) as info:
        gpualign.align(src, tmpl, backend="numpy")
    _check(info.value, gpualign.NoQuadMatch, "no quad match")
    assert "overlap" in info.value.hint


def test_no_overlap(good):
    """A source catalogue in another frame (1000 px off): the stars match, the images not."""
    from astropy.table import Table

    from gpualign.detect._sep import detect

    cat = detect(good.source)
    table = Table({"x": cat.x + 1000.0, "y": cat.y - 700.0, "flux": cat.flux})
    with pytest.raises(gpualign.TooFewStars) as info:  # caught before matching
        gpualign.align(good.source, good.template, source_det=table, backend="numpy")
    assert type(info.value) is gpualign.TooFewStars
    assert re.search(r"only 0 of the \d+ usable source stars lie inside the 256x256 source image",
                     str(info.value)), str(info.value)
    assert "pixel frame" in info.value.hint
    with pytest.raises(gpualign.NoOverlap) as info:  # without the edge check: matched, no overlap
        gpualign.align(good.source, good.template, source_det=table, quad_edge_buffer=0,
                       backend="numpy")
    _check(info.value, gpualign.NoOverlap, "no part of the source")
    assert "same field" in info.value.hint
    # the same catalogue in the right frame works
    table = Table({"x": cat.x, "y": cat.y, "flux": cat.flux})
    gpualign.align(good.source, good.template, source_det=table, backend="numpy")


def test_no_overlap_check_itself():
    t = gpualign.Transform.from_matrix(np.array([[1.0, 0, 1000.0], [0, 1.0, 0]]))
    with pytest.raises(gpualign.NoOverlap) as info:
        from gpualign.pipeline._solve import check_overlap as _check_overlap

        _check_overlap(t, S, S)
    _check(info.value, gpualign.NoOverlap, "no part of the source")
    assert info.value.hint


@pytest.mark.parametrize("order", [-1, 6, 7, 2.5, "3", None])
def test_bad_interp_order(order, good):
    with pytest.raises(gpualign.InputError, match="interp_order must be an integer 0-5"):
        gpualign.align(good.source, good.template, interp_order=order, backend="numpy")
    t = gpualign.Transform.from_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    with pytest.raises(gpualign.InputError, match="interp_order"):
        gpualign.apply_transform(t, good.source, S, interp_order=order, backend="numpy")


@pytest.mark.parametrize("kw, words", [
    (dict(source=np.zeros((3, 64, 64), np.float32)), "source must be 2-D"),
    (dict(source=np.zeros(4096, np.float32)), "source must be 2-D"),
    (dict(template=np.zeros((2, 64, 64), np.float32)), "template must be 2-D"),
    (dict(source=np.zeros((4, 300), np.float32)), "too small"),
    (dict(source=np.zeros(S, complex)), "unsupported dtype"),
    (dict(source_mask=np.zeros((10, 10), bool)), "mask's shape"),
    (dict(output_shape=(0, 10)), "output_shape"),
    (dict(output_shape=(-5, 10)), "output_shape"),
    (dict(output_shape=(10,)), "output_shape"),
    (dict(output_shape=(10.5, 10)), "output_shape"),
])
def test_wrong_shapes(kw, words, good):
    args = dict(source=good.source, template=good.template)
    args.update(kw)
    with pytest.raises(gpualign.InputError, match=words.replace("'", ".")):
        gpualign.align(args.pop("source"), args.pop("template"), backend="numpy", **args)


def test_wrong_shapes_apply_transform(good):
    t = gpualign.Transform.from_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    for shape in [(10,), (0, 5), (5, 5, 5), None]:
        with pytest.raises(gpualign.InputError, match="output_shape"):
            gpualign.apply_transform(t, good.source, shape, backend="numpy")
    with pytest.raises(gpualign.InputError, match="mask"):
        gpualign.apply_transform(t, good.source, S, mask=np.zeros((3, 3), bool),
                                 backend="numpy")


@pytest.mark.parametrize("kw, words", [
    (dict(max_match_dist=0), "max_match_dist must be > 0"),
    (dict(min_quad_sep=-1.0), "min_quad_sep must be > 0"),
    (dict(max_quad_hash_dist=0), "max_quad_hash_dist must be > 0"),
    (dict(n_quad_det=3), "n_quad_det must be >= 4"),
    (dict(max_quad_cand=0), "max_quad_cand must be >= 1"),
    (dict(patience_quad_cand=0), "patience_quad_cand must be >= 1"),
    (dict(sub_tile=0), "sub_tile must be >= 1"),
    (dict(min_n_match=1), "min_n_match must be >= 3"),
    (dict(n_det=0), "n_det must be"),
    (dict(n_det=-0.5), "n_det must be"),
    (dict(min_sep=-1.0), "min_sep must be >= 0"),
    (dict(min_fwhm=-1.0), "min_fwhm must be >= 0"),
    (dict(quad_edge_buffer=-5.0), "quad_edge_buffer must be >= 0"),
    (dict(spline_order=-1), "spline_order must be"),
    (dict(spline_order=2.5), "spline_order must be"),
])
def test_out_of_range_dials(kw, words, good):
    with pytest.raises(gpualign.InputError, match=words):
        gpualign.find_transform(good.source, good.template, backend="numpy", **kw)


def test_unreadable_and_missing_files(tmp_path, good):
    junk = tmp_path / "junk.fits"
    junk.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(gpualign.InputError, match="cannot read .*junk.fits as FITS"):
        gpualign.align(junk, good.template, backend="numpy")
    with pytest.raises(gpualign.InputError, match="source file not found"):
        gpualign.align(tmp_path / "nope.fits", good.template, backend="numpy")
    with pytest.raises(gpualign.InputError, match="template file not found"):
        gpualign.align(good.source, str(tmp_path / "nope.fits"), backend="numpy")
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("x", "E", array=np.arange(5.0))])]).writeto(table)
    with pytest.raises(gpualign.InputError, match="no 2-D image HDU") as info:
        gpualign.align(table, good.template, backend="numpy")
    assert "ext" in info.value.hint
    with pytest.raises(gpualign.InputError, match="not found"):
        gpualign.find_transform(good.source, good.template, source_det=tmp_path / "no.cat",
                                backend="numpy")
    with pytest.raises(gpualign.InputError, match="SExtractor"):
        gpualign.find_transform(good.source, good.template, source_det=junk, backend="numpy")
    from astropy.table import Table

    with pytest.raises(gpualign.InputError, match="no x/y columns"):
        gpualign.find_transform(good.source, good.template,
                                source_det=Table({"a": [1.0], "b": [2.0]}), backend="numpy")


def test_missing_fits_extension(tmp_path, good):
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(good.source, name="SCI")]).writeto(path)
    for ext in ("ERR", 5, "5"):
        with pytest.raises(gpualign.InputError, match="has no extension") as info:
            gpualign.align(path, good.template, source_ext=ext, backend="numpy")
        assert "1:SCI" in str(info.value)  # it lists what there is
    with pytest.raises(gpualign.InputError, match="not a 2-D image"):
        gpualign.align(path, good.template, source_ext=0, backend="numpy")


def test_unknown_backend(good):
    with pytest.raises(gpualign.BackendUnavailable) as info:
        gpualign.align(good.source, good.template, backend="nope")
    assert info.value.hint


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def files(tmp_path_factory, good, bad_images):
    d = tmp_path_factory.mktemp("fail")
    out = {}

    def put(name, data):
        fits.PrimaryHDU(data).writeto(d / f"{name}.fits")
        out[name] = d / f"{name}.fits"

    put("source", good.source)
    put("template", good.template)
    for name in ("blank", "noise", "three_stars", "all_nan"):
        put(name, bad_images[name])
    for name in ("disjoint", "unrelated"):
        put(name + "_s", bad_images[name][0])
        put(name + "_t", bad_images[name][1])
    put("cube", np.zeros((3, 32, 32), np.float32))
    (d / "junk.fits").write_text("this is not a FITS file\n" * 200)
    out["junk"] = d / "junk.fits"
    return out


def _run(args, tmp_path, expect_code):
    """Run the CLI in an empty output directory; check the failure contract."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "aligned.fits"
    res = CliRunner().invoke(app, ["align", "--backend", "numpy", *map(str, args),
                                   "-o", str(target)])
    assert res.exit_code == expect_code, (res.exit_code, res.stderr, res.stdout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert os.listdir(out) == [], "an output or temporary file was left behind"
    return res


CLI_CASES = {
    "blank source": (["{blank}", "-t", "{template}"], 1, "usable stars in the source"),
    "noise source": (["{noise}", "-t", "{template}"], 1, "usable stars"),
    "three stars": (["{three_stars}", "-t", "{template}"], 1, "usable stars"),
    "blank template": (["{source}", "-t", "{blank}"], 1, "usable stars in the template"),
    "disjoint": (["{disjoint_s}", "-t", "{disjoint_t}"], 1, "no quad match"),
    "unrelated": (["{unrelated_s}", "-t", "{unrelated_t}"], 1, "no quad match"),
    "all NaN": (["{all_nan}", "-t", "{template}"], 2, "source has no finite pixels"),
    "unreadable": (["{junk}", "-t", "{template}"], 2, "cannot read"),
    "missing source": (["{source}.nope", "-t", "{template}"], 2, "source file not found"),
    "missing template": (["{source}", "-t", "{template}.nope"], 2, "template file not found"),
    "cube": (["{cube}", "-t", "{template}"], 2, "no 2-D image HDU"),
    "missing ext": (["{source}", "-t", "{template}", "--source-ext", "SCI"], 2,
                    "has no extension 'SCI'"),
    "missing ext number": (["{source}", "-t", "{template}", "--template-ext", "2"], 2,
                           "has no extension"),
    "output shape": (["{source}", "-t", "{template}", "--output-shape", "0", "10"], 2,
                     "output-shape"),
    "no template": (["{source}"], 2, "no template given"),
    "bad dial": (["{source}", "-t", "{template}", "--max-match-dist", "0"], 2,
                 "max_match_dist must be > 0"),
    "bad backend": (["{source}", "-t", "{template}", "--backend", "nope"], 2,
                    "unknown backend"),
    "missing catalogue": (["{source}", "-t", "{template}", "--source-cat", "{source}.cat"], 2,
                          "not found"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_failure(case, files, tmp_path, restore_gpualign_logger):
    args, code, words = CLI_CASES[case]
    res = _run([a.format(**files) for a in args], tmp_path, code)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("gpualign: error: ")
    assert words.lower() in lines[0].lower(), lines[0]


def test_cli_bad_interp_order_is_a_usage_error(files, tmp_path, restore_gpualign_logger):
    res = _run([files["source"], "-t", files["template"], "--interp-order", "7"], tmp_path, 2)
    assert "--interp-order" in res.stderr


@pytest.mark.parametrize("args, code", [
    (["{blank}", "-t", "{template}"], 1),
    (["{junk}", "-t", "{template}"], 2),
])
def test_cli_traceback_only_with_vv(args, code, files, tmp_path, restore_gpualign_logger):
    out = tmp_path / "o.fits"
    res = CliRunner().invoke(app, ["align", *[a.format(**files) for a in args], "-o", str(out),
                                   "--backend", "numpy", "-vv"])
    assert res.exit_code == code
    assert "Traceback (most recent call last)" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("gpualign: error: ")
    assert not out.exists()


def test_misspelt_option_names_the_public_function():
    """A typo in an option is reported against align(), not an internal function."""
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(TypeError, match=r"align\(\) got an unexpected keyword argument "
                                        r"'max_match_dst'"):
        gpualign.align(img, img, max_match_dst=3.0)
