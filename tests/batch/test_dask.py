"""Batches on a real Dask ``distributed.LocalCluster`` (worker processes, loopback only).

The cluster's result must equal the serial run (same transforms, same pixels); a
worker that dies mid-batch costs nothing: its frame is retried elsewhere, nothing
is lost, and an output an earlier attempt wrote is not written again.

Which local cluster ``--workers N`` starts (dask-cuda's one worker per GPU, or a plain
``LocalCluster``) is checked without GPUs or dask-cuda, on recording stand-ins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign._simulate import bright_overlap_stars, position_errors
from gpualign.batch import process_frame, run_batch
from gpualign.cli import app
from gpualign.detect import detect

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

S = (512, 512)
VIEWS = {  # frame -> (view of the source, source px -> frame px)
    "a": (lambda a: a, lambda x, y: (x, y)),
    "b": (lambda a: a[::-1], lambda x, y: (x, S[0] - 1 - y)),
    "c": (lambda a: a[:, ::-1], lambda x, y: (S[1] - 1 - x, y)),
    "d": (lambda a: a[::-1, ::-1], lambda x, y: (S[1] - 1 - x, S[0] - 1 - y)),
}


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on 127.0.0.1, no dashboard."""
    # The frame functions below are sent to the workers by value (they cannot import
    # this test module).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=50) as lc:
        with distributed.Client(lc) as client:
            yield lc, client
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(-8.7, 5.1), rotation_deg=-9.0, corner_distortion_px=2.0,
                     n_stars=600, seed=23)


