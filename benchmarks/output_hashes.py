"""Hash gpualign's outputs on the benchmark fields, to prove a refactor keeps them bit-identical.

Run once with the code before a change and once after, then ``--compare`` the two files: every
plane of every output FITS is either "identical" (same name, shape, dtype and sha256 of its data
bytes) or "differs", and the table lists the header keywords whose values differ or that exist
on one side only.  Hashes cannot say by how much a plane differs; rerun both versions on that
field and subtract the images for that.

For every field under ``--fields`` (``benchmarks/fields.py OUT`` writes them) and every variant,
the CLI runs in a fresh temporary directory:

* ``default``: ``gpualign align SOURCE -t TEMPLATE -o out.fits``
* ``simple``:  the same plus ``--simple``
* ``extras``:  the same plus ``--conserve-flux --save-transform t.json``

One JSON line per (field, variant) records the exit code; for every HDU of out.fits its name,
shape, on-disk dtype, the sha256 of its data bytes (as stored in the file, big-endian) and of its
header block, and its header as keyword -> value (a keyword that occurs more than once, such as
HISTORY, maps to the list of its values); the sha256 of the whole file; and for ``extras`` the
sha256 of the transform JSON with its ``timings`` key removed (re-serialised with sorted keys, so
only values count, not formatting), plus one sha256 per top-level key.  Each line also holds the
label, date, host, the executable and the git commit of the code it runs (``--commit``, or found
from the checkout the executable imports gpualign from) and ``gpualign info``.  A run longer than
``--timeout`` (120 s) is killed and recorded as a timeout; the field's remaining variants are then
skipped.

Usage::

    python benchmarks/output_hashes.py --gpualign .venv/bin/gpualign --fields /work/bench-fields \\
        --out benchmarks/results/hashes-after.jsonl --label after [--only NAME ...]
    python benchmarks/output_hashes.py --compare benchmarks/results/hashes-before.jsonl \\
        benchmarks/results/hashes-after.jsonl

``--compare`` prints a markdown table and exits 0 when everything is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "simple": ["--simple"],
    "extras": ["--conserve-flux", "--save-transform", "t.json"],
}
TRANSFORM_FILE = "t.json"
OUTPUT_FILE = "out.fits"
CHUNK = 1 << 22

# numpy dtype of the stored data, by BITPIX (FITS data are big-endian)
_BITPIX_DTYPE = {8: "uint8", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _sha256_range(path: Path, start: int, nbytes: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        left = nbytes
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                raise OSError(f"{path}: file ends {left} bytes before the data does")
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    return _sha256_range(path, 0, path.stat().st_size)


def _json_value(value):
    """A header value as JSON (floats keep every bit: json writes repr)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    return repr(value)  # astropy's Undefined and anything unexpected


_COMMENTARY = {"HISTORY", "COMMENT", ""}


def header_dict(header) -> dict:
    """Every card as keyword -> value; HISTORY, COMMENT, blank or repeated keywords -> list."""
    counts: dict[str, int] = {}
    for card in header.cards:
        counts[card.keyword] = counts.get(card.keyword, 0) + 1
    out: dict = {}
    for card in header.cards:
        value = _json_value(card.value)
        if counts[card.keyword] > 1 or card.keyword in _COMMENTARY:
            out.setdefault(card.keyword, []).append(value)
        else:
            out[card.keyword] = value
    return out


