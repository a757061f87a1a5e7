"""The WCS prior (issue 11, item 3): extreme scale ratios, thin overlaps, wrong WCSs.

Simulated pairs are rendered from one sky catalogue through two TAN WCSs
(``sky_pair`` of gpualign/_simulate/_sky.py: stars dN/dF ~ F^-1.75,
sky per pixel scaled with the pixel's area, Poisson and read noise), so the truth is
the true WCSs' relation; seeds the tests do not use. Cases:

* ``10x``, ``15x``, ``20x``: a 5"/px 384^2 source (seeing 9") onto a 0.5, 0.34 or
  0.25"/px template (1024^2, 1024^2, 2048^2; seeing 1"), the source's centre ~100" off;
  with the WCSs (``wcs_prior="auto"``) and without (``"off"``, blind; the pixels are
  the same);
* ``20x-reverse``: the fine image (0.25"/px, 2048^2) registered onto the coarse one;
* ``overlap5``: two 0.5"/px 1024^2 images overlapping by 5% (offset along x);
* wrong WCSs on the 15x and a same-scale pair: the source's WCS off by 3 arcmin or
  2 deg, rotated 30 deg, or mirrored: must fall back to blind matching and never give
  a wrong mapping;
* real data: 2MASS Ks (source) and J (template) tiles of the Galactic Centre cut from
  one 5"/px grid (tests/data/gc_2mass_*.fits) with their own WCSs (CRPIX moved),
  overlapping by 5% and 10% of the template's columns (shift of 360 / 342 px).

Accuracy: landing errors (template px) of the 30 brightest common stars
(``benchmarks/_metrics.py``), RMS / max; for the scale cases also in source px. Peers:
spalipy 3.5.5 and astroalign 2.6.2 (pixels only: they read no WCS) through
``run_peers.py`` in the peers' virtual environment; SExtractor + SCAMP + SWarp
(``run_scamp.py``, when installed) given the same WCSs as gpualign.

Usage::

    python benchmarks/bench_wcs_prior.py [--out DIR] [--seeds 200 201] [--peers VENV]

Writes ``benchmarks/results/wcs_prior.md`` (and ``wcs_prior.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import FITSFixedWarning

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _metrics  # noqa: E402
from _common import cell as common_cell  # noqa: E402
from _common import commit_id, run_peers, run_scamp, scamp_cell  # noqa: E402
from _common import solve_and_score as _run  # noqa: E402

from gpualign._simulate._sky import sky_pair, wrong_wcs  # noqa: E402
from gpualign.detect import detect_many  # noqa: E402

SEEDS = (200, 201, 202)
N_STARS = 30
#: name: (template shape, template "/px, source shape, source "/px, extra sky_pair kwargs)
SCALE_CASES = {
    "10x": ((1024, 1024), 0.5, (384, 384), 5.0, {}),
    "15x": ((1024, 1024), 0.34, (384, 384), 5.0, {}),
    "20x": ((2048, 2048), 0.25, (384, 384), 5.0, {}),
}
OFFSET = (60.0, -80.0)
WRONG = ("3arcmin", "2deg", "rot30", "mirror")


def _write_field(folder: Path, template, source, stars_t, stars_s, description: str,
                 headers: tuple = (None, None)) -> None:
    """The field for the peers (pixels) and SCAMP (``headers``: the images' WCSs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, header in (("template", template, headers[0]),
                               ("source", source, headers[1])):
        if header is not None and not isinstance(header, fits.Header):
            header = header.to_header()  # a WCS
        fits.writeto(folder / f"{name}.fits", np.asarray(data, np.float32), header,
                     overwrite=True)
    truth = {"name": folder.name, "description": description,
             "template_shape": list(np.shape(template)), "source_shape": list(np.shape(source)),
             "stars_template": np.asarray(stars_t).tolist(),
             "stars_source": np.asarray(stars_s).tolist()}
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))


