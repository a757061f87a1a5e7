"""The CuPy API snapshot records every supported release, and gpualign fits all of them.

``tests/gpu/strict_cupy/cupy_api_snapshot.json`` holds the pinned release (what the strict
stand-in exposes) in full and CuPy 13 and 14, for CUDA 12 and 13, as differences from it
(``make_api_snapshot.py``). Without CuPy these tests check the recorded releases, the
script's delta/compare logic, and that every CuPy name and keyword gpualign's sources use
exists in every recorded release (the stand-in only enforces the pinned one). With the
real wheels installed (``.ci/run`` does it; ``GPUALIGN_CUPY_API_PYTHON``), the snapshot is
compared with them: a drift fails.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import types
from collections import defaultdict
from pathlib import Path

import pytest
from strict_cupy import _snapshot

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = HERE / "strict_cupy" / "make_api_snapshot.py"
PACKAGE = REPO / "gpualign"


@pytest.fixture(scope="module")
def script(load_script) -> types.ModuleType:
    """make_api_snapshot.py, imported by path (it needs no CuPy to import)."""
    return load_script(SCRIPT, "_cupy_api_make_snapshot")


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(_snapshot.SNAPSHOT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def releases(script, committed) -> dict[str, dict]:
    return script.releases(committed)


# ---- what is recorded ---------------------------------------------------------------------


def test_every_supported_release_is_recorded(script, committed, releases):
    wanted = {script.release_key(d, v) for d, v in script.RELEASES}
    assert set(committed["releases"]) == set(releases) == wanted
    # CuPy 13 and 14, each for CUDA 12 and 13 (pyproject: cupy-cuda12x/13x >= 13)
    assert {(d, v.split(".")[0]) for d, v in script.RELEASES} == {
        ("cupy-cuda12x", "13"), ("cupy-cuda12x", "14"), ("cupy-cuda13x", "13"),
        ("cupy-cuda13x", "14")}
    for key, rel in committed["releases"].items():
        dist, version = key.split("==")
        assert rel["distribution"] == dist and rel["cupy_version"] == version, key
        assert rel["provenance"]["distribution_version"] == version
    pinned = script.release_key(script.PINNED_DISTRIBUTION, script.PINNED_VERSION)
    assert committed["releases"][pinned]["delta"] == {}
    assert releases[pinned]["modules"] == committed["modules"]
    assert releases[pinned]["classes"] == committed["classes"]


def test_the_recorded_differences_are_real_ones(releases):
    """CuPy 13.6 lacks names 14.2 has (a stand-in on 14.2 alone would not notice)."""
    old, new = releases["cupy-cuda12x==13.6.0"], releases["cupy-cuda12x==14.2.0"]
    assert {"astype", "bool", "concat", "trapezoid"} <= set(new["modules"]["cupy"])
    assert not {"astype", "bool", "concat", "trapezoid"} & set(old["modules"]["cupy"])
    assert "copy" in {p["name"] for p in new["modules"]["cupy"]["asarray"]["params"]}
    assert "copy" not in {p["name"] for p in old["modules"]["cupy"]["asarray"]["params"]}
    assert "priority" in new["classes"]["cupy.cuda.Stream"]
    assert "priority" not in old["classes"]["cupy.cuda.Stream"]
    # the CUDA 12 and CUDA 13 builds of one version have the same Python API
    for version in ("13.6.0", "14.2.0"):
        a, b = releases[f"cupy-cuda12x=={version}"], releases[f"cupy-cuda13x=={version}"]
        assert (a["modules"], a["classes"]) == (b["modules"], b["classes"]), version


def test_every_release_loads_as_a_snapshot(committed, releases):
    """Each reconstructed release is a valid snapshot for the stand-in's loader."""
    for key, full in releases.items():
        data = {**{k: v for k, v in committed.items() if k != "releases"}, **full}
        snap = _snapshot.parse(data)
        assert snap.cupy_version == key.split("==")[1]
        assert {"asarray", "where", "cuda"} <= snap.names("cupy")


# ---- the script's logic (no CuPy needed) -------------------------------------------------


def _fake(version: str) -> dict:
    """A small snapshot shaped like the real one."""
    return {
        "format": 1, "cupy_version": version, "distribution": "cupy-cuda12x",
        "provenance": {"distribution_version": version, "python": "3.11.7",
                       "numpy": "2.4.6", "scipy": "1.17.1"},
        "modules": {"cupy": {"where": {"kind": "function", "params": [
                                 {"kind": "positional_or_keyword", "name": "condition"}]},
                             "pi": {"kind": "constant", "value": 3.14}},
                    "cupy.fft": {"fft": {"kind": "function"}}},
        "classes": {"cupy.ndarray": ["get", "mT"]},
    }


