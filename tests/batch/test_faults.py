"""Faults from outside: a batch killed by SIGKILL, a Dask worker killed, two writers racing.

* A local batch (``gpualign align`` in a real process, with its pool of forked
  workers) killed with SIGKILL as soon as its first output is published, then
  resumed with ``--skip-existing``, leaves the same directory as an uninterrupted
  run: the same names and, but for the batch id (``GA_BATCH``, which tells one run's
  outputs from another's by design), the same bytes; no temporary file is left.
* A Dask worker process killed with SIGKILL from here while it holds a frame (one
  killed with a complete but unpublished temporary file, one after publishing but
  before reporting): every output is written exactly once, nothing is lost or
  duplicated, and the pixels equal a serial run's.
* Two ``gpualign apply --overwrite`` processes writing one output at the same time
  leave one complete file, byte for byte a single run's, and no temporary.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import pytest
from astropy.io import fits

S = (512, 512)

# frame name -> view of the simulated source (each a different orientation or crop)
VIEWS = {
    "a": lambda a: a,
    "b": lambda a: a[::-1],
    "c": lambda a: a[:, ::-1],
    "d": lambda a: a[::-1, ::-1],
    "e": lambda a: np.rot90(a),
    "f": lambda a: np.rot90(a, 3),
    "g": lambda a: a.T,
    "h": lambda a: a[20:, 30:],
}

TEMPORARY = re.compile(r"^\..+\.tmp$")  # .<out>.<host>-<pid>.<random>.tmp (gpualign._system)
BATCH_CARD = re.compile(rb"GA_BATCH= '([0-9a-f]{16})'")


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(11.2, -6.4), rotation_deg=14.0, corner_distortion_px=2.0,
                     n_stars=600, seed=7)


@pytest.fixture(scope="module")
def frames(pair, tmp_path_factory) -> tuple[Path, list[Path]]:
    """The template and one source file per view."""
    d = tmp_path_factory.mktemp("faults")
    fits.writeto(d / "template.fits", pair.template)
    srcs = []
    for name, view in VIEWS.items():
        srcs.append(d / f"{name}.fits")
        fits.writeto(srcs[-1], np.ascontiguousarray(view(pair.source)))
    return d / "template.fits", srcs


def gpualign_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "gpualign", *map(str, args), "--backend", "numpy"]


def run_cli(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(gpualign_cmd(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of the process group ``pgid``."""
    alive = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def kill_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL the whole process group of ``proc`` and wait until none of it runs."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while group_members(proc.pid):
        assert time.monotonic() < deadline, f"process group {proc.pid} survived SIGKILL"
        time.sleep(0.02)


def names_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def batch_id(data: bytes) -> bytes:
    ids = BATCH_CARD.findall(data[:28800])  # in the primary header, once
    assert len(ids) == 1, ids
    return ids[0]


def without_batch_id(data: bytes) -> bytes:
    """The file's bytes with the value of its GA_BATCH card blanked (same length)."""
    return data.replace(b"GA_BATCH= '" + batch_id(data) + b"'", b"GA_BATCH= '" + b"-" * 16 + b"'")


# ------------------------------------------------------------------ 1. SIGKILL, resume


