"""Write or check ``cupy_api_snapshot.json``: the public API of the supported CuPy releases.

The strict CPU stand-in (:mod:`strict_cupy`) exposes only the names of the pinned release
(``PINNED_DISTRIBUTION==PINNED_VERSION``, recorded in full under ``modules`` and
``classes``), so code that works on the stand-in uses nothing that this CuPy lacks. The
other supported releases (:data:`RELEASES`: CuPy 13 and 14, each for CUDA 12 and 13) are
recorded under ``releases`` as their differences from the pinned one, so a test can check
that gpualign uses nothing that any of them lacks.

Everything is generated from the real packages: CuPy imports without a GPU or a driver
(only calls into the CUDA runtime fail), so each release's wheel is installed with
``pip install --no-deps --target`` into a directory of its own, and imported there in a
child process. The Python running this script needs :data:`ENVIRONMENT` (NumPy and SciPy
at the recorded versions: NumPy's objects aliased by CuPy are recorded with NumPy's
signatures)::

    python3 -m venv .venv-cupy-api
    script=tests/gpu/strict_cupy/make_api_snapshot.py
    .venv-cupy-api/bin/pip install $(python3 $script --requirements)
    .venv-cupy-api/bin/python $script --check   # what CI runs: a drift exits 1
    .venv-cupy-api/bin/python $script           # regenerate (then review the diff)

Wheels are downloaded once into ``--wheels`` (default ``~/.cache/gpualign/cupy-wheels``)
and installed into ``--targets`` (default ``.venv-cupy-api/cupy`` in the repository).
``--check`` exits 1 and lists every added, removed or changed name when a release's API
differs from the snapshot, 2 when the environment is not the recorded one.

The script needs only the standard library at import time (the test suite imports it
to check that its output is what the loader reads); CuPy is imported by the child
process (``--collect``). The output is deterministic (sorted, no timestamps), so
regenerating it with the same releases gives the same bytes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Version of the file layout; the loader (``strict_cupy._snapshot``) checks it.
FORMAT = 1

#: The distribution and version the committed snapshot was generated from.
PINNED_DISTRIBUTION = "cupy-cuda12x"
PINNED_VERSION = "14.2.0"

#: Every release recorded (distribution, version): the pinned one in full, the others
#: as differences from it. ``pyproject.toml`` allows CuPy >= 13 for CUDA 12 and 13.
RELEASES: tuple[tuple[str, str], ...] = (
    ("cupy-cuda12x", "14.2.0"),
    ("cupy-cuda13x", "14.2.0"),
    ("cupy-cuda12x", "13.6.0"),
    ("cupy-cuda13x", "13.6.0"),
)

#: What the generating Python needs besides CuPy (whose wheels are installed --no-deps):
#: NumPy and SciPy at the versions recorded in ``provenance``, and CuPy's own
#: dependencies (fastrlock for CuPy 13, cuda-pathfinder for CuPy 14).
ENVIRONMENT: tuple[str, ...] = (
    "numpy==2.4.6",
    "scipy==1.17.1",
    "fastrlock>=0.5",
    "cuda-pathfinder>=1.3.4,<2",
)

#: Snapshot file written next to this script.
DEFAULT_OUTPUT = Path(__file__).with_name("cupy_api_snapshot.json")
#: The repository root (tests/gpu/strict_cupy/ -> ../../..).
REPO = Path(__file__).resolve().parents[3]
DEFAULT_TARGETS = REPO / ".venv-cupy-api" / "cupy"
DEFAULT_WHEELS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
    "gpualign" / "cupy-wheels"

#: Modules recorded: snapshot key -> (import path, NumPy/SciPy counterpart or None).
MODULES: dict[str, str] = {
    "cupy": "cupy",
    "cupy.linalg": "cupy.linalg",
    "cupy.fft": "cupy.fft",
    "cupy.random": "cupy.random",
    "cupy.cuda": "cupy.cuda",
    "cupy.cuda.runtime": "cupy.cuda.runtime",
    "cupyx.scipy.ndimage": "cupyx.scipy.ndimage",
}

#: Counterparts used to decide whether a CuPy name *is* the NumPy object (dtypes...).
COUNTERPARTS: dict[str, tuple[str, ...]] = {
    "cupy": ("numpy", "numpy.exceptions"),
    "cupy.linalg": ("numpy.linalg",),
    "cupy.fft": ("numpy.fft",),
    "cupy.random": ("numpy.random",),
}

#: Classes whose attribute names are recorded.
CLASSES: dict[str, tuple[str, str]] = {
    "cupy.ndarray": ("cupy", "ndarray"),
    "cupy.cuda.Device": ("cupy.cuda", "Device"),
    "cupy.cuda.Stream": ("cupy.cuda", "Stream"),
}

_PARAM_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def _plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged (finite floats only)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _parameters(obj: Any) -> list[dict[str, Any]] | None:
    """The call signature of ``obj`` as a list of parameters, or None if unknown."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        entry: dict[str, Any] = {"name": p.name, "kind": _PARAM_KINDS[p.kind]}
        if p.default is not inspect.Parameter.empty:
            entry["has_default"] = True
            if _plain(p.default):
                entry["default"] = p.default
            else:
                entry["default_repr"] = repr(p.default)
        params.append(entry)
    return params