def test_combine_and_releases_round_trip(script, monkeypatch, tmp_path):
    monkeypatch.setattr(script, "PINNED_VERSION", "14.0.0")
    new = _fake("14.0.0")
    old = _fake("13.0.0")
    del old["modules"]["cupy"]["pi"]
    old["modules"]["cupy"]["bool"] = {"kind": "class"}
    old["modules"]["cupy"]["where"]["params"].append({"kind": "keyword_only", "name": "x"})
    old["classes"]["cupy.ndarray"] = ["get"]
    snap = script.combine({"cupy-cuda12x==14.0.0": new, "cupy-cuda12x==13.0.0": old})
    d = snap["releases"]["cupy-cuda12x==13.0.0"]["delta"]
    assert d["modules"]["cupy"]["removed"] == ["pi"]
    assert d["modules"]["cupy"]["added"] == {"bool": {"kind": "class"}}
    assert list(d["modules"]["cupy"]["changed"]) == ["where"]
    assert d["classes"] == {"cupy.ndarray": {"removed": ["mT"]}}
    assert snap["releases"]["cupy-cuda12x==14.0.0"]["delta"] == {}
    path = tmp_path / "s.json"
    script.write(snap, path)
    back = script.releases(json.loads(path.read_text()))
    for key, full in (("cupy-cuda12x==14.0.0", new), ("cupy-cuda12x==13.0.0", old)):
        assert back[key]["modules"] == full["modules"]
        assert back[key]["classes"] == full["classes"]
        assert back[key]["cupy_version"] == full["cupy_version"]
    assert path.read_text() == script.dumps(json.loads(path.read_text()))
    with pytest.raises(ValueError, match="pinned"):
        script.combine({"cupy-cuda12x==13.0.0": old})


def test_compare_names_every_drift(script):
    rec = _fake("14.0.0")
    assert script.compare(rec, copy.deepcopy(rec), "r") == []
    got = copy.deepcopy(rec)
    del got["modules"]["cupy"]["pi"]
    got["modules"]["cupy.fft"]["ifft"] = {"kind": "function"}
    got["modules"]["cupy"]["where"]["params"].append({"kind": "keyword_only", "name": "out"})
    got["classes"]["cupy.ndarray"] = ["get", "device"]
    got["cupy_version"] = "14.0.1"
    lines = script.compare(rec, got, "r")
    assert len(lines) == 6, lines
    text = "\n".join(lines)
    for needle in ("cupy_version recorded '14.0.0', installed '14.0.1'",
                   "cupy.pi is in the snapshot, not in CuPy",
                   "cupy.fft.ifft is in CuPy, not in the snapshot",
                   "cupy.where differs", "cupy.ndarray.device is in CuPy",
                   "cupy.ndarray.mT is in the snapshot, not in CuPy"):
        assert needle in text, (needle, text)


def test_environment_mismatch_is_not_called_drift(script):
    rec = _fake("14.0.0")
    assert script.environment_problems(rec, copy.deepcopy(rec)) == []
    patch = copy.deepcopy(rec)
    patch["provenance"]["python"] = "3.11.9"  # only the minor version matters
    assert script.environment_problems(rec, patch) == []
    other = copy.deepcopy(rec)
    other["provenance"].update(python="3.12.1", numpy="2.3.0")
    problems = script.environment_problems(rec, other)
    assert len(problems) == 2 and "Python 3.12.1" in problems[0] and "numpy 2.3.0" in problems[1]


