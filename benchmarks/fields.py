"""Named, seeded benchmark fields written as FITS with their truth.

Each field is a folder ``<out>/<name>/`` holding ``template.fits``, ``source.fits``
and ``truth.json``: the true template -> source mapping (gpualign._simulate
TrueMapping.to_dict()), the generator parameters, and the evaluation stars
(``stars_template``: template positions of the brightest stars inside both
images; ``stars_source``: their true source positions).  The runners need only
truth.json and the FITS files, so they do not need gpualign to score a tool.

Usage::

    python benchmarks/fields.py OUT_DIR [--only NAME ...] [--force] [--list]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from gpualign._simulate import bright_overlap_stars, make_mapping, simulate_pair

N_EVAL_STARS = 200

# name -> (description, make_mapping kwargs, simulate_pair kwargs)
# shapes are (height, width); "shape" is the template shape, "source_shape" the source's.
FIELDS: dict[str, tuple[str, dict, dict]] = {}


def _add(name, description, mapping, sim):
    FIELDS[name] = (description, mapping, sim)


_U = dict(shape=(2048, 2048), n_stars=3000)
_add(
    "undistorted-shift",
    "pure shift (137.4, -81.7) px",
    dict(shift=(137.4, -81.7)),
    dict(_U, seed=11),
)
for _i, (_rot, _scale) in enumerate(
    [(45.0, 1.0), (137.0, 1.0), (271.5, 1.0), (30.0, 0.5), (200.0, 2.0), (331.0, 0.75), (95.0, 1.5)]
):
    _add(
        f"undistorted-rot{_rot:g}-scale{_scale:g}",
        f"rotation {_rot:g} deg, scale {_scale:g}, shift (21.3, -12.8)",
        dict(rotation_deg=_rot, scale=_scale, shift=(21.3, -12.8)),
        dict(_U, seed=20 + _i, fwhm_source=max(1.8, 3.0 * _scale)),
    )
_add(
    "wide4k",
    "4096^2, rotation 7 deg, radial distortion moving the corners 20 px",
    dict(rotation_deg=7.0, shift=(35.2, -18.6), corner_distortion_px=20.0),
    dict(shape=(4096, 4096), n_stars=10000, seed=40),
)
_add(
    "wide8k",
    "8192^2, rotation 3 deg, radial distortion moving the corners 25 px",
    dict(rotation_deg=3.0, shift=(-52.7, 41.3), corner_distortion_px=25.0),
    dict(shape=(8192, 8192), n_stars=20000, seed=41),
)
_add(
    "crowded",
    "40k stars in 2048^2, rotation 12 deg",
    dict(rotation_deg=12.0, shift=(14.6, 9.1)),
    dict(shape=(2048, 2048), n_stars=40000, seed=42),
)
_add(
    "seeing2x",
    "source FWHM 6 px vs template 3 px, rotation 60 deg",
    dict(rotation_deg=60.0, shift=(-8.3, 17.7)),
    dict(shape=(2048, 2048), n_stars=3000, fwhm_template=3.0, fwhm_source=6.0, seed=43),
)
_add(
    "overlap25",
    "shift of half the image in x and y (25% overlap), rotation 5 deg",
    dict(rotation_deg=5.0, shift=(1024.0, 1024.0)),
    dict(shape=(2048, 2048), n_stars=3000, seed=44),
)
_add(
    "few8",
    "about 8 bright common stars, 1024^2, rotation 30 deg",
    dict(rotation_deg=30.0, shift=(60.5, -40.2)),
    dict(shape=(1024, 1024), n_stars=9, flux_range=(5e3, 3e5), seed=49),
)
_add(
    "shape",
    "template 2048x2048, source 1536x2560 (h x w), rotation 15 deg, scale 1.1",
    dict(rotation_deg=15.0, scale=1.1, shift=(12.0, -7.5)),
    dict(shape=(2048, 2048), source_shape=(1536, 2560), n_stars=3000, fwhm_source=3.3, seed=46),
)
_add(
    "flip",
    "mirror-flipped source (negative determinant), rotation 30 deg",
    dict(rotation_deg=30.0, flip=True, shift=(-15.5, 22.25)),
    dict(shape=(2048, 2048), n_stars=3000, seed=47),
)
_add(
    "hotpix",
    "60 static hot pixels + 3 bad columns, stars shifted (40.3, -25.7), 0.5 deg",
    dict(rotation_deg=0.5, shift=(40.3, -25.7)),
    dict(shape=(2048, 2048), n_stars=3000, n_hot_pixels=60, n_bad_columns=3, seed=48),
)


def make_field(name: str, out: Path, force: bool = False) -> Path:
    """Generate one field into ``out/name`` (skipped when it exists unless ``force``)."""
    description, mkw, skw = FIELDS[name]
    folder = out / name
    if (folder / "truth.json").exists() and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    skw = dict(skw)
    shape = tuple(skw.pop("shape"))
    source_shape = tuple(skw.pop("source_shape", shape))
    mapping = make_mapping(source_shape=source_shape, template_shape=shape, **mkw)
    t0 = time.perf_counter()
    pair = simulate_pair(shape, source_shape, mapping=mapping, **skw)
    stars = bright_overlap_stars(pair, n=N_EVAL_STARS)
    sx, sy = mapping(stars[:, 0], stars[:, 1])
    for kind, data in (("template", pair.template), ("source", pair.source)):
        tmp = folder / f".{kind}.fits.tmp"
        fits.writeto(tmp, data, overwrite=True)
        tmp.replace(folder / f"{kind}.fits")
    truth = {
        "name": name,
        "description": description,
        "template_shape": list(shape),
        "source_shape": list(source_shape),
        "mapping": mapping.to_dict(),
        "make_mapping": mkw,
        "simulate_pair": {k: list(v) if isinstance(v, tuple) else v for k, v in skw.items()},
        "n_sky_stars": int(len(pair.flux)),
        "n_common_stars": int(np.sum(pair.in_template & pair.in_source)),
        "n_hot_pixels": int(len(pair.hot_pixel_xy)),
        "stars_template": stars.tolist(),
        "stars_source": np.column_stack([sx, sy]).tolist(),
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    print(
        f"{name}: {shape} -> {source_shape}, {truth['n_common_stars']} common stars, "
        f"{len(stars)} eval stars, {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "out",
        type=Path,
        nargs="?",
        default=Path(__file__).resolve().parent.parent / "bench-out" / "fields",
    )
    ap.add_argument("--only", nargs="*", help="field names (default: all)")
    ap.add_argument("--force", action="store_true", help="regenerate existing fields")
    ap.add_argument("--list", action="store_true", help="list the fields and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (desc, _, _) in FIELDS.items():
            print(f"{name:32s} {desc}")
        return 0
    names = args.only or list(FIELDS)
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        ap.error(f"unknown field(s): {unknown}")
    for name in names:
        make_field(name, args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