@pytest.fixture(scope="module")
def frames(pair, tmp_path_factory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("dask")
    fits.writeto(d / "template.fits", pair.template)
    srcs = []
    for name, (view, _) in VIEWS.items():
        srcs.append(d / f"{name}.fits")
        fits.writeto(srcs[-1], np.ascontiguousarray(view(pair.source)))
    return d / "template.fits", srcs


def landing_rms(transform, name: str, pair) -> float:
    stars = bright_overlap_stars(pair, n=80)
    to_frame = VIEWS[name][1]
    err = position_errors(transform, lambda x, y: to_frame(*pair.mapping(x, y)), stars)
    return float(np.sqrt(np.nanmean(err**2)))


def cluster_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_cluster_equals_serial(cluster, frames, pair, tmp_path):
    _, client = cluster
    template, srcs = frames
    serial = gpualign.align_batch(srcs, template, tmp_path / "serial", processes=1,
                                  backend="numpy")
    dist = gpualign.align_batch(srcs, template, tmp_path / "dask", scheduler=client,
                                backend="numpy")
    workers = {int(r.worker.split(":")[1]) for r in dist}
    assert os.getpid() not in workers and workers <= cluster_pids(client)
    for s, d in zip(serial, dist, strict=True):
        assert s.status == d.status == "ok" and d.written
        np.testing.assert_array_equal(s.solution.transform.matrix, d.solution.transform.matrix)
        np.testing.assert_array_equal(s.solution.transform.coeffs, d.solution.transform.coeffs)
        # measured 0.0152-0.0160 px over the frames
        assert landing_rms(d.solution.transform, Path(d.source).stem, pair) < 0.03
        with fits.open(s.output) as a, fits.open(d.output) as b:
            np.testing.assert_array_equal(a[0].data, b[0].data)
            np.testing.assert_array_equal(a["FOOTPRINT"].data, b["FOOTPRINT"].data)
            assert b[0].header["GA_TMPL"] == a[0].header["GA_TMPL"]


def die_once(task, ctx):
    """Frame function that kills its worker process once per frame name in DIE.

    ``c`` dies before its output is written, ``d`` right after (before reporting);
    every real write is logged to ``writes.log``.
    """
    root = Path(task.output).parents[1]
    stem = Path(task.source).stem
    marker = root / f"died-{stem}"
    if stem == "c" and not marker.exists():
        marker.touch()
        os._exit(1)
    res = process_frame(task, ctx)
    if res.written:
        with open(root / "writes.log", "a") as f:
            f.write(f"{stem} {os.getpid()}\n")
    if stem == "d" and not marker.exists():
        marker.touch()
        os._exit(1)
    return res


def test_worker_dies_mid_batch(cluster, frames, pair, tmp_path):
    _, client = cluster
    template, srcs = frames
    cat = detect(pair.template)
    (tmp_path / "out").mkdir()
    results = run_batch(srcs, cat, None, S, tmp_path / "out", scheduler=client,
                        frame_fn=die_once, backend="numpy", timeout=120)
    assert (tmp_path / "died-c").exists() and (tmp_path / "died-d").exists()
    assert [r.status for r in results] == ["ok"] * 4, [r.message for r in results]
    writes = (tmp_path / "writes.log").read_text().split()[::2]
    assert sorted(writes) == ["a", "b", "c", "d"]  # each output written exactly once
    by = {Path(r.source).stem: r for r in results}
    assert not by["d"].written and "earlier attempt" in by["d"].message
    assert by["d"].n_match > 50  # read back from the output's header
    batch = {fits.getheader(r.output)["GA_BATCH"] for r in results}
    assert len(batch) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{s}_aligned.fits" for s in "abcd"]  # no temporaries left
    assert landing_rms(by["c"].solution.transform, "c", pair) < 0.03  # measured 0.0152 px
    # d's output (from its first attempt): stars measured in it sit on the truth
    with fits.open(by["d"].output) as hd:
        found = detect(np.nan_to_num(hd[0].data))
    stars = bright_overlap_stars(pair, n=60)
    d = np.hypot(found.x[:, None] - stars[:, 0], found.y[:, None] - stars[:, 1]).min(axis=0)
    assert np.median(d) < 0.1


def test_cli_scheduler_address(cluster, frames, tmp_path):
    lc, _ = cluster
    template, srcs = frames
    res = CliRunner().invoke(app, ["align", *map(str, srcs), "-t", str(template), "-o",
                                   str(tmp_path), "--scheduler", lc.scheduler_address])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert res.stdout.splitlines()[-1] == "4 aligned, 0 skipped, 0 failed"
    for s in srcs:
        assert fits.getheader(tmp_path / f"{s.stem}_aligned.fits")["GA_NMAT"] > 50


def test_cli_local_workers_and_failures(frames, tmp_path):
    template, srcs = frames
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"not a FITS file" * 300)
    res = CliRunner().invoke(app, ["align", str(srcs[0]), str(bad), str(srcs[1]), "-t",
                                   str(template), "-o", str(tmp_path / "o"), "--workers", "2"])
    assert res.exit_code == 1, (res.stdout, res.stderr)
    assert res.stdout.splitlines()[-1] == "2 aligned, 0 skipped, 1 failed"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_aligned.fits",
                                                                 "b_aligned.fits"]