def test_sigkilled_batch_resumes_to_the_uninterrupted_result(frames, tmp_path):
    """SIGKILL the batch (its process group) at its first output; --skip-existing finishes.

    The resumed directory equals an uninterrupted run's: same names, same bytes but for
    the batch id; the outputs of the killed run are kept as they were, and no
    temporary file is left.
    """
    template, srcs = frames
    expected = sorted(f"{s.stem}_aligned.fits" for s in srcs)
    args = (*srcs, "-t", template)

    ref = run_cli("align", *args, "-o", tmp_path / "ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    assert names_in(tmp_path / "ref") == expected

    out = tmp_path / "out"
    out.mkdir()
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(gpualign_cmd("align", *args, "-o", out), cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not any(n.endswith("_aligned.fits") and not n.startswith(".")
                          for n in os.listdir(out)):
                assert proc.poll() is None, (proc.returncode,
                                             (tmp_path / "killed.log").read_text())
                assert time.monotonic() < deadline, "no output after 120 s"
                time.sleep(0.002)
        finally:
            kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    left = {p.name: p.read_bytes() for p in out.iterdir() if not TEMPORARY.match(p.name)}
    temporaries = [n for n in names_in(out) if TEMPORARY.match(n)]
    assert set(left) <= set(expected), names_in(out)
    assert 1 <= len(left) < len(expected), sorted(left)  # killed mid-batch
    killed_ids = {batch_id(b) for b in left.values()}
    assert len(killed_ids) == 1
    mtimes = {n: (out / n).stat().st_mtime_ns for n in left}

    res = run_cli("align", *args, "-o", out, "--skip-existing", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout, res.stderr)
    n_missing = len(expected) - len(left)
    assert res.stdout.splitlines()[-1] == f"{n_missing} aligned, {len(left)} skipped, 0 failed"
    assert names_in(out) == expected, temporaries  # all there, no temporary left
    for name in left:  # untouched by the resumed run
        assert (out / name).read_bytes() == left[name]
        assert (out / name).stat().st_mtime_ns == mtimes[name]
    resumed_ids = set()
    for name in expected:
        got, want = (out / name).read_bytes(), (tmp_path / "ref" / name).read_bytes()
        assert without_batch_id(got) == without_batch_id(want), name
        if name not in left:
            resumed_ids.add(batch_id(got))
    assert len(resumed_ids) == 1 and resumed_ids.isdisjoint(killed_ids)
    with fits.open(out / expected[0]) as hd:
        assert hd[0].header["GA_NMAT"] > 50 and hd["FOOTPRINT"].data.mean() > 0.5


# ------------------------------------------------------- 2. a Dask worker SIGKILLed


KILL_BEFORE_PUBLISH = "c"  # first attempt: complete temporary file, not yet renamed
KILL_AFTER_PUBLISH = "d"  # first attempt: output published, result not yet reported


def _signal_and_wait_for_death(root: Path, stem: str) -> None:
    """Tell the test which worker process holds ``stem`` (busy-<stem>), then wait to die."""
    tmp = root / f".busy-{stem}"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, root / f"busy-{stem}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise RuntimeError(f"worker {os.getpid()} holding {stem} was not killed")


def killed_once(task, ctx):
    """Frame function whose first attempt of c and d waits, in its worker, to be killed.

    Every real write is logged to ``writes.log`` (stem and worker PID).
    """
    from gpualign.batch import process_frame

    root = Path(task.output).parents[1]
    stem = Path(task.source).stem
    try:
        os.close(os.open(root / f"attempt-{stem}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        first = True
    except FileExistsError:
        first = False
    with ExitStack() as stack:
        if first and stem == KILL_BEFORE_PUBLISH:
            stack.enter_context(mock.patch(
                "gpualign.io._write.publish",
                side_effect=lambda tmp, path: _signal_and_wait_for_death(root, stem)))
        res = process_frame(task, ctx)
    if res.written:
        with open(root / "writes.log", "a") as f:
            f.write(f"{stem} {os.getpid()}\n")
    if first and stem == KILL_AFTER_PUBLISH:
        _signal_and_wait_for_death(root, stem)
    return res


@pytest.fixture
def cluster():
    """Two single-threaded worker processes (with their nannies) on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    cloudpickle = pytest.importorskip("cloudpickle")
    # killed_once goes to the workers by value (they cannot import this test module)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                      silence_logs=50) as lc:
            with distributed.Client(lc) as client:
                yield client
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_dask_worker_killed_from_outside(cluster, frames, pair, tmp_path):
    from gpualign.batch import run_batch
    from gpualign.detect import detect

    client = cluster
    template, all_srcs = frames
    srcs = all_srcs[:4]
    stems = [s.stem for s in srcs]
    cat = detect(pair.template)
    out = tmp_path / "out"
    out.mkdir()

    killed: dict[str, int] = {}
    with ThreadPoolExecutor(1) as ex:
        batch = ex.submit(run_batch, srcs, cat, None, S, out, scheduler=client,
                          frame_fn=killed_once, backend="numpy", timeout=120)
        deadline = time.monotonic() + 120
        while len(killed) < 2 and not batch.done():
            assert time.monotonic() < deadline, f"workers never got busy: {killed}"
            for stem in (KILL_BEFORE_PUBLISH, KILL_AFTER_PUBLISH):
                busy = tmp_path / f"busy-{stem}"
                if stem in killed or not busy.exists():
                    continue
                pid = int(busy.read_text())
                # a worker process (the nannies, in this process, start them)
                assert pid != os.getpid() and psutil.Process(pid).ppid() == os.getpid()
                tmps = [n for n in names_in(out) if n.startswith(f".{stem}_aligned.fits.")]
                if stem == KILL_BEFORE_PUBLISH:  # the complete, unpublished temporary
                    assert len(tmps) == 1 and TEMPORARY.match(tmps[0]), names_in(out)
                    assert not (out / f"{stem}_aligned.fits").exists()
                else:
                    assert tmps == [] and (out / f"{stem}_aligned.fits").exists()
                os.kill(pid, signal.SIGKILL)
                killed[stem] = pid
            time.sleep(0.01)
        results = batch.result(timeout=150)

    assert sorted(killed) == [KILL_BEFORE_PUBLISH, KILL_AFTER_PUBLISH], killed
    client.wait_for_workers(2, timeout=60)  # the nannies restarted the killed workers
    assert set(client.run(os.getpid).values()).isdisjoint(killed.values())
    assert [r.status for r in results] == ["ok"] * 4, [r.message for r in results]
    by = {Path(r.source).stem: r for r in results}
    for stem, pid in killed.items():  # finished by another (or a restarted) worker
        assert int(by[stem].worker.split(":")[1]) != pid
    writes = sorted((tmp_path / "writes.log").read_text().split()[::2])
    assert writes == stems  # each output written exactly once
    assert not by[KILL_AFTER_PUBLISH].written
    assert "earlier attempt" in by[KILL_AFTER_PUBLISH].message
    assert by[KILL_BEFORE_PUBLISH].written
    assert names_in(out) == [f"{s}_aligned.fits" for s in stems]  # no temporaries left
    assert len({fits.getheader(r.output)["GA_BATCH"] for r in results}) == 1

    (tmp_path / "serial").mkdir()
    serial = run_batch(srcs, cat, None, S, tmp_path / "serial", processes=1, backend="numpy")
    for s, d in zip(serial, results, strict=True):
        assert s.status == "ok"
        with fits.open(s.output) as a, fits.open(d.output) as b:
            np.testing.assert_array_equal(a[0].data, b[0].data)
            np.testing.assert_array_equal(a["FOOTPRINT"].data, b["FOOTPRINT"].data)
            ha, hb = a[0].header.copy(), b[0].header.copy()
            del ha["GA_BATCH"], hb["GA_BATCH"]
            assert ha == hb
            assert hb["GA_NMAT"] > 50


# ----------------------------------------------------- 3. two writers, one output


# ``gpualign`` with a rendezvous just before the rename of its output: each writer notes
# how many temporaries of the output it sees, then waits (30 s at most, else it fails)
# until the other has written its temporary file too; so the two writers always overlap.
RENDEZVOUS = """
import os, sys, time
from pathlib import Path

import gpualign.io._write as w

real = w.publish


def publish(tmp, path):
    d = Path(os.environ["GPUALIGN_TEST_RENDEZVOUS"])
    tmps = list(Path(path).parent.glob(f".{Path(path).name}.*.tmp"))
    (d / f".{os.getpid()}").write_text(str(len(tmps)))
    os.replace(d / f".{os.getpid()}", d / f"arrived-{os.getpid()}")
    deadline = time.monotonic() + 30
    while len(list(d.glob("arrived-*"))) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("the other writer never came")
        time.sleep(0.001)
    real(tmp, path)


w.publish = publish
from gpualign.cli import main

main()
"""


def test_two_processes_overwriting_one_output(frames, solve_pair, pair, tmp_path):
    """Two ``gpualign apply --overwrite`` onto one path at once: both succeed, and the path
    holds one writer's complete file (never a mix, never a partial file), no temporary.

    The writers differ (spline order 3 and 1), so a mix of their bytes would show; both
    hold their complete temporary file at the same time, then rename it; a reader reads
    the path all along and must only ever see a complete file.
    """
    template, srcs = frames
    transform = tmp_path / "t.json"
    solve_pair(pair).save(transform)
    n = 1536
    args = ("apply", transform, srcs[0], "--output-shape", n, n)  # a 12 MB file
    orders = (3, 1)

    singles = [subprocess.Popen(gpualign_cmd(*args, "--interp-order", order, "-o",
                                             tmp_path / f"ref{order}.fits"),
                                cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                                start_new_session=True) for order in orders]
    try:
        for p in singles:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        for p in singles:
            if p.poll() is None:
                kill_group(p)
    refs = [(tmp_path / f"ref{order}.fits").read_bytes() for order in orders]
    assert refs[0] != refs[1] and len(refs[0]) == len(refs[1])

    out = tmp_path / "race" / "out.fits"
    out.parent.mkdir()
    for rnd in range(3):  # the first round creates the file, the others replace it
        meet = tmp_path / f"rendezvous-{rnd}"
        meet.mkdir()
        env = dict(os.environ, GPUALIGN_TEST_RENDEZVOUS=str(meet))
        procs = []
        try:
            for i, order in enumerate(orders):
                cmd = [sys.executable, "-c", RENDEZVOUS,
                       *gpualign_cmd(*args, "--interp-order", order, "-o", out,
                                     "--overwrite")[3:]]
                with open(tmp_path / f"log-{rnd}-{i}", "w") as log:
                    procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            deadline = time.monotonic() + 120
            while any(p.poll() is None for p in procs):  # what a reader sees meanwhile
                assert time.monotonic() < deadline, "writers still running after 120 s"
                try:
                    data = out.read_bytes()
                except FileNotFoundError:
                    assert rnd == 0, "the output vanished while being replaced"
                    continue
                if data not in refs:  # (not an assert: pytest would print 12 MB)
                    pytest.fail(f"round {rnd}: a reader saw {len(data)} bytes, not a whole file")
                time.sleep(0.005)
            codes = [p.wait(timeout=10) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    kill_group(p)
        logs = [(tmp_path / f"log-{rnd}-{i}").read_text() for i in range(2)]
        assert codes == [0, 0], (rnd, logs)
        # both writers held their temporary at once (the later one saw both: it did not
        # remove the other's, a live process's, as a stale one)
        seen = sorted(p.read_text() for p in meet.glob("arrived-*"))
        assert len(seen) == 2 and seen[-1] == "2", (rnd, seen)
        assert names_in(out.parent) == ["out.fits"], rnd  # no temporary left
        final = out.read_bytes()
        if final not in refs:
            pytest.fail(f"round {rnd}: {len(final)} bytes, neither writer's file")
        with fits.open(out) as hd:
            hd.verify("exception")
            assert hd[0].header["GA_ORDER"] == orders[refs.index(final)]
            assert hd[0].data.shape == (n, n)
            assert hd["FOOTPRINT"].data.sum() > 0.5 * S[0] * S[1]
