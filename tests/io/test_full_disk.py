"""A full disk, simulated with a file size limit (``RLIMIT_FSIZE``): a clean one-line
error and exit code 1, no output, no temporary, no saved transform, inputs untouched;
for the in-memory write (astropy) and for the streamed tile-by-tile writer alike."""

from __future__ import annotations

import hashlib
import resource
import signal
import subprocess
import sys

import pytest
from astropy.io import fits

#: Bytes a file may grow to: the inputs (256x256 float32, 263 kB) are already written;
#: every output below is larger.
LIMIT = 200_000


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead


@pytest.fixture(scope="module")
def inputs(make_pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("fulldisk")
    pair = make_pair((256, 256), shift=(3.5, -2.5), n_stars=200, seed=11)
    fits.PrimaryHDU(pair.source).writeto(d / "source.fits")
    fits.PrimaryHDU(pair.template).writeto(d / "template.fits")
    return d


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}


@pytest.mark.parametrize("extra", [
    [],                                          # in memory, written by astropy
    ["--output-shape", "4100", "4100"],          # streamed tile by tile into the file
    ["--save-transform", "t.json"],              # no transform without its image
], ids=["in-memory", "streamed", "with-transform"])
def test_full_disk_is_one_line_and_leaves_nothing(inputs, extra):
    before = _digest(inputs)
    proc = subprocess.run(
        [sys.executable, "-m", "gpualign", "align", "source.fits", "-t", "template.fits",
         "-o", "out.fits", "--backend", "numpy", *extra],
        cwd=inputs, preexec_fn=_limit_file_size, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpualign: error: cannot write out.fits: the disk is full")
    assert _digest(inputs) == before  # no output, no temporary, no transform, same inputs
