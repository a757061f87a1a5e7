"""The bad-input corpus: every way a new user can hand gpualign something unusable.

Each case runs the real command line (``gpualign.cli.main``, the console script) in
its own process, forked from a driver that imported gpualign once (a fresh
interpreter per case would cost a second each), in a folder holding every input,
and under an address-space limit, so an allocation that only a resource limit would
stop fails the case instead of swapping. Each case asserts:

- the exit code (2: unusable input or settings; 1: the images cannot be aligned);
- exactly one line on stderr, ``gpualign: error: ...``, no traceback;
- no output, no temporary and no other new file in the folder;
- every input byte-identical afterwards;
- no hang (a case is killed after :data:`CASE_TIMEOUT_S`).

The driver is this file run as a script (``python test_bad_input_corpus.py DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gpualign._simulate import make_mapping, simulate_pair
from gpualign._system import virtual_memory_size

#: Seconds before a case counts as hung.
CASE_TIMEOUT_S = 60
#: Address space a case may add to the driver's (huge allocations must fail fast).
HEADROOM_BYTES = 3 << 30


@dataclass(frozen=True)
class Case:
    """One bad input: the arguments, the exit code, and words the message must hold."""

    name: str
    args: tuple[str, ...]
    code: int = 2
    words: str = ""


ALIGN = ("align", "source.fits", "-t", "template.fits", "-o", "out.fits")
APPLY = ("apply", "t.json", "source.fits", "-o", "out.fits")


def _align(*extra: str) -> tuple[str, ...]:
    return (*ALIGN, *extra)


def _src(src: str, *extra: str) -> tuple[str, ...]:
    return ("align", src, "-t", "template.fits", "-o", "out.fits", *extra)


def _tmpl(tmpl: str, *extra: str) -> tuple[str, ...]:
    return ("align", "source.fits", "-t", tmpl, "-o", "out.fits", *extra)


def _apply(transform: str, *extra: str) -> tuple[str, ...]:
    return ("apply", transform, "source.fits", "-o", "out.fits", *extra)


CASES = [
    # --- missing and misdirected paths
    Case("missing-source", _src("nosuch.fits"), 2, "not found"),
    Case("missing-template", _tmpl("nosuch.fits"), 2, "not found"),
    Case("missing-source-cat", _align("--source-cat", "nosuch.cat"), 2, "not found"),
    Case("missing-template-cat", _align("--template-cat", "nosuch.cat"), 2, "not found"),
    Case("missing-mask", _align("--source-mask", "nosuch.fits"), 2, "not found"),
    Case("missing-weight", _align("--source-weight", "nosuch.fits"), 2, "not found"),
    Case("missing-transform", _apply("nosuch.json"), 2, "not found"),
    Case("apply-missing-image", ("apply", "t.json", "nosuch.fits", "-o", "out.fits"), 2,
         "not found"),
    Case("source-is-a-directory", _src("adir"), 2, "adir"),
    Case("template-is-a-directory", _tmpl("adir"), 2, "adir"),
    Case("output-in-missing-directory", ("align", "source.fits", "-t", "template.fits", "-o",
                                         "nodir/out.fits"), 2, "nodir"),
    Case("output-is-the-source", ("align", "source.fits", "-t", "template.fits", "-o",
                                  "source.fits", "--overwrite"), 2, "source.fits"),
    Case("output-is-the-template", ("align", "source.fits", "-t", "template.fits", "-o",
                                    "template.fits", "--overwrite"), 2, "template.fits"),
    Case("output-links-to-the-source", ("align", "source.fits", "-t", "template.fits", "-o",
                                        "link.fits", "--overwrite"), 2, "link.fits"),
    Case("output-exists", ("align", "source.fits", "-t", "template.fits", "-o",
                           "existing.fits"), 2, "exists"),
    Case("saved-transform-onto-the-source", _align("--save-transform", "source.fits"), 2,
         "source.fits"),
    Case("saved-transform-in-missing-directory", _align("--save-transform", "nodir/t.json"),
         2, "nodir"),
    Case("report-onto-the-source", _align("--report", "source.fits"), 2, "source.fits"),
    Case("report-in-missing-directory", _align("--report", "nodir/r.json"), 2, "nodir"),
    Case("report-is-the-output", _align("--report", "out.fits"), 2, "out.fits"),
    Case("plot-onto-the-source", _align("--plot", "source.fits", "--overwrite"), 2,
         "source.fits"),
    Case("plot-in-missing-directory", _align("--plot", "nodir/p.png"), 2, "nodir"),
    Case("plot-exists", _align("--plot", "existing.png"), 2, "exists"),
    Case("plot-format-unknown", _align("--plot", "diag.fitz"), 2, "image format"),
    Case("apply-onto-its-transform", ("apply", "t.json", "source.fits", "-o", "t.json",
                                      "--overwrite"), 2, "t.json"),
    Case("apply-onto-its-image", ("apply", "t.json", "source.fits", "-o", "source.fits",
                                  "--overwrite"), 2, "source.fits"),
    # --- unreadable or unusable image files
    Case("empty-source", _src("empty.fits"), 2, "empty.fits"),
    Case("empty-template", _tmpl("empty.fits"), 2, "empty.fits"),
    Case("junk-source", _src("junk.fits"), 2, "junk.fits"),
    Case("text-source", _src("text.fits"), 2, "text.fits"),
    Case("png-bytes-as-source", _src("picture.png"), 2, "picture.png"),
    Case("truncated-source", _src("truncated.fits"), 2, "truncated"),
    Case("truncated-template", _tmpl("truncated.fits"), 2, "truncated"),
    Case("header-claims-200000-squared", _src("huge_header.fits"), 2, "200000"),
    Case("compressed-claims-200000-squared", _src("huge_compressed.fits"), 2, "200000"),
    Case("one-dimensional-source", _src("oned.fits"), 2, "2-D"),
    Case("cube-source", _src("cube.fits"), 2, "2-D"),
    Case("tiny-source", _src("tiny.fits"), 2, "too small"),
    Case("all-nan-source", _src("allnan.fits"), 2, "no finite pixels"),
    Case("all-nan-template", _tmpl("allnan.fits"), 2, "no finite pixels"),
    Case("all-inf-source", _src("allinf.fits"), 2, "no finite pixels"),
    Case("constant-source", _src("constant.fits"), 1, "usable stars"),
    Case("zeros-template", _tmpl("zeros.fits"), 1, "usable stars"),
    Case("noise-only-source", _src("noise.fits"), 1, "usable stars"),
    Case("unrelated-field", _src("unrelated.fits"), 1, ""),
    Case("no-overlap", _src("disjoint.fits"), 1, ""),
    Case("table-only-fits", _src("table.fits"), 2, "image"),
    Case("missing-extension-number", _align("--source-ext", "5"), 2, "5"),
    Case("missing-extension-name", _align("--source-ext", "NOPE"), 2, "NOPE"),
    Case("template-extension-missing", _align("--template-ext", "3"), 2, "3"),
    Case("apply-image-junk", ("apply", "t.json", "junk.fits", "-o", "out.fits"), 2, "junk"),
    # --- masks and weights
    Case("mask-wrong-shape", _align("--source-mask", "small.fits"), 2, "shape"),
    Case("mask-junk", _align("--source-mask", "junk.fits"), 2, "junk.fits"),
    Case("mask-missing-extension", _align("--source-mask", "mask.fits", "--mask-ext", "4"), 2,
         "4"),
    Case("weight-wrong-shape", _align("--source-weight", "small.fits"), 2, "shape"),
    Case("weight-negative-variance", _align("--source-weight", "negative.fits"), 2,
         "negative"),
    Case("weight-type-unknown", _align("--source-weight", "weight.fits", "--weight-type",
                                       "sigma2"), 2, "weight"),
    # --- catalogues
    Case("catalogue-empty", _align("--source-cat", "empty.cat"), 2, "empty.cat"),
    Case("catalogue-binary-junk", _align("--source-cat", "junk.cat"), 2, "junk.cat"),
    Case("catalogue-without-x", _align("--source-cat", "nox.cat"), 2, "X_IMAGE"),
    Case("catalogue-three-stars", _align("--source-cat", "three.cat"), 1, "usable stars"),
    Case("catalogue-nan-positions", _align("--source-cat", "nan.cat"), 1, "usable stars"),
    Case("catalogue-is-an-image", _align("--source-cat", "source.fits"), 2, "catalogue"),
    Case("catalogue-flux-column-missing", _align("--source-cat", "source.cat", "--flux-col",
                                                 "FLUX_NOPE"), 2, "FLUX_NOPE"),
    Case("template-catalogue-without-grid", ("align", "source.fits", "--template-cat",
                                             "template.cat", "-o", "out.fits"), 2,
         "output-shape"),
    # --- transform files
    Case("transform-junk", _apply("junk.json"), 2, "junk.json"),
    Case("transform-empty", _apply("empty.json"), 2, "empty.json"),
    Case("transform-a-list", _apply("list.json"), 2, "transform file"),
    Case("transform-nan-matrix", _apply("nan_matrix.json"), 2, "matrix"),
    Case("transform-inf-matrix", _apply("inf_matrix.json"), 2, "matrix"),
    Case("transform-singular-matrix", _apply("singular.json"), 2, "singular"),
    Case("transform-nan-distortion", _apply("nan_coeffs.json"), 2, "coeffs"),
    Case("transform-coeffs-do-not-fit-degree", _apply("short_coeffs.json"), 2, "coeffs"),
    Case("transform-wrong-format", _apply("wrong_format.json"), 2, "transform file"),
    Case("transform-future-version", _apply("future.json"), 2, "version"),
    Case("transform-missing-matrix", _apply("no_matrix.json"), 2, "matrix"),
    Case("transform-huge-template-shape", _apply("huge_shape.json"), 2, "200000"),
    Case("transform-negative-template-shape", _apply("negative_shape.json"), 2,
         "template_shape"),
    Case("transform-huge-degree", _apply("huge_degree.json"), 2, "degree"),
    # --- options
    Case("interp-order-too-high", _align("--interp-order", "9"), 2, "0..5"),
    Case("interp-order-negative", _align("--interp-order", "-1"), 2, "0..5"),
    Case("sep-thresh-negative", _align("--sep-thresh", "-1"), 2, "sep_thresh"),
    Case("sep-thresh-not-a-number", _align("--sep-thresh", "abc"), 2, "--sep-thresh"),
    Case("threads-zero", _align("--threads", "0"), 2, "threads"),
    Case("output-shape-zero", _align("--output-shape", "0", "0"), 2, "output-shape"),
    Case("output-shape-negative", _align("--output-shape", "-5", "10"), 2, "output-shape"),
    Case("output-shape-200000-squared", _align("--output-shape", "200000", "200000"), 2,
         "GiB"),
    Case("cval-not-a-number", _align("--cval", "x"), 2, "--cval"),
    Case("backend-unknown", _align("--backend", "opencl"), 2, "opencl"),
    Case("backend-cupy-unavailable", _align("--backend", "cupy"), 2, "cupy"),
    Case("transform-model-unknown", _align("--transform", "projective"), 2, "transform"),
    Case("distortion-model-unknown", _align("--distortion", "zernike"), 2, "distortion"),
    Case("spline-order-too-high", _align("--spline-order", "12"), 2, "spline_order"),
    Case("match-distance-negative", _align("--max-match-dist", "-3"), 2, "max_match_dist"),
    Case("min-matches-zero", _align("--min-n-match", "0"), 2, "min_n_match"),
    Case("option-unknown", _align("--bogus"), 2, "--bogus"),
    Case("overwrite-and-skip-existing", _align("--overwrite", "--skip-existing"), 2,
         "--skip-existing"),
    Case("workers-zero", ("align", "source.fits", "source2.fits", "-t", "template.fits",
                          "-o", "outdir", "--workers", "0"), 2, "workers"),
    Case("no-arguments", ("align",), 2, "sources"),
    Case("max-memory-zero", _align("--max-memory", "0"), 2, "max_memory"),
    Case("max-memory-below-the-run", _align("--max-memory", "0.0001"), 2, "max_memory"),
    Case("apply-output-shape-zero", _apply("t.json", "--output-shape", "0", "5"), 2,
         "output-shape"),
    Case("apply-output-shape-200000-squared", _apply("t.json", "--output-shape", "200000",
                                                     "200000"), 2, "GiB"),
    Case("apply-interp-order-too-high", _apply("t.json", "--interp-order", "7"), 2, "0..5"),
    # --- batches
    Case("batch-output-is-a-file", ("align", "source.fits", "source2.fits", "-t",
                                    "template.fits", "-o", "existing.fits"), 2, "directory"),
    Case("batch-output-names-collide", ("align", "source.fits", "adir/source.fits", "-t",
                                        "template.fits", "-o", "outdir"), 2, "source"),
    Case("batch-source-twice", ("align", "source.fits", "source.fits", "-t", "template.fits",
                                "-o", "outdir"), 2, "source.fits"),
    Case("batch-with-a-missing-source", ("align", "source.fits", "nosuch.fits", "-t",
                                         "template.fits", "-o", "outdir"), 2, "nosuch.fits"),
    Case("batch-with-a-mask-option", ("align", "source.fits", "source2.fits", "-t",
                                      "template.fits", "-o", "outdir", "--source-mask",
                                      "mask.fits"), 2, "--source-mask"),
    Case("batch-output-would-replace-a-source", ("align", "adir/x.fits", "adir/x_aligned.fits",
                                                 "-t", "template.fits", "-o", "adir",
                                                 "--overwrite"), 2, "x_aligned.fits"),
    Case("demo-outdir-is-a-file", ("demo", "--outdir", "existing.fits"), 2, "existing.fits"),
]


# ------------------------------------------------------------------------ the world


def _write(path: Path, data: np.ndarray, header: dict | None = None) -> None:
    from astropy.io import fits

    fits.PrimaryHDU(data, header=fits.Header(header or {})).writeto(path)


def _sextractor(path: Path, xy: np.ndarray, flux: np.ndarray) -> None:
    head = ["#   1 NUMBER                 Running object number",
            "#   2 X_IMAGE                Object position along x                    [pixel]",
            "#   3 Y_IMAGE                Object position along y                    [pixel]",
            "#   4 FLUX_AUTO              Flux within a Kron-like elliptical aperture [count]",
            "#   5 FWHM_IMAGE             FWHM assuming a gaussian core              [pixel]",
            "#   6 FLAGS                  Extraction flags"]
    rows = [f"{k + 1:6d} {x + 1:10.4f} {y + 1:10.4f} {f:12.3f} 3.000 0"
            for k, ((x, y), f) in enumerate(zip(xy, flux, strict=True))]
    path.write_text("\n".join(head + rows) + "\n")


def _transform_variants(good: dict) -> dict[str, object]:
    """Broken copies of a valid transform file, each wrong in one field."""
    def edit(fn):
        d = json.loads(json.dumps(good))
        fn(d)
        return d

    t = "transform"
    return {
        "nan_matrix.json": edit(lambda d: d[t]["matrix"][0].__setitem__(0, "nan")),
        "inf_matrix.json": edit(lambda d: d[t]["matrix"][1].__setitem__(2, "inf")),
        "singular.json": edit(lambda d: d[t].__setitem__("matrix", [[0, 0, 1], [0, 0, 2]])),
        "nan_coeffs.json": edit(lambda d: d[t]["coeffs"][0][0].__setitem__(0, "nan")),
        "short_coeffs.json": edit(lambda d: d[t]["coeffs"][0].pop()),
        "wrong_format.json": edit(lambda d: d.__setitem__("format", "spalipy")),
        "future.json": edit(lambda d: d.__setitem__("version", 99)),
        "no_matrix.json": edit(lambda d: d[t].pop("matrix")),
        "huge_shape.json": edit(lambda d: d.__setitem__("template_shape", [200000, 200000])),
        "negative_shape.json": edit(lambda d: d.__setitem__("template_shape", [-4, 100])),
        "huge_degree.json": edit(lambda d: d.__setitem__("degree", 10**6)),
        "list.json": [1, 2, 3],
    }


def build_world(root: Path, pair, unrelated, disjoint) -> None:
    """Every input of the corpus, good and bad, in one folder."""
    from astropy.io import fits

    import gpualign
    from gpualign.detect import detect

    rng = np.random.default_rng(7)
    shape = pair.template.shape
    _write(root / "template.fits", pair.template)
    _write(root / "source.fits", pair.source, {"OBJECT": "SRC"})
    _write(root / "source2.fits", pair.source)
    _write(root / "existing.fits", np.zeros((8, 8), np.float32))
    (root / "existing.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "adir").mkdir()
    _write(root / "adir" / "source.fits", pair.source)
    _write(root / "adir" / "x_aligned.fits", np.zeros((8, 8), np.float32))
    _write(root / "adir" / "x.fits", pair.source)
    os.symlink("source.fits", root / "link.fits")
    result = gpualign.align(pair.source, pair.template, backend="numpy")
    assert result.solution.degree >= 2  # the transform file has distortion coefficients
    result.solution.save(root / "t.json")
    # broken image files
    (root / "empty.fits").write_bytes(b"")
    (root / "junk.fits").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "text.fits").write_text("SIMPLE  = this is not a FITS file\n")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (root / "truncated.fits").write_bytes((root / "template.fits").read_bytes()[:8000])
    huge = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 200000,
                        "NAXIS2": 200000})
    (root / "huge_header.fits").write_bytes(huge.tostring().encode() + bytes(2880))
    comp = root / "huge_compressed.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(pair.source)]).writeto(comp)
    raw = comp.read_bytes()
    for key, n in (("ZNAXIS1", shape[1]), ("ZNAXIS2", shape[0])):
        old = f"{key:8s}= {n:20d}".encode()
        assert old in raw, key
        raw = raw.replace(old, f"{key:8s}= {200000:20d}".encode())
    comp.write_bytes(raw)
    _write(root / "oned.fits", np.arange(500, dtype=np.float32))
    _write(root / "cube.fits", np.zeros((3, *shape), np.float32))
    _write(root / "tiny.fits", pair.source[:4, :4].copy())
    _write(root / "allnan.fits", np.full(shape, np.nan, np.float32))
    _write(root / "allinf.fits", np.full(shape, np.inf, np.float32))
    _write(root / "constant.fits", np.full(shape, 100.0, np.float32))
    _write(root / "zeros.fits", np.zeros(shape, np.float32))
    _write(root / "noise.fits", rng.normal(100, 10, shape).astype(np.float32))
    _write(root / "unrelated.fits", unrelated)
    _write(root / "disjoint.fits", disjoint)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("x", "E", array=np.arange(5.0))])]).writeto(root / "table.fits")
    _write(root / "small.fits", np.zeros((40, 40), np.float32))
    _write(root / "mask.fits", np.zeros(shape, np.uint8))
    _write(root / "weight.fits", np.ones(shape, np.float32))
    _write(root / "negative.fits", np.full(shape, -1.0, np.float32))
    # catalogues
    for name, img in (("source", pair.source), ("template", pair.template)):
        cat = detect(img)
        _sextractor(root / f"{name}.cat", cat.xy, cat.flux)
    (root / "empty.cat").write_text("")
    (root / "junk.cat").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "nox.cat").write_text("#   1 NUMBER  n\n#   2 FLUX_AUTO  f\n1 10.0\n2 20.0\n")
    cat = detect(pair.source)
    _sextractor(root / "three.cat", cat.xy[:3], cat.flux[:3])
    _sextractor(root / "nan.cat", np.full((40, 2), np.nan), np.ones(40))
    # transform files
    good = json.loads((root / "t.json").read_text())
    for name, d in _transform_variants(good).items():
        (root / name).write_text(json.dumps(d))
    (root / "junk.json").write_text("{ this is not json")
    (root / "empty.json").write_text("")


# ------------------------------------------------------------------------ the driver


def manifest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): file -> sha256, link -> target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run_case(case: Case, world: Path, logs: Path, limit: int) -> dict:
    out, err = logs / f"{case.name}.out", logs / f"{case.name}.err"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the case's process
        code = 3
        try:
            os.chdir(world)
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(
                resource.RLIMIT_AS)[1]))
            for fd, path in ((1, out), (2, err)):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            from gpualign.cli import main

            try:
                main(list(case.args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    hung = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > CASE_TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hung, status = True, -1
            break
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status) if status != -1 else None
    return {"code": code, "hung": hung, "seconds": time.monotonic() - t0,
            "stdout": out.read_text(errors="replace"), "stderr": err.read_text(errors="replace")}


def drive(root: Path) -> None:
    """Run every case against ``root/world``, restoring it after any case that changed it."""
    world, pristine, logs = root / "world", root / "pristine", root / "logs"
    logs.mkdir(exist_ok=True)
    before = manifest(world)
    shutil.copytree(world, pristine, symlinks=True)
    import gpualign.cli  # noqa: F401  (imported once; each case is a fork)

    limit = (virtual_memory_size() or 0) + HEADROOM_BYTES
    results = {}
    for case in CASES:
        res = _run_case(case, world, logs, limit)
        after = manifest(world)
        res["new"] = sorted(set(after) - set(before))
        res["gone"] = sorted(set(before) - set(after))
        res["changed"] = sorted(k for k in set(before) & set(after) if before[k] != after[k])
        if res["new"] or res["gone"] or res["changed"]:
            shutil.rmtree(world)
            shutil.copytree(pristine, world, symlinks=True)
        results[case.name] = res
    (root / "results.json").write_text(json.dumps(results, indent=1))


# ------------------------------------------------------------------------ the tests

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, dict]:
    """Build the inputs, run every case in the driver, and return what each did."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "world").mkdir()
    m = make_mapping(source_shape=SHAPE, template_shape=SHAPE, shift=(4.3, -2.1),
                     rotation_deg=12.0, corner_distortion_px=2.0)
    pair = simulate_pair(SHAPE, mapping=m, n_stars=250, seed=31)
    unrelated = simulate_pair(SHAPE, n_stars=250, seed=32).source
    far = make_mapping(source_shape=SHAPE, template_shape=SHAPE, shift=(3000.0, 0.0))
    disjoint = simulate_pair(SHAPE, mapping=far, n_stars=250, seed=33).source
    build_world(root / "world", pair, unrelated, disjoint)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, __file__, str(root)], check=True, env=env,
                   timeout=CASE_TIMEOUT_S * 4 + 10 * len(CASES))
    return json.loads((root / "results.json").read_text())


def test_the_corpus_is_large_and_unique():
    assert len(CASES) >= 80
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case, corpus):
    res = corpus[case.name]
    assert not res["hung"], f"hung for {res['seconds']:.0f} s"
    lines = res["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpualign: error: "), res["stderr"]
    assert "Traceback" not in res["stderr"]
    assert case.words.lower() in lines[0].lower(), lines[0]
    assert res["code"] == case.code, (res["code"], lines[0])
    assert not res["new"], f"left behind: {res['new']}"
    assert not res["changed"] and not res["gone"], f"inputs changed: {res['changed']}"


if __name__ == "__main__":
    drive(Path(sys.argv[1]))