def classify(obj: Any) -> str:
    """Kind of a public object: module, class, ufunc, function, constant or object."""
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "class"
    tname = type(obj).__name__
    if tname in ("ufunc", "_GUFunc"):
        return "ufunc"
    if callable(obj):
        return "function"
    if _plain(obj) or isinstance(obj, float):
        return "constant"
    return "object"


def describe(obj: Any, name: str, counterparts: Iterable[Any]) -> dict[str, Any]:
    """Snapshot entry of one public name."""
    kind = classify(obj)
    entry: dict[str, Any] = {"kind": kind}
    sentinel = object()
    if any(getattr(mod, name, sentinel) is obj for mod in counterparts):
        entry["numpy_alias"] = True
    if kind == "constant":
        if _plain(obj):
            entry["value"] = obj
        else:  # inf, nan
            entry["value_repr"] = repr(obj)
    elif kind == "function":
        params = _parameters(obj)
        if params is not None:
            entry["params"] = params
    elif kind == "ufunc":
        for attr in ("nin", "nout"):
            value = getattr(obj, attr, None)
            if isinstance(value, int):
                entry[attr] = value
    return entry


def public_names(module: Any) -> list[str]:
    """Public attribute names of a module (``dir`` without leading underscores)."""
    return sorted(n for n in dir(module) if not n.startswith("_"))