def hash_fits(path: Path) -> dict:
    """Per-HDU name, shape, dtype, data and header hashes, read from the bytes on disk."""
    from astropy.io import fits

    hdus = []
    with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
        for index, hdu in enumerate(hdul):
            info = hdu.fileinfo()
            hdr_start, data_start = info["hdrLoc"], info["datLoc"]
            bitpix = hdu.header.get("BITPIX")
            naxes = [hdu.header.get(f"NAXIS{i}", 0) for i in range(1, hdu.header["NAXIS"] + 1)]
            shape = list(reversed(naxes))
            nbytes = hdu.size  # data bytes, without the padding to 2880
            hdus.append(
                {
                    "index": index,
                    "name": hdu.name,
                    "shape": shape,
                    "dtype": _BITPIX_DTYPE.get(bitpix, f"BITPIX={bitpix}"),
                    "nbytes": int(nbytes),
                    "data_sha256": _sha256_range(path, data_start, nbytes),
                    "header_sha256": _sha256_range(path, hdr_start, data_start - hdr_start),
                    "header": header_dict(hdu.header),
                }
            )
    return {"hdus": hdus, "file_sha256": _sha256_file(path)}


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def hash_transform(path: Path) -> dict:
    """sha256 of the transform JSON without "timings", and of each top-level key."""
    d = json.loads(path.read_text())
    rec = {"transform_keys": list(d)}
    d.pop("timings", None)
    rec["transform_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()
    rec["transform_key_sha256"] = {
        k: hashlib.sha256(_canonical(v)).hexdigest() for k, v in d.items()
    }
    return rec


def _python_of(exe: Path) -> str | None:
    """The interpreter in the executable's shebang, if it is a Python script."""
    try:
        with open(exe, "rb") as fh:
            first = fh.readline(400).decode(errors="replace").strip()
    except OSError:
        return None
    if first.startswith("#!") and "python" in first:
        return first[2:].split()[0]
    return None


def find_checkout(exe: Path) -> dict:
    """Where the executable imports gpualign from, and that checkout's commit."""
    rec: dict = {}
    where = exe.resolve().parent
    python = _python_of(exe)
    if python:
        try:
            with tempfile.TemporaryDirectory() as cwd:  # not the caller's cwd (on sys.path)
                out = subprocess.run(
                    [python, "-c", "import gpualign; print(gpualign.__file__)"],
                    cwd=cwd,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            if out.returncode == 0 and out.stdout.strip():
                where = Path(out.stdout.strip().splitlines()[-1]).resolve().parent
                rec["gpualign_package"] = str(where)
        except (OSError, subprocess.SubprocessError):
            pass

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        rec["commit"] = commit
        rec["commit_from"] = "checkout of " + str(git("rev-parse", "--show-toplevel"))
        status = git("status", "--porcelain", "--untracked-files=no")
        rec["dirty"] = bool(status)
    return rec


def gpualign_info(exe: Path) -> dict:
    """``gpualign info`` as key -> value."""
    try:
        with tempfile.TemporaryDirectory() as cwd:
            out = subprocess.run(
                [str(exe), "info"], cwd=cwd, capture_output=True, text=True, timeout=120
            )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    info = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            info[key.strip()] = value.strip()
    return info


def run_variant(exe: Path, field: Path, variant: str, timeout: float) -> dict:
    """One CLI run in a fresh temporary directory, and the hashes of what it wrote."""
    rec: dict = {}
    with tempfile.TemporaryDirectory(prefix="gpualign-hash-") as tmp:
        cmd = [
            str(exe),
            "align",
            str(field / "source.fits"),
            "-t",
            str(field / "template.fits"),
            "-o",
            OUTPUT_FILE,
            *VARIANTS[variant],
        ]
        rec["command"] = " ".join(cmd[1:]).replace(str(field) + os.sep, "")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            rec.update(status="timeout", exit_code=None, message=f"killed after {timeout:g} s")
            return rec
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        rec["exit_code"] = proc.returncode
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            rec["message"] = " | ".join(tail)
        out = Path(tmp) / OUTPUT_FILE
        rec["status"] = "ok" if proc.returncode == 0 and out.exists() else "failed"
        if out.exists():
            rec.update(hash_fits(out))
        transform = Path(tmp) / TRANSFORM_FILE
        if variant == "extras" and transform.exists():
            rec.update(hash_transform(transform))
    return rec


def measure(args: argparse.Namespace) -> int:
    exe = Path(args.gpualign)
    if not exe.exists():
        found = shutil.which(args.gpualign)
        if not found:
            sys.exit(f"no executable {args.gpualign}")
        exe = Path(found)
    exe = exe.absolute()
    fields = sorted(p.parent for p in Path(args.fields).glob("*/truth.json"))
    if args.only:
        missing = sorted(set(args.only) - {f.name for f in fields})
        if missing:
            sys.exit(f"no such fields under {args.fields}: {', '.join(missing)}")
        fields = [f for f in fields if f.name in args.only]
    if not fields:
        sys.exit(f"no fields under {args.fields} (run benchmarks/fields.py first)")

    checkout = find_checkout(exe)
    meta = {
        "label": args.label,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "executable": str(exe),
        "commit": args.commit or checkout.get("commit", "?"),
        "commit_from": "--commit" if args.commit else checkout.get("commit_from", "not found"),
        "dirty": None if args.commit else checkout.get("dirty"),
        "gpualign_package": checkout.get("gpualign_package"),
        "info": gpualign_info(exe),
    }
    print(
        f"# {meta['label']}: commit {meta['commit']} ({meta['commit_from']}), "
        f"{len(fields)} fields x {len(args.variants)} variants -> {args.out}",
        file=sys.stderr,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    n_ok = 0
    with open(args.out, "w") as fh:
        for field in fields:
            timed_out = None
            inputs = {n: _sha256_file(field / n) for n in ("source.fits", "template.fits")}
            for variant in args.variants:
                if timed_out:
                    rec = {"status": "skipped", "exit_code": None, "message": timed_out}
                else:
                    rec = run_variant(exe, field, variant, args.timeout)
                    if rec["status"] == "timeout":
                        timed_out = f"skipped: {variant} ran past {args.timeout:g} s"
                rec = {"field": field.name, "variant": variant, **rec, "inputs": inputs, **meta}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                n_ok += rec["status"] == "ok"
                planes = ", ".join(
                    f"{h['name']} {h['data_sha256'][:10]}" for h in rec.get("hdus", [])
                )
                print(
                    f"{field.name:30s} {variant:8s} {rec['status']:8s} "
                    f"{rec.get('wall_s', 0):6.1f}s {planes} {rec.get('message', '')[:100]}",
                    file=sys.stderr,
                    flush=True,
                )
    n_all = len(fields) * len(args.variants)
    print(
        f"# {n_ok}/{n_all} runs ok in {time.perf_counter() - t_all:.0f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0 if n_ok == n_all else 1


# ---------------------------------------------------------------- compare


def _load(path: str) -> dict[tuple[str, str], dict]:
    recs = {}
    with open(path) as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                recs[(rec["field"], rec["variant"])] = rec
    return recs


def _header_diff(a: dict, b: dict) -> list[str]:
    """Keywords whose values differ, or that exist on one side only (marked <A / >B)."""
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        label = key or "(blank)"
        if key not in b:
            out.append(f"{label} (A only)")
        elif key not in a:
            out.append(f"{label} (B only)")
        elif a[key] != b[key]:
            out.append(label)
    return out


def _plane_cell(ha: dict | None, hb: dict | None) -> str:
    if ha is None and hb is None:
        return ""
    if ha is None:
        return "B only"
    if hb is None:
        return "A only"
    notes = [f"{k} {ha[k]} vs {hb[k]}" for k in ("shape", "dtype") if ha.get(k) != hb.get(k)]
    if not notes and ha["data_sha256"] == hb["data_sha256"]:
        return "identical"
    return "differs" + (f" ({', '.join(notes)})" if notes else "")


def _sampler(info: dict) -> str:
    """Backend, CPU sampler (without its path), NumPy and SciPy from ``gpualign info``."""
    sampler = re.sub(r"\s*\(.*\)$", "", info.get("cpu_sampler", "?"))
    return (
        f"{info.get('backend', '?')}, sampler {sampler}, "
        f"numpy {info.get('numpy', '?')}, scipy {info.get('scipy', '?')}"
    )


def compare(path_a: str, path_b: str) -> int:
    a, b = _load(path_a), _load(path_b)
    keys = sorted(set(a) | set(b))
    first_a = next(iter(a.values()), {})
    first_b = next(iter(b.values()), {})
    print(
        f"A: {path_a} (label {first_a.get('label')!r}, commit {first_a.get('commit')}, "
        f"{first_a.get('date')}, {first_a.get('host')}, {_sampler(first_a.get('info', {}))})"
    )
    print(
        f"B: {path_b} (label {first_b.get('label')!r}, commit {first_b.get('commit')}, "
        f"{first_b.get('date')}, {first_b.get('host')}, {_sampler(first_b.get('info', {}))})"
    )
    if _sampler(first_a.get("info", {})) != _sampler(first_b.get("info", {})):
        print("\n**Warning: A and B ran with a different backend, CPU sampler or NumPy/SciPy.**")
    changed = sorted(
        {
            key[0]
            for key in set(a) & set(b)
            if "inputs" in a[key] and "inputs" in b[key] and a[key]["inputs"] != b[key]["inputs"]
        }
    )
    if changed:
        print(f"\n**Warning: different input FITS (fields regenerated?): {', '.join(changed)}**")
    print()

    planes: list[str] = []
    for rec in list(a.values()) + list(b.values()):
        for h in rec.get("hdus", []):
            if h["name"] not in planes:
                planes.append(h["name"])
    has_transform = any("transform_sha256" in r for r in list(a.values()) + list(b.values()))
    cols = ["field", "variant", "exit A/B", *planes]
    if has_transform:
        cols.append("transform JSON")
    cols.append("header keywords that differ")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))

    n_same = 0
    for key in keys:
        ra, rb = a.get(key), b.get(key)
        row = [key[0], key[1]]
        if ra is None or rb is None:
            row.append("missing in " + ("A" if ra is None else "B"))
            row += [""] * (len(cols) - 3)
            print("| " + " | ".join(row) + " |")
            continue
        same = ra.get("status") == rb.get("status") == "ok"
        row.append(
            f"{ra.get('exit_code', ra.get('status'))}/{rb.get('exit_code', rb.get('status'))}"
        )
        if ra.get("status") != "ok" or rb.get("status") != "ok":
            row[-1] += f" ({ra.get('status')}/{rb.get('status')})"
        ha = {h["name"]: h for h in ra.get("hdus", [])}
        hb = {h["name"]: h for h in rb.get("hdus", [])}
        if [h["name"] for h in ra.get("hdus", [])] != [h["name"] for h in rb.get("hdus", [])]:
            same = False
        for plane in planes:
            cell = _plane_cell(ha.get(plane), hb.get(plane))
            same &= cell in ("identical", "")
            row.append(cell)
        if has_transform:
            ta, tb = ra.get("transform_sha256"), rb.get("transform_sha256")
            if ta is None and tb is None:
                cell = ""
            elif ta == tb:
                cell = "identical"
            elif ta is None or tb is None:
                cell = "A only" if tb is None else "B only"
            else:
                ka, kb = ra["transform_key_sha256"], rb["transform_key_sha256"]
                diff = [
                    k for k in list(ka) + [k for k in kb if k not in ka] if ka.get(k) != kb.get(k)
                ]
                cell = "differs: " + ", ".join(diff)
            same &= cell in ("identical", "")
            row.append(cell)
        diffs = []
        for plane in planes:
            pa, pb = ha.get(plane), hb.get(plane)
            if pa is None or pb is None:
                continue
            prefix = "" if pa["index"] == 0 else f"{plane}:"
            kw = _header_diff(pa["header"], pb["header"])
            if not kw and pa["header_sha256"] != pb["header_sha256"]:
                kw = ["(same values; card text, comments or order differ)"]
            diffs += [prefix + k for k in kw]
        same &= not diffs
        row.append(", ".join(diffs) if diffs else "none")
        n_same += same
        print("| " + " | ".join(row) + " |")
    print(
        f"\n{n_same} of {len(keys)} (field, variant) pairs identical in every plane, "
        "transform and header."
    )
    return 0 if n_same == len(keys) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Hash gpualign's outputs on the benchmark fields, or compare two such runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage::")[1],
    )
    ap.add_argument("--gpualign", help="gpualign executable to measure (e.g. .venv/bin/gpualign)")
    ap.add_argument("--fields", type=Path, help="folder of fields written by fields.py")
    ap.add_argument("--out", type=Path, help="JSON lines to write (overwritten)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these fields")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--label", default="", help="stored with every line, e.g. before / after")
    ap.add_argument(
        "--commit",
        help="git commit of the measured code (default: found from "
        "the checkout the executable imports gpualign from)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds per run; a field whose run takes longer is skipped",
    )
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.jsonl", "B.jsonl"),
        help="print a markdown table of the differences between two runs",
    )
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not (args.gpualign and args.fields and args.out):
        ap.error("--gpualign, --fields and --out are needed (or --compare A B)")
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
