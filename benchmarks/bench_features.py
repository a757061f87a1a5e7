"""Issue-4 numbers side by side: NaN spreading and flux conservation, gpualign vs peers.

Two simulated pairs with known truth (gpualign._simulate), written as FITS:

* ``nan4``: 1024^2, rotation 10 deg, a source with ~4% NaN pixels (bad columns and
  blobs). Reported: the fraction of the output (within the source's image) that is
  NaN, against the NaN area's image under the true mapping grown by the order-3
  kernel's reach (the bound of issue 4).
* ``scale1.2``: the source's pixels 1.2x smaller than the template's. Reported: the
  aperture-flux ratio output / source of bright isolated stars (sep.sum_circle with a
  background annulus); 1 keeps flux, 1/1.2^2 = 0.694 keeps surface brightness.

gpualign runs with its defaults (and ``conserve_flux=True`` for the flux row);
spalipy 3.5.5 and astroalign 2.6.2 run from the peers' venv on the same files.

Usage::

    python benchmarks/bench_features.py [--peers-python .venv-peers/bin/python]
        [--out benchmarks/results/features.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import sep
from astropy.io import fits

import gpualign
from gpualign._simulate import make_mapping, simulate_pair

HERE = Path(__file__).resolve().parent
PEER_CODE = {
    "spalipy": (
        "import sys, numpy as np; from astropy.io import fits; import spalipy\n"
        "s = fits.getdata(sys.argv[1]).astype(np.float64)\n"
        "t = fits.getdata(sys.argv[2]).astype(np.float64)\n"
        "sp = spalipy.Spalipy(s, template_data=t, output_shape=t.shape); sp.align()\n"
        "assert not sp.alignment_failed, 'alignment failed'\n"
        "fits.writeto(sys.argv[3], np.asarray(sp.aligned_data, np.float32))\n"
    ),
    "astroalign": (
        "import sys, numpy as np; from astropy.io import fits; import astroalign\n"
        "s = fits.getdata(sys.argv[1]).astype(np.float32)\n"
        "t = fits.getdata(sys.argv[2]).astype(np.float32)\n"
        "aligned, _ = astroalign.register(s, t)\n"
        "fits.writeto(sys.argv[3], np.asarray(aligned, np.float32))\n"
    ),
}


def make_nan_pair(seed: int = 5):
    """A 1024^2 pair whose source has ~4% NaN pixels (columns and blobs)."""
    m = make_mapping(source_shape=(1024, 1024), template_shape=(1024, 1024),
                     shift=(6.2, -3.1), rotation_deg=10.0)
    pair = simulate_pair((1024, 1024), (1024, 1024), mapping=m, n_stars=1500, seed=seed)
    rng = np.random.default_rng(seed)
    bad = np.zeros(pair.source.shape, bool)
    for x in rng.choice(1000, 12, replace=False):
        bad[:, x:x + 2] = True
    for _ in range(8):
        cy, cx = rng.integers(50, 970, 2)
        yy, xx = np.ogrid[:1024, :1024]
        bad |= (yy - cy) ** 2 + (xx - cx) ** 2 < 25**2
    source = pair.source.astype(np.float32).copy()
    source[bad] = np.nan
    return pair, source, bad


def nan_expectation(pair, bad: np.ndarray, reach: int = 3):
    """(inside, expected_nan) on the template grid from the true mapping."""
    ny, nx = pair.template.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    sx, sy = pair.mapping(xx.ravel(), yy.ravel())
    sx, sy = sx.reshape(ny, nx), sy.reshape(ny, nx)
    h, w = bad.shape
    inside = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    grown = ndi.binary_dilation(bad, iterations=reach, structure=np.ones((3, 3)))
    ix = np.clip(np.rint(sx).astype(int), 0, w - 1)
    iy = np.clip(np.rint(sy).astype(int), 0, h - 1)
    exact = bad[iy, ix] & inside
    bound = grown[iy, ix] & inside
    return inside, exact, bound


def flux_ratio(pair, image: np.ndarray, scale: float, n: int = 30) -> float:
    """Summed aperture flux of bright isolated stars, output / source."""
    order = np.argsort(-pair.flux)
    r = 12.0
    tx, ty = pair.template_xy[order].T
    sx, sy = pair.source_xy[order].T
    th, tw = pair.template.shape
    sh, sw = pair.source.shape
    m = 30
    ok = (tx > m) & (tx < tw - m) & (ty > m) & (ty < th - m)
    ok &= (sx > m) & (sx < sw - m) & (sy > m) & (sy < sh - m)
    idx = np.flatnonzero(ok)[:n]
    out = np.ascontiguousarray(image, dtype=np.float64)
    src = np.ascontiguousarray(pair.source, dtype=np.float64)
    fo, _, _ = sep.sum_circle(out, tx[idx], ty[idx], r, bkgann=(r + 4, r + 10))
    fs, _, _ = sep.sum_circle(src, sx[idx], sy[idx], r * scale, bkgann=(r * scale + 4,
                                                                         r * scale + 10))
    return float(np.nansum(fo) / np.nansum(fs))


def run_peer(tool: str, peers_python: str, src: Path, tmpl: Path, out: Path):
    """The peer's aligned image, or the last line of its error."""
    proc = subprocess.run([peers_python, "-c", PEER_CODE[tool], str(src), str(tmpl), str(out)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"exit {proc.returncode}")[:120]
    return fits.getdata(out).astype(np.float64), ""


def main(argv: list[str] | None = None) -> int:
    """Run both cases for gpualign and the peers and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-python", default=str(HERE.parent / ".venv-peers/bin/python"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "features.md")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # NaN spreading
        pair, source, bad = make_nan_pair()
        inside, exact, bound = nan_expectation(pair, bad)
        fits.writeto(tmp / "nan_src.fits", source)
        fits.writeto(tmp / "nan_tmpl.fits", pair.template.astype(np.float32))
        n_in = inside.sum()
        head = (f"source NaN {bad.mean():.1%}; expected output NaN {exact.sum() / n_in:.1%} "
                f"(bound with the 3 px reach: {bound.sum() / n_in:.1%})")
        res = gpualign.align(source, pair.template)
        images = {"gpualign": (res.data, "")}
        for tool in PEER_CODE:
            images[tool] = run_peer(tool, args.peers_python, tmp / "nan_src.fits",
                                    tmp / "nan_tmpl.fits", tmp / f"nan_{tool}.fits")
        for tool, (img, err) in images.items():
            if img is None:
                rows.append(("nan4", tool, "failed: " + err))
                continue
            nan = ~np.isfinite(img) & inside
            rows.append(("nan4", tool, f"output NaN {nan.sum() / n_in:.1%}; outside the "
                         f"bound {(nan & ~bound).sum() / n_in:.2%}; expected NaN left "
                         f"finite {(exact & ~nan).sum() / n_in:.2%}"))
        # flux conservation
        m = make_mapping(source_shape=(620, 620), template_shape=(512, 512), scale=1.2,
                         rotation_deg=17.0, shift=(4.1, -3.3))
        pair = simulate_pair((512, 512), (620, 620), mapping=m, n_stars=300,
                             fwhm_template=3.0, fwhm_source=3.6, flux_range=(2e4, 2e6),
                             seed=21)
        fits.writeto(tmp / "sc_src.fits", pair.source.astype(np.float32))
        fits.writeto(tmp / "sc_tmpl.fits", pair.template.astype(np.float32))
        images = {
            "gpualign conserve_flux": (gpualign.align(pair.source, pair.template,
                                                      conserve_flux=True).data, ""),
            "gpualign default": (gpualign.align(pair.source, pair.template).data, ""),
        }
        for tool in PEER_CODE:
            images[tool] = run_peer(tool, args.peers_python, tmp / "sc_src.fits",
                                    tmp / "sc_tmpl.fits", tmp / f"sc_{tool}.fits")
        for tool, (img, err) in images.items():
            rows.append(("scale1.2", tool, "failed: " + err if img is None
                         else f"aperture flux ratio {flux_ratio(pair, img, 1.2):.4f}"))
    table = ["| case | tool | result |", "|---|---|---|"]
    table += [f"| {c} | {t} | {r} |" for c, t, r in rows]
    text = (f"# Issue-4 features vs peers (bench_features.py)\n\nnan4: {head}\n\n"
            + "\n".join(table) + "\n")
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
