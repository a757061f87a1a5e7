"""Loader of ``cupy_api_snapshot.json`` (written by ``make_api_snapshot.py``)."""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Layout version this loader understands (``make_api_snapshot.FORMAT``).
FORMAT = 1
#: The committed snapshot.
SNAPSHOT_PATH = Path(__file__).with_name("cupy_api_snapshot.json")

#: Modules and classes every snapshot must describe.
REQUIRED_MODULES = (
    "cupy", "cupy.linalg", "cupy.fft", "cupy.random", "cupy.cuda", "cupy.cuda.runtime",
    "cupyx.scipy.ndimage",
)
REQUIRED_CLASSES = ("cupy.ndarray", "cupy.cuda.Device", "cupy.cuda.Stream")
KINDS = frozenset({"module", "class", "ufunc", "function", "constant", "object", "unavailable"})

_PARAM_KINDS = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


class SnapshotError(ValueError):
    """The snapshot file does not have the layout this loader reads."""


class _Default:
    """Placeholder default of a parameter whose real default is not JSON (a dtype...)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Entry:
    """One public name of a CuPy module.

    Attributes
    ----------
    name : str
    kind : str
        One of :data:`KINDS`.
    numpy_alias : bool
        The CuPy object *is* NumPy's object of that name (dtypes, ``pi``, errors).
    raw : dict
        The JSON entry (``params``, ``value``, ``nin``...).
    """

    name: str
    kind: str
    numpy_alias: bool
    raw: dict[str, Any]

    @property
    def value(self) -> Any:
        """Value of a constant (``inf``/``nan`` decoded), or raise KeyError."""
        if "value" in self.raw:
            return self.raw["value"]
        return float(self.raw["value_repr"])

    @functools.cached_property
    def signature(self) -> inspect.Signature | None:
        """The recorded call signature, or None when CuPy's was not introspectable."""
        params = self.raw.get("params")
        if params is None:
            return None
        out = []
        for p in params:
            default: Any = inspect.Parameter.empty
            if p.get("has_default"):
                default = p["default"] if "default" in p else _Default(p["default_repr"])
            out.append(inspect.Parameter(p["name"], _PARAM_KINDS[p["kind"]], default=default))
        return inspect.Signature(out)


@dataclass(frozen=True)
class ApiSnapshot:
    """The recorded API of one CuPy release.

    Attributes
    ----------
    cupy_version : str
        ``cupy.__version__`` of the release.
    distribution : str
        The pip distribution it came from (``cupy-cuda12x``).
    modules : dict
        Module key (``"cupy"``, ``"cupyx.scipy.ndimage"``...) -> name -> :class:`Entry`.
    classes : dict
        Class key (``"cupy.ndarray"``...) -> frozenset of attribute names.
    provenance : dict
        Versions of the environment it was generated in.
    """

    cupy_version: str
    distribution: str
    modules: dict[str, dict[str, Entry]]
    classes: dict[str, frozenset[str]]
    provenance: dict[str, str]

    def names(self, module: str) -> frozenset[str]:
        """Public names of ``module``."""
        return frozenset(self.modules[module])

    def entry(self, module: str, name: str) -> Entry | None:
        """The entry of ``module.name``, or None when CuPy has no such name."""
        return self.modules[module].get(name)


def parse(data: dict[str, Any]) -> ApiSnapshot:
    """Validate a decoded snapshot and build an :class:`ApiSnapshot`.

    Raises
    ------
    SnapshotError
        On a wrong ``format``, a missing module or class, or a malformed entry.
    """
    if not isinstance(data, dict):
        raise SnapshotError("snapshot must be a JSON object")
    if data.get("format") != FORMAT:
        raise SnapshotError(f"snapshot format {data.get('format')!r}, loader reads {FORMAT}")
    for key in ("cupy_version", "distribution", "modules", "classes", "provenance"):
        if key not in data:
            raise SnapshotError(f"snapshot lacks {key!r}")
    version = data["cupy_version"]
    if not isinstance(version, str) or not version[:1].isdigit():
        raise SnapshotError(f"bad cupy_version {version!r}")
    modules: dict[str, dict[str, Entry]] = {}
    for mod in REQUIRED_MODULES:
        if mod not in data["modules"]:
            raise SnapshotError(f"snapshot lacks module {mod!r}")
    for mod, entries in data["modules"].items():
        if not isinstance(entries, dict):
            raise SnapshotError(f"module {mod!r} must map names to entries")
        out = {}
        for name, raw in entries.items():
            if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
                raise SnapshotError(f"{mod}.{name}: bad entry {raw!r}")
            if name.startswith("_"):
                raise SnapshotError(f"{mod}.{name}: private names are not recorded")
            if raw["kind"] == "constant" and "value" not in raw and "value_repr" not in raw:
                raise SnapshotError(f"{mod}.{name}: constant without a value")
            if raw["kind"] == "constant" and "value_repr" in raw:
                try:
                    float(raw["value_repr"])
                except ValueError:
                    raise SnapshotError(f"{mod}.{name}: bad value_repr") from None
            params = raw.get("params")
            if params is not None:
                if not isinstance(params, list) or not all(
                    isinstance(p, dict) and p.get("kind") in _PARAM_KINDS and "name" in p
                    for p in params
                ):
                    raise SnapshotError(f"{mod}.{name}: bad params")
            out[name] = Entry(name, raw["kind"], bool(raw.get("numpy_alias")), raw)
        modules[mod] = out
    classes = {}
    for cls in REQUIRED_CLASSES:
        if cls not in data["classes"]:
            raise SnapshotError(f"snapshot lacks class {cls!r}")
    for cls, names in data["classes"].items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SnapshotError(f"class {cls!r} must list attribute names")
        classes[cls] = frozenset(names)
    return ApiSnapshot(
        cupy_version=version,
        distribution=str(data["distribution"]),
        modules=modules,
        classes=classes,
        provenance={str(k): str(v) for k, v in data["provenance"].items()},
    )


def load(path: str | Path | None = None) -> ApiSnapshot:
    """Read and validate a snapshot file (default: the committed one)."""
    p = Path(path) if path is not None else SNAPSHOT_PATH
    with p.open(encoding="utf-8") as fh:
        data = json.load(fh, parse_constant=_reject_constant)
    return parse(data)


def _reject_constant(name: str) -> float:
    # The writer uses allow_nan=False; NaN/Infinity literals mean a foreign file.
    raise SnapshotError(f"non-standard JSON constant {name} in snapshot")


@functools.cache
def default() -> ApiSnapshot:
    """The committed snapshot, loaded once."""
    return load()

