"""JSON encoding shared by transform and solution files: exact floats, standard JSON.

Floats are written with Python's shortest round-trip repr, so every float64 loads
back identical; non-finite values (the clip box of an affine-only transform is
infinite) are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign._system import write_text_atomic

__all__ = ["FORMAT", "VERSION", "encode", "decode_numbers", "write_json", "read_json",
           "check_file_dict"]

FORMAT = "gpualign-transform"
VERSION = 1


def encode(value: Any) -> Any:
    """JSON-safe copy: arrays to lists, non-finite floats to strings."""
    if isinstance(value, np.ndarray):
        return encode(value.tolist())
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


def decode_numbers(value: Any) -> Any:
    """Inverse of the non-finite encoding, recursively, for numeric fields."""
    if isinstance(value, list):
        return [decode_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: decode_numbers(v) for k, v in value.items()}
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def write_json(d: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``d`` (already encoded) as indented JSON, atomically."""
    text = json.dumps(d, indent=1, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")


#: Deepest nesting of lists and objects a transform file may have (its own files nest
#: at most 5 deep); deeper is damage, which would exhaust the decoders' recursion.
MAX_DEPTH = 16


def _parse_int(text: str) -> int:
    """A JSON integer; ValueError beyond float64's range (no field of a file holds one)."""
    if len(text) > 400:  # before int(), whose time grows with the square of the digits
        raise ValueError(f"an integer of {len(text)} digits")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise ValueError(f"the integer {text[:12]}... is beyond float64's range") from None
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (0 for a number or string)."""
    depth, level = 0, [value]
    while containers := [v for v in level if isinstance(v, (list, dict))]:
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of a transform file (InputError when missing or unreadable)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"transform file not found: {p}")
    hint = "write one with Solution.save()"
    try:
        d = json.loads(p.read_text(), parse_int=_parse_int)
    except RecursionError:
        raise InputError(f"{p} nests lists or objects too deeply for a transform file",
                         hint=hint) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"cannot read {p} as a transform file ({exc})".splitlines()[0],
                         hint=hint) from None
    if _depth(d) > MAX_DEPTH:
        raise InputError(f"{p} nests lists or objects more than {MAX_DEPTH} deep", hint=hint)
    return d


def check_file_dict(d: Any) -> None:
    """InputError unless ``d`` is a parsed transform file this version can read."""
    hint = "write one with Solution.save() or gpualign align --save-transform"
    if not isinstance(d, dict) or d.get("format") != FORMAT or "transform" not in d:
        raise InputError("not a gpualign transform file", hint=hint)
    version = d.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, (int, float)) \
            or not float(version).is_integer():
        raise InputError(f"transform file version {str(version)[:20]!r} is not an integer",
                         hint=hint)
    if version > VERSION:
        raise InputError(f"transform file version {version} is newer than this "
                         f"gpualign reads ({VERSION})", hint="upgrade gpualign")
    if not isinstance(d["transform"], dict):
        raise InputError(f"the transform file's transform is a {type(d['transform']).__name__}, "
                         "not an object", hint=hint)
