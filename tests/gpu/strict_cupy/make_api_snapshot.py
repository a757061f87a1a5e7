"""Write ``cupy_api_snapshot.json``: the public API of a pinned CuPy release.

The strict CPU stand-in (:mod:`strict_cupy`) exposes only the names this snapshot lists,
so code that works on the stand-in uses nothing that the real CuPy lacks. The snapshot
is generated from the real package, which imports without a GPU, in a separate virtual
environment so that the test environment stays CuPy-free::

    python3 -m venv /work/cupy-venv
    /work/cupy-venv/bin/pip install cupy-cuda12x==14.2.0 scipy
    /work/cupy-venv/bin/python tests/gpu/strict_cupy/make_api_snapshot.py

The script needs only the standard library at import time (the test suite imports it
to check that its output is what the loader reads); CuPy is imported by :func:`main`.
The output is deterministic (sorted, no timestamps), so regenerating it with the same
CuPy gives the same bytes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import platform
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

#: Snapshot file written next to this script.
DEFAULT_OUTPUT = Path(__file__).with_name("cupy_api_snapshot.json")

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


def dumps(snapshot: dict[str, Any]) -> str:
    """Serialise a snapshot deterministically: sorted keys, one name per line."""
    lines = ["{"]
    top = sorted(snapshot)
    for i, key in enumerate(top):
        value = snapshot[key]
        comma = "," if i < len(top) - 1 else ""
        if key in ("modules", "classes"):
            lines.append(f" {_compact(key)}: {{")
            groups = sorted(value)
            for j, group in enumerate(groups):
                inner = value[group]
                gcomma = "," if j < len(groups) - 1 else ""
                if isinstance(inner, dict):
                    lines.append(f"  {_compact(group)}: {{")
                    names = sorted(inner)
                    for k, name in enumerate(names):
                        ncomma = "," if k < len(names) - 1 else ""
                        lines.append(f"   {_compact(name)}: {_compact(inner[name])}{ncomma}")
                    lines.append(f"  }}{gcomma}")
                else:
                    lines.append(f"  {_compact(group)}: {_compact(inner)}{gcomma}")
            lines.append(f" }}{comma}")
        else:
            lines.append(f" {_compact(key)}: {_compact(value)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if json.loads(text) != json.loads(_compact(snapshot)):  # pragma: no cover - self-check
        raise AssertionError("snapshot serialisation is not a faithful JSON encoding")
    return text


def write(snapshot: dict[str, Any], path: Path) -> None:
    """Write a snapshot to ``path``."""
    path.write_text(dumps(snapshot), encoding="utf-8")


def _import_real() -> tuple[dict[str, Any], dict[str, type], dict[str, list[Any]],
                            dict[str, str]]:
    """Import the real CuPy (and its NumPy) and gather what :func:`collect` needs."""
    import importlib.metadata as metadata

    import cupy  # noqa: F401  (the real package, from the CuPy venv)
    import numpy

    modules = {key: importlib.import_module(path) for key, path in MODULES.items()}
    classes = {key: getattr(importlib.import_module(mod), attr)
               for key, (mod, attr) in CLASSES.items()}
    counterparts = {key: [importlib.import_module(p) for p in paths]
                    for key, paths in COUNTERPARTS.items()}
    versions = {
        "cupy": modules["cupy"].__version__,
        "distribution": PINNED_DISTRIBUTION,
        "distribution_version": metadata.version(PINNED_DISTRIBUTION),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    try:
        versions["scipy"] = metadata.version("scipy")
    except metadata.PackageNotFoundError:
        pass
    return modules, classes, counterparts, versions


def main(argv: list[str] | None = None) -> int:
    """Generate the snapshot from the installed CuPy and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--allow-other-version", action="store_true",
                        help=f"do not insist on {PINNED_DISTRIBUTION}=={PINNED_VERSION}")
    args = parser.parse_args(argv)
    modules, classes, counterparts, versions = _import_real()
    if versions["distribution_version"] != PINNED_VERSION and not args.allow_other_version:
        print(f"installed {PINNED_DISTRIBUTION} is {versions['distribution_version']}, "
              f"the pin is {PINNED_VERSION}", file=sys.stderr)
        return 1
    snap = collect(modules, classes, counterparts=counterparts, versions=versions)
    write(snap, args.output)
    n = sum(len(v) for v in snap["modules"].values())
    print(f"wrote {args.output}: CuPy {snap['cupy_version']}, {n} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
