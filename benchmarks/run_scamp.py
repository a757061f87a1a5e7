"""Run the SExtractor + SCAMP + SWarp pipeline on the benchmark fields.

Needs the Debian/Ubuntu packages ``source-extractor``, ``scamp`` and ``swarp``
(binaries ``source-extractor``, ``scamp``, ``SWarp``) and astropy; never imports
gpualign.  Appends JSON lines (tool ``scamp+swarp``) in the format of run_peers.py.

The pipeline is given what it needs and the other tools do not: world
coordinates.  Where the field's images carry a celestial WCS (the WCS-prior
benchmark), those are used; otherwise the template gets a TAN WCS (0.5"/px); the source gets a prior
WCS built from the affine part of the known truth, perturbed like a typical
header WCS (0.3 deg, 0.3% scale, ~8 px; ``PRIOR_ERROR``); SCAMP must find the
rest, including the radial distortion.  Untimed preparation writes these headers; the
timed part (``wall_s``) is the four tool runs: SExtractor on both images
(FITS_LDAC, DETECT_THRESH 5 like the others), SCAMP on the source catalogue
with the template catalogue as the astrometric reference (DISTORT_DEGREES 3,
its default), SWarp of the source onto the template grid (output header =
the template's WCS, LANCZOS3, no background subtraction).  ``peak_rss_mb`` is
the largest of the four processes.  Accuracy: the two coordinate ramps are
SWarped the same way with BILINEAR resampling and no flux scaling, and scored
like every other tool (benchmarks/_metrics.py).

Usage::

    python benchmarks/run_scamp.py [--fields DIR] [--out FILE] [--only FIELD ...] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _metrics  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

SEX, SCAMP = "source-extractor", "scamp"
SWARP = shutil.which("SWarp") and "SWarp" or "swarp"
#: The three programs the pipeline runs.
PROGRAMS = (SEX, SCAMP, SWARP)
SEX_SHARE = Path("/usr/share/source-extractor")
PIXSCALE_DEG = 0.5 / 3600.0
PARAMS = """XWIN_IMAGE
YWIN_IMAGE
ERRAWIN_IMAGE
ERRBWIN_IMAGE
ERRTHETAWIN_IMAGE
XWIN_WORLD
YWIN_WORLD
ERRAWIN_WORLD
ERRBWIN_WORLD
ERRTHETAWIN_WORLD
FLUX_AUTO
FLUXERR_AUTO
MAG_AUTO
MAGERR_AUTO
FLUX_RADIUS
ELONGATION
FLAGS
"""


def template_wcs(shape) -> fits.Header:
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, shape[1], shape[0]
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 2.2
    h["CRPIX1"], h["CRPIX2"] = (shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -PIXSCALE_DEG, 0.0, 0.0, PIXSCALE_DEG
    h["EQUINOX"], h["RADESYS"] = 2000.0, "ICRS"
    return h


# a realistic prior is not exact: this error is applied to the affine truth (in source pixels)
PRIOR_ERROR = {"rotation_deg": 0.3, "scale": 1.003, "shift": (6.5, -4.2)}


def source_prior_wcs(tpl: fits.Header, matrix, shape) -> fits.Header:
    """Source WCS = template WCS composed with the inverse of the (perturbed) affine truth."""
    th = np.deg2rad(PRIOR_ERROR["rotation_deg"])
    err = PRIOR_ERROR["scale"] * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a = err @ np.asarray(matrix, dtype=np.float64)[:, :2]
    t = err @ np.asarray(matrix, dtype=np.float64)[:, 2] + np.asarray(PRIOR_ERROR["shift"])
    crpix_t = np.array([tpl["CRPIX1"], tpl["CRPIX2"]])
    cd_t = np.array([[tpl["CD1_1"], tpl["CD1_2"]], [tpl["CD2_1"], tpl["CD2_2"]]])
    crpix_s = a @ (crpix_t - 1.0) + t + 1.0
    cd_s = cd_t @ np.linalg.inv(a)
    h = tpl.copy()
    h["NAXIS1"], h["NAXIS2"] = shape[1], shape[0]
    h["CRPIX1"], h["CRPIX2"] = float(crpix_s[0]), float(crpix_s[1])
    h["CD1_1"], h["CD1_2"] = float(cd_s[0, 0]), float(cd_s[0, 1])
    h["CD2_1"], h["CD2_2"] = float(cd_s[1, 0]), float(cd_s[1, 1])
    return h


def own_wcs(field: Path, tshape, sshape) -> tuple[fits.Header | None, fits.Header | None]:
    """The images' own celestial WCSs, when the field's files carry them (the WCS-prior
    benchmark: SCAMP gets the same headers as gpualign), else (None, None)."""
    from astropy.wcs import WCS

    out = []
    for name, shape in (("template", tshape), ("source", sshape)):
        header = fits.getheader(field / f"{name}.fits")
        if "CTYPE1" not in header:
            return None, None
        h = fits.Header()
        h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, shape[1], shape[0]
        h.update(WCS(header).celestial.to_header())
        out.append(h)
    return out[0], out[1]


def truth_matrix(truth: dict) -> np.ndarray:
    """The affine part of the truth (template -> source px): the mapping's matrix; for a
    pure offset (adjacent tiles on one pixel grid) the shift; for unrelated fields, which
    have no truth, the identity (the prior a wrong header would give: SCAMP must then
    fail, or its result is a false match)."""
    if "mapping" in truth:
        return np.asarray(truth["mapping"]["matrix"], np.float64)
    shift = np.asarray(truth.get("offset", (0.0, 0.0)), np.float64)
    return np.array([[1.0, 0.0, -shift[0]], [0.0, 1.0, -shift[1]]])


def _wcs_only(h: fits.Header) -> fits.Header:
    out = h.copy()
    for k in ("NAXIS", "NAXIS1", "NAXIS2"):
        out.remove(k, ignore_missing=True)
    return out


def _write_head(path: Path, header: fits.Header) -> None:
    path.write_text("\n".join(str(c) for c in header.cards) + "\nEND\n")


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{cmd[0]} exit {proc.returncode}: {tail}")
    return proc


def _swarp(image: Path, out: Path, out_header: fits.Header, work: Path, ramp: bool) -> np.ndarray:
    _write_head(out.with_suffix(".head"), out_header)
    weight = out.with_suffix(".weight.fits")
    cmd = [
        SWARP,
        str(image),
        "-c",
        str(work / "swarp.conf"),
        "-IMAGEOUT_NAME",
        str(out),
        "-WEIGHTOUT_NAME",
        str(weight),
        "-RESAMPLE_DIR",
        str(work),
        "-SUBTRACT_BACK",
        "N",
        "-WRITE_XML",
        "N",
        "-VERBOSE_TYPE",
        "QUIET",
        "-COMBINE",
        "Y",
    ]
    if ramp:
        cmd += ["-RESAMPLING_TYPE", "BILINEAR", "-FSCALASTRO_TYPE", "NONE"]
    _run(cmd, work)
    if not ramp:
        return None
    data = fits.getdata(out).astype(np.float64)
    data[fits.getdata(weight) <= 0] = np.nan
    return data


def worker(field: Path, work: Path) -> dict:
    truth = _metrics.load_truth(field)
    rec = {"field": truth["name"], "tool": "scamp+swarp"}
    tshape, sshape = tuple(truth["template_shape"]), tuple(truth["source_shape"])
    # untimed preparation: the images with their (prior) WCS, the default configurations
    htpl, hsrc = own_wcs(field, tshape, sshape)
    if htpl is None:
        htpl = template_wcs(tshape)
        hsrc = source_prior_wcs(htpl, truth_matrix(truth), sshape)
    for name, hdr in (("template", htpl), ("source", hsrc)):
        data = fits.getdata(field / f"{name}.fits")
        fits.writeto(work / f"{name}.fits", data, _wcs_only(hdr), overwrite=True)
    (work / "sex.param").write_text(PARAMS)
    for exe, conf in ((SEX, "default.sex"), (SCAMP, "scamp.conf"), (SWARP, "swarp.conf")):
        (work / conf).write_text(_run([exe, "-d"], work).stdout)

    t0 = time.perf_counter()
    for name in ("template", "source"):
        _run(
            [
                SEX,
                f"{name}.fits",
                "-c",
                "default.sex",
                "-CATALOG_NAME",
                f"{name}.cat",
                "-CATALOG_TYPE",
                "FITS_LDAC",
                "-PARAMETERS_NAME",
                "sex.param",
                "-FILTER_NAME",
                str(SEX_SHARE / "default.conv"),
                "-DETECT_THRESH",
                "5",
                "-ANALYSIS_THRESH",
                "5",
                "-SATUR_LEVEL",
                "1e9",
                "-GAIN",
                "2",
                "-CHECKIMAGE_TYPE",
                "NONE",
                "-VERBOSE_TYPE",
                "QUIET",
            ],
            work,
        )
    _run(
        [
            SCAMP,
            "source.cat",
            "-c",
            "scamp.conf",
            "-ASTREF_CATALOG",
            "FILE",
            "-ASTREFCAT_NAME",
            "template.cat",
            "-ASTREFCENT_KEYS",
            "XWIN_WORLD,YWIN_WORLD",
            "-ASTREFERR_KEYS",
            "ERRAWIN_WORLD,ERRBWIN_WORLD,ERRTHETAWIN_WORLD",
            "-ASTREFMAG_KEY",
            "MAG_AUTO",
            "-ASTREFMAGERR_KEY",
            "MAGERR_AUTO",
            "-SOLVE_PHOTOM",
            "N",
            "-CHECKPLOT_TYPE",
            "NONE",
            "-WRITE_XML",
            "N",
            "-VERBOSE_TYPE",
            "QUIET",
        ],
        work,
    )
    if not (work / "source.head").exists():
        raise RuntimeError("SCAMP wrote no source.head")
    _swarp(work / "source.fits", work / "aligned.fits", htpl, work, ramp=False)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    rec.update(
        wall_s=wall,
        core_s=wall,
        peak_rss_mb=rss,
        version=_run([SCAMP, "-v"], work).stdout.strip().split("\n")[0],
    )

    ramps = _metrics.source_ramps(sshape)
    resampled = []
    for axis, ramp in zip("xy", ramps, strict=True):
        img = work / f"ramp_{axis}.fits"
        fits.writeto(img, ramp, _wcs_only(hsrc), overwrite=True)
        shutil.copy(work / "source.head", work / f"ramp_{axis}.head")
        resampled.append(_swarp(img, work / f"ramp_{axis}_out.fits", htpl, work, ramp=True))
    errors = _metrics.landing_errors(
        _metrics.RampMap(*resampled), truth["stars_template"], truth["stars_source"]
    )
    rec.update(_metrics.error_stats(errors), status="ok", message="")
    return rec


def run_one(field: Path, timeout: float, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"scamp-{field.name}-", dir=keep))
    cmd = [sys.executable, __file__, "--worker", str(field), str(work)]
    # its own process group: a timeout kills the programs it started too (a SCAMP left
    # running would take a core from every later measurement)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if lines:
            return json.loads(lines[-1])
        tail = " | ".join((err or out).strip().splitlines()[-3:])
        msg = f"worker exit {proc.returncode}: {tail}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        msg = f"timeout after {timeout:.0f} s"
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return {"field": field.name, "tool": "scamp+swarp", "status": "failed", "message": msg}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark SExtractor + SCAMP + SWarp.")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--fields", type=Path, default=HERE.parent / "bench-out" / "fields")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scamp.jsonl")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--keep", type=Path, help="keep the work folders under this folder")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)

    if args.worker:
        field, work = map(Path, args.worker)
        try:
            rec = worker(field, work)
        except Exception as exc:
            traceback.print_exc()
            rec = {
                "field": field.name,
                "tool": "scamp+swarp",
                "status": "failed",
                "message": f"{type(exc).__name__}: {exc}",
            }
        print(json.dumps(rec))
        return 0

    missing = [b for b in PROGRAMS if shutil.which(b) is None]
    if missing:
        print(f"missing {missing}: apt-get install source-extractor scamp swarp", file=sys.stderr)
        return 1
    fields = sorted(p.parent for p in args.fields.glob("*/truth.json"))
    if args.only:
        fields = [f for f in fields if f.name in args.only]
    if not fields:
        ap.error(f"no fields under {args.fields} (run benchmarks/fields.py first)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": _metrics.now(), "machine": _metrics.machine()}
    with open(args.out, "a" if args.append else "w") as fh:
        for field in fields:
            rec = {**run_one(field, args.timeout, args.keep), **meta}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            rms = rec.get("rms_px")
            print(
                f"{field.name:30s} scamp+swarp     {rec['status']:6s} "
                f"rms={rms if rms is None else round(rms, 4)} "
                f"wall={rec.get('wall_s', 0):.1f}s rss={rec.get('peak_rss_mb', 0):.0f}MB "
                f"{rec.get('message', '')[:80]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