def _sim_stars(pair, n: int = N_STARS) -> tuple[np.ndarray, np.ndarray]:
    st = pair.bright_common(n)
    sx, sy = pair.truth(*st.T)
    return st, np.column_stack([sx, sy])


def scale_cases(out: Path, seeds) -> list[dict]:
    recs = []
    for name, (t_shape, t_scale, s_shape, s_scale, kw) in SCALE_CASES.items():
        for seed in seeds:
            p = sky_pair(t_shape, t_scale, s_shape, s_scale, seed=seed, offset_arcsec=OFFSET,
                         **kw)
            st, ss = _sim_stars(p)
            folder = out / f"{name}-s{seed}"
            _write_field(folder, p.template, p.source, st, ss,
                         f"{s_scale}\"/px onto {t_scale}\"/px", (p.template_wcs, p.source_wcs))
            ratio = s_scale / t_scale
            rec = {"field": folder.name, "case": name, "ratio": ratio,
                   "wcs": _run((p.source, p.source_wcs), (p.template, p.template_wcs), st, ss),
                   "no_wcs": _run(p.source, p.template, st, ss)}
            if name == "15x":
                for kind in WRONG:
                    rec[f"wrong-{kind}"] = _run((p.source, wrong_wcs(p.source_wcs, kind)),
                                                (p.template, p.template_wcs), st, ss)
            recs.append(rec)
            print(folder.name, cell(rec["wcs"]), cell(rec["no_wcs"]), flush=True)
            if name == "20x":  # the fine image onto the coarse one
                rev = {"field": f"20x-reverse-s{seed}", "case": "20x-reverse", "ratio": 1 / ratio}
                _write_field(out / rev["field"], p.source, p.template, ss, st,
                             f"{t_scale}\"/px onto {s_scale}\"/px", (p.source_wcs, p.template_wcs))
                rev["wcs"] = _run((p.template, p.template_wcs), (p.source, p.source_wcs), ss, st)
                rev["no_wcs"] = _run(p.template, p.source, ss, st)
                recs.append(rev)
                print(rev["field"], cell(rev["wcs"]), cell(rev["no_wcs"]), flush=True)
    return recs


def overlap_cases(out: Path, seeds) -> list[dict]:
    recs = []
    for seed in seeds:
        # 0.5"/px 1024^2: the source's centre 0.95 * 512" east of the template's: a 5%
        # overlap strip of ~51 columns.
        p = sky_pair((1024, 1024), 0.5, (1024, 1024), 0.5, seed=seed,
                     offset_arcsec=(0.95 * 512.0, 0.0), rotation_deg=2.0,
                     fwhm_arcsec=(1.5, 1.5), n_per_arcmin2=60.0)
        st, ss = _sim_stars(p)
        folder = out / f"overlap5-s{seed}"
        _write_field(folder, p.template, p.source, st, ss, "5% overlap, 0.5\"/px",
                     (p.template_wcs, p.source_wcs))
        rec = {"field": folder.name, "case": "overlap5",
               "wcs": _run((p.source, p.source_wcs), (p.template, p.template_wcs), st, ss),
               "no_wcs": _run(p.source, p.template, st, ss)}
        # same-scale wrong WCSs (full overlap, where blind matching works)
        q = sky_pair((768, 768), 0.5, (768, 768), 0.5, seed=seed, offset_arcsec=(20.0, -10.0),
                     rotation_deg=5.0, fwhm_arcsec=(1.5, 1.5))
        qt, qs = _sim_stars(q)
        rec["same-scale"] = _run((q.source, q.source_wcs), (q.template, q.template_wcs), qt, qs)
        for kind in WRONG:
            rec[f"same-scale-wrong-{kind}"] = _run((q.source, wrong_wcs(q.source_wcs, kind)),
                                                   (q.template, q.template_wcs), qt, qs)
        recs.append(rec)
        print(folder.name, cell(rec["wcs"]), cell(rec["no_wcs"]), flush=True)
    return recs