def test_unreachable_scheduler_is_an_input_error(frames, tmp_path):
    import dask

    template, srcs = frames
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            res = CliRunner().invoke(app, ["align", *map(str, srcs[:2]), "-t", str(template),
                                       "-o", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 2
    assert "cannot reach the Dask scheduler" in res.stderr


# --- which local cluster ``--workers N`` starts (issue 5) -----------------------------
# No GPU and no dask-cuda here: the strict CuPy stand-in plays N visible GPUs (through
# gpualign's backend selection, as everywhere else), a fake ``dask_cuda`` module records
# how its LocalCUDACluster is built, and distributed.LocalCluster is replaced by a
# recorder too, so no cluster is started.


class _Recorder:
    """A cluster that only records its constructor's keywords (and whether it was closed)."""

    made: list

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.closed = False
        type(self).made.append(self)

    def close(self):
        self.closed = True


@pytest.fixture
def clusters(monkeypatch):
    """Fake ``dask_cuda.LocalCUDACluster`` and ``distributed.LocalCluster``: (cuda, plain)."""
    import types

    cuda = type("LocalCUDACluster", (_Recorder,), {"made": []})
    plain = type("LocalCluster", (_Recorder,), {"made": []})
    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = cuda
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(distributed, "LocalCluster", plain)
    return cuda, plain


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: CuPy (the strict stand-in) installed with n visible GPUs."""
    import contextlib

    import strict_cupy

    strict_cupy.install(monkeypatch)
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(strict_cupy.configure(device_count=n))


LOOPBACK = dict(threads_per_worker=1, host="127.0.0.1", dashboard_address=None)


@pytest.mark.parametrize("backend", ["auto", "cupy"])
@pytest.mark.parametrize("workers, n_gpu", [(8, 4), (4, 4), (2, 4), (1, 3)])
def test_local_cluster_one_worker_per_gpu(clusters, gpus, backend, workers, n_gpu):
    """CuPy with GPUs and dask-cuda: LocalCUDACluster, one worker per GPU (at most N)."""
    from gpualign.batch._dask import _local_cluster

    cuda, plain = clusters
    gpus(n_gpu)
    got = _local_cluster(workers, backend)
    assert plain.made == []
    assert len(cuda.made) == 1 and got is cuda.made[0]
    assert got.kwargs["n_workers"] == min(workers, n_gpu)
    assert {k: got.kwargs[k] for k in LOOPBACK} == LOOPBACK
    assert got.kwargs.get("processes", True) is True  # dask-cuda needs processes
    assert "CUDA_VISIBLE_DEVICES" not in got.kwargs  # all visible GPUs, one per worker


def test_local_cluster_without_dask_cuda(clusters, gpus, monkeypatch, caplog,
                                         restore_gpualign_logger):
    """GPUs but no dask-cuda: a plain LocalCluster of N processes, and a warning."""
    from gpualign.batch._dask import _local_cluster

    cuda, plain = clusters
    gpus(2)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # ``import dask_cuda`` fails
    restore_gpualign_logger.propagate = True
    with caplog.at_level("WARNING", logger="gpualign"):
        got = _local_cluster(3, "auto")
    assert cuda.made == []
    assert len(plain.made) == 1 and got is plain.made[0]
    assert got.kwargs["n_workers"] == 3 and got.kwargs["processes"] is True
    assert {k: got.kwargs[k] for k in LOOPBACK} == LOOPBACK
    assert any("dask-cuda is not installed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["numpy-backend", "no-visible-gpu", "no-cupy"])
def test_local_cluster_without_gpus(clusters, gpus, monkeypatch, case):
    """dask-cuda importable but no GPU to use: a plain LocalCluster of N processes."""
    import gpualign.backend as backend_module
    from gpualign.batch._dask import _local_cluster

    cuda, plain = clusters
    backend = "auto"
    if case == "numpy-backend":  # GPUs there, but the batch runs on NumPy
        gpus(2)
        backend = "numpy"
    elif case == "no-visible-gpu":  # CuPy installed, no device
        gpus(0)
    else:
        def missing():
            raise ModuleNotFoundError("No module named 'cupy'")

        monkeypatch.setattr(backend_module, "_import_cupy", missing)
    got = _local_cluster(3, backend)
    assert cuda.made == []
    assert len(plain.made) == 1 and got is plain.made[0]
    assert got.kwargs["n_workers"] == 3 and got.kwargs["processes"] is True
    assert {k: got.kwargs[k] for k in LOOPBACK} == LOOPBACK


def test_open_client_on_the_cuda_cluster(clusters, gpus, monkeypatch):
    """``open_client(workers=N)`` on 2 GPUs: the CUDA cluster's 2 workers, closed after."""
    from gpualign.batch._dask import open_client

    cuda, plain = clusters

    class Client:
        def __init__(self, cluster):
            self.cluster = cluster

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def scheduler_info(self):
            n = self.cluster.kwargs["n_workers"]
            return {"workers": {f"tcp://127.0.0.1:{4000 + i}": {} for i in range(n)}}

    monkeypatch.setattr(distributed, "Client", Client)
    gpus(2)
    with open_client(workers=6, backend="cupy") as (client, n_local):
        assert client.cluster is cuda.made[0] and not client.cluster.closed
        assert n_local == 2
    assert plain.made == [] and len(cuda.made) == 1 and cuda.made[0].closed