def test_requirements_pin_the_recorded_environment(script, committed):
    prov = committed["provenance"]
    assert f"numpy=={prov['numpy']}" in script.ENVIRONMENT
    assert f"scipy=={prov['scipy']}" in script.ENVIRONMENT
    out = subprocess.run([sys.executable, str(SCRIPT), "--requirements"], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.split() == list(script.ENVIRONMENT)


def test_check_without_installations_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--no-install",
                           "--targets", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "is not installed in" in proc.stderr and "Traceback" not in proc.stderr


# ---- against the real wheels (CI installs them) ------------------------------------------


@pytest.mark.skipif(not os.environ.get("GPUALIGN_CUPY_API_PYTHON"), reason=(
    "set GPUALIGN_CUPY_API_PYTHON to a Python with make_api_snapshot.py --requirements "
    "installed (and GPUALIGN_CUPY_API_TARGETS to where the CuPy wheels are installed; "
    ".ci/run does both) to compare the snapshot with the real CuPy releases"))
def test_snapshot_matches_the_real_releases():
    cmd = [os.environ["GPUALIGN_CUPY_API_PYTHON"], str(SCRIPT), "--check"]
    if os.environ.get("GPUALIGN_CUPY_API_TARGETS"):
        cmd += ["--no-install", "--targets", os.environ["GPUALIGN_CUPY_API_TARGETS"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matches 4 releases" in proc.stdout


# ---- gpualign against every release --------------------------------------------------------

#: Names that hold CuPy (or NumPy, which must then be CuPy-compatible) in gpualign.
_ARRAY_MODULES = {"xp", "cp", "cupy"}
#: Names that hold cupyx.scipy.ndimage (or scipy.ndimage on the CPU).
_NDIMAGE = {"ndi", "cndi"}
_SUBMODULES = {"cuda": "cupy.cuda", "linalg": "cupy.linalg", "fft": "cupy.fft",
               "random": "cupy.random"}


def _module_of(node: ast.AST) -> str | None:
    """The snapshot module an expression stands for (``xp`` -> "cupy"...), or None."""
    if isinstance(node, ast.Name):
        if node.id in _ARRAY_MODULES:
            return "cupy"
        if node.id in _NDIMAGE:
            return "cupyx.scipy.ndimage"
        return None
    if isinstance(node, ast.Attribute):
        if node.attr == "xp":  # backend.xp, self.backend.xp
            return "cupy"
        if node.attr == "ndimage":  # backend.ndimage (not scipy.ndimage)
            inner = node.value
            is_scipy = isinstance(inner, ast.Name) and inner.id == "scipy"
            return None if is_scipy else "cupyx.scipy.ndimage"
        inner = _module_of(node.value)
        if inner == "cupy" and node.attr in _SUBMODULES:
            return _SUBMODULES[node.attr]
        if inner == "cupy.cuda" and node.attr == "runtime":
            return "cupy.cuda.runtime"
    return None


def cupy_uses(source: str, filename: str) -> dict[tuple, list[str]]:
    """``(module, name)`` and ``(module, name, keyword)`` used in ``source`` -> where."""
    uses: dict[tuple, list[str]] = defaultdict(list)
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
            module = _module_of(node.value)
            if module is not None:
                uses[(module, node.attr)].append(f"{filename}:{node.lineno}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            module = _module_of(node.func.value)
            if module is not None and not node.func.attr.startswith("_"):
                for kw in node.keywords:
                    if kw.arg is not None:
                        uses[(module, node.func.attr, kw.arg)].append(
                            f"{filename}:{node.lineno}")
    return uses


def missing_in(release: dict, uses: dict[tuple, list[str]]) -> list[str]:
    """Uses that ``release`` (a full snapshot) cannot satisfy."""
    out = []
    for key, where in sorted(uses.items()):
        module, name = key[0], key[1]
        entries = release["modules"].get(module, {})
        if module.split(".")[-1] == name or (module == "cupy" and name in _SUBMODULES):
            continue  # the submodule itself (cp.cuda): checked through its own names
        entry = entries.get(name)
        if entry is None:
            if len(key) == 2:
                out.append(f"{module}.{name} ({', '.join(where[:3])})")
            continue
        params = entry.get("params")
        if len(key) == 3 and params is not None:
            names = {p["name"] for p in params if p["kind"] != "positional_only"}
            if key[2] not in names and not any(p["kind"] == "var_keyword" for p in params):
                out.append(f"{module}.{name}(..., {key[2]}=) ({', '.join(where[:3])})")
    return out


def test_scan_finds_names_and_keywords_a_release_lacks(releases):
    code = (
        "def f(backend, a):\n"
        "    xp = backend.xp\n"
        "    b = xp.asarray(a, copy=False)\n"   # CuPy 13.6: asarray has no copy=
        "    c = backend.xp.astype(b, 'f4')\n"  # CuPy 13.6: no cupy.astype
        "    s = xp.cuda.Stream(non_blocking=True)\n"
        "    backend.ndimage.map_coordinates(b, c, order=3, bogus=1)\n"
        "    import scipy\n"
        "    scipy.ndimage.label(a)\n"           # SciPy, not checked
        "    return xp.where(b > 0, b, 0), xp.cuda.runtime.getDeviceCount()\n"
    )
    uses = cupy_uses(code, "x.py")
    assert ("cupy", "asarray", "copy") in uses and ("cupy.cuda.runtime", "getDeviceCount") in uses
    assert not any(k[0] == "cupyx.scipy.ndimage" and k[1] == "label" for k in uses)
    old = missing_in(releases["cupy-cuda13x==13.6.0"], uses)
    assert old == ["cupy.asarray(..., copy=) (x.py:3)", "cupy.astype (x.py:4)",
                   "cupyx.scipy.ndimage.map_coordinates(..., bogus=) (x.py:6)"], old
    new = missing_in(releases["cupy-cuda12x==14.2.0"], uses)
    assert new == ["cupyx.scipy.ndimage.map_coordinates(..., bogus=) (x.py:6)"], new


def test_gpualign_uses_only_names_every_release_has(releases):
    """Every ``xp.``/``cp.``/``ndi.`` name and keyword in gpualign exists in CuPy 13 and 14
    for CUDA 12 and 13 (the stand-in enforces the pinned release only)."""
    uses: dict[tuple, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for key, where in cupy_uses(path.read_text(encoding="utf-8"), rel).items():
            uses[key] += where
    assert ("cupyx.scipy.ndimage", "map_coordinates") in uses  # the scan sees the warp
    assert ("cupy", "asarray") in uses and ("cupy.cuda", "Device") in uses
    assert len(uses) > 40
    problems = {key: missing_in(rel, uses) for key, rel in releases.items()}
    assert not any(problems.values()), problems