def collect(
    modules: dict[str, Any],
    classes: dict[str, type],
    *,
    counterparts: dict[str, list[Any]] | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build the snapshot from already-imported module and class objects.

    Parameters
    ----------
    modules : dict
        Snapshot key (``"cupy"``, ``"cupyx.scipy.ndimage"``...) -> module object.
    classes : dict
        Snapshot key (``"cupy.ndarray"``...) -> class; all its attribute names
        (dunders included) are recorded.
    counterparts : dict, optional
        Snapshot key -> NumPy modules; a name whose object *is* the counterpart's
        object of that name is marked ``numpy_alias``.
    versions : dict, optional
        Must hold ``"cupy"``; any other versions are recorded as provenance.

    Returns
    -------
    dict
        The JSON-ready snapshot.
    """
    counterparts = counterparts or {}
    versions = dict(versions or {})
    if "cupy" not in versions:
        raise ValueError("versions must include the cupy version")
    snap: dict[str, Any] = {
        "format": FORMAT,
        "cupy_version": versions.pop("cupy"),
        "distribution": versions.pop("distribution", PINNED_DISTRIBUTION),
        "provenance": {
            "generated_by": "tests/gpu/strict_cupy/make_api_snapshot.py",
            **{k: str(v) for k, v in sorted(versions.items())},
        },
        "modules": {},
        "classes": {},
    }
    for key, module in sorted(modules.items()):
        cps = counterparts.get(key, [])
        entries = {}
        for name in public_names(module):
            try:
                obj = getattr(module, name)
            except Exception:  # lazy attribute failing without a GPU
                entries[name] = {"kind": "unavailable"}
                continue
            entries[name] = describe(obj, name, cps)
        snap["modules"][key] = entries
    for key, cls in sorted(classes.items()):
        snap["classes"][key] = sorted(set(dir(cls)))
    return snap


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _pretty(value: Any, depth: int) -> list[str]:
    """Lines of ``value``: objects expanded one key per line, except name entries (objects
    with a ``kind``), lists and scalars, which stay on the line of their key."""
    if not isinstance(value, dict) or "kind" in value or not value:
        return [_compact(value)]
    pad = " " * (depth + 1)
    lines = ["{"]
    keys = sorted(value)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        inner = _pretty(value[key], depth + 1)
        lines.append(f"{pad}{_compact(key)}: {inner[0]}" + ("" if len(inner) > 1 else comma))
        if len(inner) > 1:
            lines.extend(inner[1:-1])
            lines.append(inner[-1] + comma)
    lines.append(" " * depth + "}")
    return lines


def dumps(snapshot: dict[str, Any]) -> str:
    """Serialise a snapshot deterministically: sorted keys, one name per line."""
    text = "\n".join(_pretty(snapshot, 0)) + "\n"
    if json.loads(text) != json.loads(_compact(snapshot)):  # pragma: no cover - self-check
        raise AssertionError("snapshot serialisation is not a faithful JSON encoding")
    return text


def write(snapshot: dict[str, Any], path: Path) -> None:
    """Write a snapshot to ``path``."""
    path.write_text(dumps(snapshot), encoding="utf-8")


# ---- several releases: the pinned one in full, the others as differences ----------------


def release_key(distribution: str, version: str) -> str:
    """``"cupy-cuda12x==14.2.0"``: the key of a release under ``releases``."""
    return f"{distribution}=={version}"


def delta(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What ``other``'s API has that ``base``'s has not, and the reverse.

    Returns ``{"modules": {module: {"added": {name: entry}, "changed": {name: entry},
    "removed": [name, ...]}}, "classes": {class: {"added": [...], "removed": [...]}}}``
    with only the non-empty parts (``{}`` for identical APIs).
    """
    out: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    for mod in sorted(set(base["modules"]) | set(other["modules"])):
        a, b = base["modules"].get(mod, {}), other["modules"].get(mod, {})
        d: dict[str, Any] = {}
        added = {n: b[n] for n in sorted(set(b) - set(a))}
        changed = {n: b[n] for n in sorted(set(a) & set(b)) if a[n] != b[n]}
        removed = sorted(set(a) - set(b))
        for key, part in (("added", added), ("changed", changed), ("removed", removed)):
            if part:
                d[key] = part
        if d:
            modules[mod] = d
    classes: dict[str, Any] = {}
    for cls in sorted(set(base["classes"]) | set(other["classes"])):
        a, b = set(base["classes"].get(cls, ())), set(other["classes"].get(cls, ()))
        d = {k: v for k, v in (("added", sorted(b - a)), ("removed", sorted(a - b))) if v}
        if d:
            classes[cls] = d
    if modules:
        out["modules"] = modules
    if classes:
        out["classes"] = classes
    return out


def apply_delta(base: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """``modules`` and ``classes`` of the release that differs from ``base`` by ``d``."""
    modules = {mod: dict(entries) for mod, entries in base["modules"].items()}
    for mod, change in d.get("modules", {}).items():
        entries = modules.setdefault(mod, {})
        for name in change.get("removed", ()):
            del entries[name]
        entries.update(change.get("added", {}))
        entries.update(change.get("changed", {}))
    classes = {cls: set(names) for cls, names in base["classes"].items()}
    for cls, change in d.get("classes", {}).items():
        names = classes.setdefault(cls, set())
        names -= set(change.get("removed", ()))
        names |= set(change.get("added", ()))
    return {"modules": modules, "classes": {c: sorted(n) for c, n in classes.items()}}


def combine(generated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The snapshot file's content from every release's full snapshot (:func:`collect`).

    ``generated`` maps :func:`release_key` -> snapshot; the pinned release must be there.
    """
    pinned = release_key(PINNED_DISTRIBUTION, PINNED_VERSION)
    if pinned not in generated:
        raise ValueError(f"the pinned release {pinned} is missing")
    base = generated[pinned]
    snap = {k: v for k, v in base.items() if k != "releases"}
    snap["releases"] = {
        key: {
            "distribution": snap_i["distribution"],
            "cupy_version": snap_i["cupy_version"],
            "provenance": {k: v for k, v in snap_i["provenance"].items()
                           if k == "distribution_version"},
            "delta": delta(base, snap_i),
        }
        for key, snap_i in sorted(generated.items())
    }
    return snap


def releases(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every recorded release as a full snapshot (``cupy_version``, ``distribution``,
    ``modules``, ``classes``), by :func:`release_key`."""
    out = {}
    for key, rel in snapshot.get("releases", {}).items():
        full = apply_delta(snapshot, rel.get("delta", {}))
        full.update(cupy_version=rel["cupy_version"], distribution=rel["distribution"])
        out[key] = full
    return out


def _describe_entry(entry: dict[str, Any]) -> str:
    params = entry.get("params")
    if params is None:
        return entry.get("kind", "?")
    return f"{entry['kind']}({', '.join(p['name'] for p in params)})"


def compare(recorded: dict[str, Any], found: dict[str, Any], label: str) -> list[str]:
    """Drift of one release: a line per version, name or class attribute that differs.

    ``recorded`` and ``found`` are full snapshots (``modules``, ``classes``, versions);
    an empty list means the recorded API is the real one.
    """
    lines = []
    for key in ("distribution", "cupy_version"):
        if recorded.get(key) != found.get(key):
            lines.append(f"{label}: {key} recorded {recorded.get(key)!r}, "
                         f"installed {found.get(key)!r}")
    d = delta(recorded, found)
    for mod, change in d.get("modules", {}).items():
        for name, entry in change.get("added", {}).items():
            lines.append(f"{label}: {mod}.{name} is in CuPy, not in the snapshot "
                         f"({_describe_entry(entry)})")
        for name in change.get("removed", ()):
            lines.append(f"{label}: {mod}.{name} is in the snapshot, not in CuPy")
        for name, entry in change.get("changed", {}).items():
            was = recorded["modules"][mod][name]
            lines.append(f"{label}: {mod}.{name} differs: snapshot {_compact(was)}, "
                         f"CuPy {_compact(entry)}")
    for cls, change in d.get("classes", {}).items():
        for name in change.get("added", ()):
            lines.append(f"{label}: {cls}.{name} is in CuPy, not in the snapshot")
        for name in change.get("removed", ()):
            lines.append(f"{label}: {cls}.{name} is in the snapshot, not in CuPy")
    return lines


# ---- the real packages ------------------------------------------------------------------


def _installed_distribution() -> tuple[str, str]:
    """(distribution, version) of the CuPy that ``import cupy`` finds."""
    import importlib.metadata as metadata

    names = sorted({dist for dist, _ in RELEASES} | {"cupy"})
    found = []
    for name in names:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    if len(found) != 1:
        raise RuntimeError(f"expected one CuPy distribution on the path, found {found}")
    return found[0]


def _import_real() -> tuple[dict[str, Any], dict[str, type], dict[str, list[Any]],
                            dict[str, str]]:
    """Import the real CuPy (and its NumPy) and gather what :func:`collect` needs."""
    import importlib.metadata as metadata

    import cupy  # noqa: F401  (the real package, from a release's target directory)
    import numpy

    distribution, version = _installed_distribution()
    modules = {key: importlib.import_module(path) for key, path in MODULES.items()}
    classes = {key: getattr(importlib.import_module(mod), attr)
               for key, (mod, attr) in CLASSES.items()}
    counterparts = {key: [importlib.import_module(p) for p in paths]
                    for key, paths in COUNTERPARTS.items()}
    versions = {
        "cupy": modules["cupy"].__version__,
        "distribution": distribution,
        "distribution_version": version,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    try:
        versions["scipy"] = metadata.version("scipy")
    except metadata.PackageNotFoundError:
        pass
    return modules, classes, counterparts, versions


def collect_installed() -> dict[str, Any]:
    """The snapshot of the CuPy importable in this process."""
    modules, classes, counterparts, versions = _import_real()
    return collect(modules, classes, counterparts=counterparts, versions=versions)


def target_dir(targets: Path, distribution: str, version: str) -> Path:
    """Where one release is installed (``pip install --target``)."""
    return targets / f"{distribution}-{version}"


def install(distribution: str, version: str, targets: Path, wheels: Path,
            python: str = sys.executable) -> Path:
    """Install one release's wheel (no dependencies) into its own directory, once.

    The wheel is downloaded into ``wheels`` unless it is already there (CuPy wheels are
    50-140 MB; CI downloads each once).
    """
    target = target_dir(targets, distribution, version)
    if (target / ".installed").is_file():
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{distribution.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "-d",
                        str(wheels), f"{distribution}=={version}"], check=True)
        found = sorted(wheels.glob(pattern))
        if not found:
            raise RuntimeError(f"pip download left no {pattern} in {wheels}")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(found[-1])], check=True)
    (target / ".installed").write_text(found[-1].name + "\n")
    return target


def collect_release(target: Path, python: str = sys.executable) -> dict[str, Any]:
    """Snapshot of the release installed in ``target``, from a child process that finds
    CuPy there and nowhere else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run([python, "-s", str(Path(__file__).resolve()), "--collect"],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"collecting the API in {target} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def environment_problems(recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Differences of the generating environment that change a snapshot without any
    change of CuPy: the Python minor version (class attribute lists), NumPy and SciPy."""
    rec, got = recorded.get("provenance", {}), found.get("provenance", {})
    out = []
    if rec.get("python", "").split(".")[:2] != got.get("python", "").split(".")[:2]:
        out.append(f"Python {got.get('python')} here, the snapshot was made with "
                   f"Python {rec.get('python')}: run this script with that minor version")
    for name in ("numpy", "scipy"):
        if rec.get(name) != got.get(name):
            out.append(f"{name} {got.get(name)} here, the snapshot was made with "
                       f"{rec.get(name)}: install {' '.join(ENVIRONMENT)}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Generate the snapshot of every release, or check the committed one against them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help="snapshot file to write, or to check with --check")
    parser.add_argument("--check", action="store_true",
                        help="compare the snapshot with the real releases; exit 1 on drift")
    parser.add_argument("--targets", type=Path, default=DEFAULT_TARGETS,
                        help="directory of the releases' installations (one per release)")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS,
                        help="directory the wheels are downloaded into (once)")
    parser.add_argument("--no-install", action="store_true",
                        help="use the installations under --targets, fetch nothing")
    parser.add_argument("--requirements", action="store_true",
                        help="print what the generating Python needs (pip arguments)")
    parser.add_argument("--collect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requirements:
        print(" ".join(ENVIRONMENT))
        return 0
    if args.collect:  # child process: the CuPy on PYTHONPATH
        print(_compact(collect_installed()))
        return 0

    generated = {}
    for distribution, version in RELEASES:
        target = target_dir(args.targets, distribution, version)
        if not args.no_install:
            target = install(distribution, version, args.targets, args.wheels)
        elif not (target / ".installed").is_file():
            print(f"{distribution}=={version} is not installed in {target}", file=sys.stderr)
            return 2
        generated[release_key(distribution, version)] = collect_release(target)
    pinned = generated[release_key(PINNED_DISTRIBUTION, PINNED_VERSION)]
    if not args.check:
        snap = combine(generated)
        write(snap, args.output)
        n = sum(len(v) for v in snap["modules"].values())
        print(f"wrote {args.output}: {len(generated)} releases, pinned CuPy "
              f"{snap['cupy_version']} ({n} names)")
        return 0

    committed = json.loads(args.output.read_text(encoding="utf-8"))
    problems = environment_problems(committed, pinned)
    if problems:
        print("\n".join(["cannot check the CuPy API snapshot here:"] + problems),
              file=sys.stderr)
        return 2
    recorded = releases(committed)
    drift = []
    for key in sorted(set(recorded) | set(generated)):
        if key not in generated:
            drift.append(f"{key}: recorded, but not in RELEASES")
        elif key not in recorded:
            drift.append(f"{key}: in RELEASES, not recorded")
        else:
            drift += compare(recorded[key], generated[key], key)
    top = (committed.get("distribution"), committed.get("cupy_version"))
    if top != (pinned["distribution"], pinned["cupy_version"]):
        drift.append(f"the stand-in's release is recorded as {top}, the pinned one is "
                     f"{(pinned['distribution'], pinned['cupy_version'])}")
    if drift:
        print("\n".join([f"CuPy API drift: {args.output} differs from the real packages "
                         f"({len(drift)} differences); regenerate it with "
                         f"{Path(__file__).name} and review the diff:"] + drift),
              file=sys.stderr)
        return 1
    n = sum(len(v) for v in pinned["modules"].values())
    print(f"CuPy API snapshot matches {len(generated)} releases "
          f"({', '.join(sorted(generated))}); pinned {PINNED_DISTRIBUTION}=={PINNED_VERSION}: "
          f"{n} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
