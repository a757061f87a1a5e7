"""benchmarks/gpu_session.sh, the one script for the day a GPU is lent, works without one.

The dry run executes every step (info, ``pytest -m gpu``, gpu_bench.py, gpu_compare.py) at
tiny sizes on the strict CPU stand-in for CuPy; the real mode's commands are checked with a
recording stand-in for Python (they need a GPU to run). A broken script fails here, in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
COMPARE = REPO / "benchmarks" / "gpu_compare.py"
if not SCRIPT.is_file():  # e.g. the tests shipped in the CUDA image, without benchmarks/
    pytest.skip("benchmarks/gpu_session.sh is not in this tree", allow_module_level=True)
if shutil.which("bash") is None or shutil.which("timeout") is None:
    pytest.skip("gpu_session.sh needs bash and timeout (coreutils)", allow_module_level=True)

STEPS = ["info", "gpu-tests", "gpu-bench", "cpu-vs-gpu"]
#: The device time a session may take (issue 13: under 8 minutes).
SESSION_LIMIT_S = 8 * 60


def _summary_rows(summary: Path) -> list[list[str]]:
    """The rows of summary.md's step table (step, exit, seconds, limit, command)."""
    lines = summary.read_text().splitlines()
    start = lines.index("| step | exit | seconds | limit s | command |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_script_parses_and_helps():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0
    for needle in ("--dry-run", "--archive", "pytest -m gpu", "gpu_bench.py", "gpu_compare.py",
                   "under 8 minutes"):
        assert needle in out.stdout, needle
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of the whole session (about 15 s)."""
    tmp = tmp_path_factory.mktemp("session")
    env = {**os.environ, "PYTHON": sys.executable, "FIELDS_DIR": str(tmp / "fields")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--archive",
                           str(tmp / "session.tar.gz"), str(tmp / "results")],
                          capture_output=True, text=True, timeout=600, env=env)
    return proc, tmp / "results", tmp / "session.tar.gz"


def test_dry_run_runs_every_step(dry_run):
    proc, results, archive = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _summary_rows(results / "summary.md")
    assert [r[0] for r in rows] == STEPS
    assert all(r[1] == "0" for r in rows), rows
    assert "every step ok" in (results / "summary.md").read_text()
    assert sorted(p.name for p in results.iterdir()) == sorted([
        "summary.md", "info.txt", "gpu-tests.log", "gpu-tests.xml", "gpu-bench.log",
        "gpu-bench.md", "gpu-bench.jsonl", "cpu-vs-gpu.log", "cpu-vs-gpu.md",
        "cpu-vs-gpu.jsonl"])
    with tarfile.open(archive) as tar:
        assert {Path(n).name for n in tar.getnames()} >= {"summary.md", "gpu-bench.jsonl"}


def test_dry_run_pytest_step_selects_the_gpu_tests(dry_run):
    _, results, _ = dry_run
    log = (results / "gpu-tests.log").read_text()
    assert "-m gpu" in _summary_rows(results / "summary.md")[1][4]
    assert "skipped" in log and "no usable GPU" in log  # no device here: they skip
    xml = (results / "gpu-tests.xml").read_text()
    assert 'skipped="' in xml and 'errors="0"' in xml and 'failures="0"' in xml


def test_dry_run_bench_ran_on_the_stand_in(dry_run):
    _, results, _ = dry_run
    recs = [json.loads(line) for line in (results / "gpu-bench.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in recs] == ["stages", "stages", "full_registration"]
    assert [r["size"] for r in recs] == [256, 384, 256]
    assert all(r["device"] == "strict-cupy CPU stand-in" for r in recs)
    assert all(r["warp_fused_s"] > 0 and r["n_match"] >= 20 for r in recs[:2])
    assert recs[2]["backend"] == "cupy"
    assert "Targets (issue 3" in (results / "gpu-bench.md").read_text()


def test_dry_run_compares_cpu_and_gpu_on_a_benchmark_field(dry_run):
    _, results, _ = dry_run
    (rec,) = [json.loads(line) for line in (results / "cpu-vs-gpu.jsonl").read_text()
              .splitlines()]
    assert rec["field"] == "few8" and rec["status"] == "ok", rec
    assert rec["cpu_backend"] == "numpy" and rec["gpu_backend"] == "cupy"
    # the stand-in computes with NumPy/SciPy: the two backends agree exactly
    assert rec["transform_rms_diff_px"] == 0.0 and rec["pixel_rms_diff"] == 0.0
    assert rec["footprint_mismatch"] == 0 and rec["pixels_compared"] > 100_000
    assert 0 < rec["cpu_rms_px"] < 0.1 and rec["gpu_rms_px"] == rec["cpu_rms_px"]
    assert "| few8 |" in (results / "cpu-vs-gpu.md").read_text()


FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$*" in *gpu_bench.py*) exit "${FAKE_BENCH_RC:-0}" ;; esac
exit 0
"""


def test_real_mode_runs_the_session_commands_within_8_minutes(tmp_path):
    """The GPU session's commands (recorded by a stand-in for Python), its time limits, and
    a failing step that neither stops the others nor goes unreported."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), "FAKE_BENCH_RC": "3",
           "FIELDS_DIR": str(tmp_path / "fields")}
    for key in ("LIMIT_INFO", "LIMIT_TESTS", "LIMIT_BENCH", "LIMIT_COMPARE"):
        env.pop(key, None)
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "res")], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the bench step failed
    calls = log.read_text().splitlines()
    assert any(c.startswith("-m pytest -m gpu") and c.endswith(" tests/gpu") for c in calls)
    (bench,) = [c for c in calls if "gpu_bench.py" in c]
    assert "--sizes 4k 8k 16k --full-size 16k" in bench and "_standin" not in bench
    assert f"--jsonl {tmp_path / 'res'}/gpu-bench.jsonl" in bench
    (compare,) = [c for c in calls if "gpu_compare.py" in c]
    assert f"--fields {tmp_path / 'fields'}" in compare and "--only" not in compare
    rows = _summary_rows(tmp_path / "res" / "summary.md")
    assert [r[0] for r in rows] == STEPS
    assert [r[1] for r in rows] == ["0", "0", "3", "0"]
    assert sum(float(r[3]) for r in rows) <= SESSION_LIMIT_S - 20  # limits, s
    assert "SOME STEP FAILED" in (tmp_path / "res" / "summary.md").read_text()


# ---- benchmarks/gpu_compare.py -----------------------------------------------------------


@pytest.fixture(scope="module")
def gc(load_script) -> types.ModuleType:
    return load_script(COMPARE, "gpu_compare")


def test_compare_without_gpu_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(COMPARE), "--only", "few8", "--fields",
                           str(tmp_path), "--no-jsonl"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("gpu_compare: no usable GPU: ")
    assert not any(tmp_path.iterdir())  # nothing generated before the GPU check


def test_compare_differences(gc):
    class Shift:
        def __init__(self, dx):
            self.dx = dx

        def __call__(self, x, y):
            return np.asarray(x) + self.dx, np.asarray(y)

    d = gc.mapping_difference(Shift(0.0), Shift(0.25), (64, 96), step=16)
    assert d == {"transform_rms_diff_px": 0.25, "transform_max_diff_px": 0.25}
    data = np.arange(12.0).reshape(3, 4)
    foot = np.ones((3, 4), bool)
    cpu = types.SimpleNamespace(data=data, footprint=foot)
    other = data.copy()
    other[0, 0] += 3.0  # one pixel 3 off
    other[2, 3] = np.nan
    foot2 = foot.copy()
    foot2[2, 3] = False
    gpu = types.SimpleNamespace(data=other, footprint=foot2)
    p = gc.pixel_difference(cpu, gpu)
    assert p["footprint_mismatch"] == 1 and p["pixels_compared"] == 11
    assert p["pixel_max_diff"] == 3.0
    assert p["pixel_rms_diff"] == pytest.approx(np.sqrt(9.0 / 11))
    assert p["pixel_rms_diff_rel"] == pytest.approx(
        np.sqrt(9.0 / 11) / np.sqrt(np.mean(data.ravel()[:11] ** 2)))
