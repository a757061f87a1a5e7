"""No leftovers: a killed writer's temporary file is removed by the next run that writes
the same output; temporaries of live processes and of other hosts are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from gpualign._system import _host_tag, remove_stale_temporaries
from gpualign.io import write_fits_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_write_removes_a_dead_writers_temporary(tmp_path):
    out = tmp_path / "o.fits"
    host = _host_tag()
    dead = tmp_path / f".o.fits.{host}-{_dead_pid()}.x1.tmp"
    live = tmp_path / f".o.fits.{host}-{os.getpid()}.x2.tmp"
    other = tmp_path / f".o.fits.otherhost-{_dead_pid()}.x3.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    write_fits_atomic(out, [fits.PrimaryHDU(np.zeros((4, 4), np.float32))])
    assert out.is_file() and not dead.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["o.fits", live.name, other.name])


def test_a_killed_writer_leaves_a_named_temporary_that_is_cleaned(tmp_path):
    """SIGKILL a process in the middle of writing: its temporary carries its host and
    pid, and the next writer of that output removes it."""
    out = tmp_path / "big.fits"
    code = (
        "import os, signal, numpy as np; from astropy.io import fits\n"
        "from gpualign.io import write_fits_atomic\n"
        "real = fits.HDUList.writeto\n"
        "def dying(self, name, **kw):\n"
        "    open(name, 'wb').write(b'half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "fits.HDUList.writeto = dying\n"
        f"write_fits_atomic({str(out)!r}, [fits.PrimaryHDU(np.zeros((8, 8), np.float32))])\n")
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".big.fits.*.tmp"))
    assert len(left) == 1 and f"{_host_tag()}-" in left[0].name and not out.exists()
    assert remove_stale_temporaries(out) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_zombie_writers_temporary_is_removed(tmp_path):
    """A writer killed but not reaped (a container whose init never reaps) is dead."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{proc.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "never became a zombie"
        out = tmp_path / "z.fits"
        (tmp_path / f".z.fits.{_host_tag()}-{proc.pid}.x1.tmp").write_bytes(b"partial")
        assert remove_stale_temporaries(out) == 1
        assert list(tmp_path.iterdir()) == []
    finally:
        proc.wait()