def _twomass(name: str, x0: int, x1: int) -> tuple[np.ndarray, fits.Header]:
    with fits.open(ROOT / "tests" / "data" / name) as hdul:
        data = np.array(hdul[0].data[:, x0:x1], dtype=np.float32)
        header = hdul[0].header.copy()
    header["CRPIX1"] -= x0
    header["NAXIS1"] = x1 - x0
    return data, header


def twomass_cases(out: Path) -> list[dict]:
    recs = []
    template, thdr = _twomass("gc_2mass_j.fits", 0, 380)
    for pct, x0 in ((5, 360), (10, 342)):
        source, shdr = _twomass("gc_2mass_k.fits", x0, 721)
        # evaluation stars: the brightest J detections inside the overlap (5 px margin)
        cat = detect_many([(template, None)], sep_thresh=5.0)[0]
        ok = (cat.x > x0 + 5) & (cat.x < 374) & (cat.y > 5) & (cat.y < 714)
        st = cat.xy[ok][:N_STARS]
        ss = st - [x0, 0.0]
        folder = out / f"2mass-overlap{pct}"
        _write_field(folder, template, source, st, ss, f"2MASS J/Ks tiles, {pct}% overlap",
                     (thdr, shdr))
        rec = {"field": folder.name, "case": f"2mass-{pct}%",
               "wcs": _run((source, shdr), (template, thdr), st, ss),
               "no_wcs": _run(source, template, st, ss)}
        recs.append(rec)
        print(folder.name, cell(rec["wcs"]), cell(rec["no_wcs"]), flush=True)
    return recs


def cell(rec: dict | None, ratio: float | None = None) -> str:
    """:func:`_common.cell`, with the stars off the image, the RMS in source px and the
    prior used."""
    text = common_cell(rec)
    if rec is None or rec.get("status") != "ok" or rec.get("rms_px") is None:
        return text
    if rec.get("n_nonfinite"):
        text += f" ({rec['n_nonfinite']} off)"
    if ratio is not None and ratio > 1:
        text += f" ({rec['rms_px'] / ratio:.4f} src px)"
    if rec.get("prior") not in (None, "wcs"):
        text += f" [{rec['prior']}]"
    return text


def _verdict(rec: dict) -> str:
    """A wrong-WCS outcome: fell back and right, failed safely, or WRONG."""
    if rec["status"] != "ok":
        return f"no solution ({rec['message'].split(':')[0]}): safe"
    ok = rec["max_px"] is not None and rec["max_px"] < 1.0 and not rec.get("n_nonfinite")
    return f"{rec['prior']}, {cell(rec)}" + ("" if ok else " WRONG")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "wcs_prior")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    ap.add_argument("--peers", type=Path, default=ROOT / ".venv-peers",
                    help="the peers' virtual environment (benchmarks/setup_peers.sh)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", FITSFixedWarning)
    recs = scale_cases(args.out, args.seeds) + overlap_cases(args.out, args.seeds)
    recs += twomass_cases(args.out)
    have_peers = (args.peers / "bin" / "python").exists()
    peers = run_peers(args.peers, args.out, args.out.parent / "wcs_prior-peers.jsonl") \
        if have_peers else {}
    scamp = run_scamp(args.out, args.out.parent / "wcs_prior-scamp.jsonl")
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "wcs_prior.jsonl", "w") as fh:
        for rec in recs:
            rec["peers"] = {t: peers.get((rec["field"], t)) for t in ("spalipy", "astroalign")}
            rec["scamp"] = scamp.get(rec["field"])
            fh.write(json.dumps(rec, default=str) + "\n")

    def peer(rec, tool):
        return cell(rec["peers"][tool]) if have_peers else "no peers venv"

    lines = [
        "# WCS prior: extreme scale ratios, thin overlaps, wrong WCSs",
        "",
        f"Run: {_metrics.now()} | {_metrics.machine()} | NumPy backend | commit {commit_id()} "
        "| script `benchmarks/bench_wcs_prior.py` (seeds "
        f"{', '.join(map(str, args.seeds))}, not used by the tests).",
        "",
        "Landing errors of the 30 brightest common stars, template px, RMS / max (for a "
        "coarse source also the RMS in source px). `with WCS`: gpualign's defaults "
        "(`wcs_prior=\"auto\"`), the inputs as `(array, WCS)`; `without WCS`: the bare "
        "arrays (blind quad matching). The peers read pixels only (no WCS). SCAMP: "
        "SExtractor + SCAMP + SWarp (`run_scamp.py`; Debian's source-extractor 2.25, "
        "scamp 2.10) given the same WCSs as gpualign; its time is the four programs' "
        "wall time.",
        "",
        "## Scale ratios and thin overlaps",
        "",
        "| field | gpualign with WCS | matches | fit residual RMS (coarser image px) | "
        "gpualign without WCS | spalipy 3.5.5 | astroalign 2.6.2 | SCAMP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        ratio = r.get("ratio") or 1.0
        w, s = r["wcs"], r["scamp"]  # the fit's residuals are in template px
        scamp = scamp_cell(s, None if s is None else cell(s, ratio))
        per_star = f"{w['fit_rms_px'] / max(ratio, 1.0):.3f}" if w["status"] == "ok" else "-"
        lines.append(f"| {r['field']} | {cell(w, ratio)} | {w.get('n_match', '-')} | "
                     f"{per_star} | {cell(r['no_wcs'], ratio)} | {peer(r, 'spalipy')} | "
                     f"{peer(r, 'astroalign')} | {scamp} |")
    lines += [
        "",
        "A coarse source limits the accuracy in template px: the centroids of the matched "
        "stars in the 5\"/px image (9\" seeing: photon noise of the fainter matched "
        "stars, and about one faint sky star per PSF blended in) scatter by 0.05-0.12 "
        "source px (the fit's residual RMS in the coarse image's px; about 0.05 px "
        "when the fine image is registered onto the coarse one). A similarity fitted to N "
        "such stars lands about that times sqrt(4/N): 0.003-0.035 source px, i.e. "
        "0.05-0.5 template px at 10-20x, which is what is measured (e.g. 15x-s201: 0.116 x "
        "sqrt(4/27) = 0.045, measured 0.034 source px); more or brighter common stars, "
        "not a better fit, would lower it. The 2MASS tiles: every common star lies within "
        "20 (5%) or 38 (10%) px of an edge of one tile, where J and Ks centroids differ by "
        "0.1-0.3 px for half of them (truncated, blended), so 11-30 matches fix the shift "
        "to 0.03-0.2 px. "
        "Registering the fine image onto the coarse one (`20x-reverse`) gives the same "
        "accuracy in the coarse image's pixels (0.005-0.006 px). The numbers are of the "
        "working tree at the commit above, with other changes of issue 11 in progress.",
    ]
    lines += ["", "## Wrong WCSs (the source's): never a wrong mapping", "",
              "| field | WCS | outcome (prior used, landing RMS / max template px) |",
              "|---|---|---|"]
    for r in recs:
        for key in [k for k in r if k.startswith(("wrong-", "same-scale"))]:
            lines.append(f"| {r['field']} | {key} | {_verdict(r[key])} |")
    times = [r["wcs"]["solve_s"] for r in recs if r["wcs"]["status"] == "ok"]
    lines += ["", f"Solve time with the WCS prior (detection included): median "
              f"{np.median(times):.2f} s, max {max(times[1:]):.2f} s after the process's "
              f"first solve ({times[0]:.2f} s: imports, cold caches).", ""]
    if not have_peers:
        lines += [f"The peers were not run: no virtual environment at {args.peers}.", ""]
    (args.results / "wcs_prior.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
