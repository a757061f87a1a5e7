"""What the engine asks of the machine: cores, memory, safe forking, atomic files.

One place for each: every stage that sizes a pool or a tile asks :func:`usable_cores`
and :func:`available_memory`; every file gpualign writes goes through a temporary
file in the destination's directory and a rename, so a reader (or a crash) never
sees half a file.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpualign._errors import InputError, OutputError

__all__ = ["usable_cores", "available_memory", "virtual_memory_size", "umask", "write_text_atomic",
           "refuse_overwriting_inputs", "remove_stale_temporaries",
           "temporary_beside", "fork_workers", "forked_pool", "mp_context",
           "limit_blas_threads", "single_threaded_blas", "reporting_write_errors"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_headroom() -> int | None:
    """Bytes a container's memory limit still allows (cgroup v2, then v1), if limited."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 1 << 60:
            return max(cap - used, 0)
    return None


def virtual_memory_size() -> int | None:
    """Bytes of address space this process holds (``VmSize``; None where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _address_space_headroom() -> int | None:
    """Bytes the address-space limit (``ulimit -v``) still allows, if one is set."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    held = virtual_memory_size()
    return soft if held is None else max(soft - held, 0)


def available_memory() -> int:
    """Bytes of memory available to new allocations.

    The least of the system's ``MemAvailable`` (8 GiB if unknown), a container's
    cgroup limit less its usage, and the headroom under an address-space limit.
    """
    found = [8 << 30]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = [int(line.split()[1]) * 1024]
    except OSError:
        pass
    found += [v for v in (_cgroup_headroom(), _address_space_headroom()) if v is not None]
    return min(found)


def umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum())[:24] or "host"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs here (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # Linux: the state after the command name in /proc/PID/stat; Z = zombie
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def remove_stale_temporaries(path: Path) -> int:
    """Delete the temporaries of ``path`` left by dead processes of this host; return how many.

    A run killed while writing (SIGKILL, out of memory, power) leaves its hidden
    temporary file behind; the next run that writes the same output removes it. Files
    of live processes, and of other hosts (a cluster on a shared file system), stay.
    """
    directory = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}.{_host_tag()}-"
    removed = 0
    for tmp in directory.glob(f".{path.name}.*.tmp"):
        rest = tmp.name[len(prefix):] if tmp.name.startswith(prefix) else ""
        pid = rest.split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def temporary_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new hidden temporary file in ``path``'s directory.

    Raises InputError when the directory does not exist. The name is
    ``.<file name>.<host>-<pid>.<random>.tmp``: recognisable, and traceable to its
    writer, so that :func:`remove_stale_temporaries` (run here first) can remove what
    a killed writer left.
    """
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output directory does not exist: {directory}")
    remove_stale_temporaries(path)
    return tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.",
                            suffix=".tmp", dir=directory)


#: errno values that mean there is no room for the output.
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@contextmanager
def reporting_write_errors(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a one-line :class:`OutputError`.

    A full disk or a file size limit (``RLIMIT_FSIZE``) otherwise surfaces as
    ``[Errno 27] File too large`` or astropy's ``810000 requested and 72120 written``.
    The writers remove their temporary file themselves; nothing is left at ``path``.
    """
    try:
        yield
    except OSError as exc:
        text = str(exc)
        if exc.errno in _NO_ROOM or "requested and" in text:
            why = "the disk is full or the file size limit is reached"
            hint = "free some space, write elsewhere, or raise the limit (ulimit -f)"
        else:
            why = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
            hint = "check the output directory's permissions and space"
        raise OutputError(f"cannot write {path}: {why}", hint=hint) from exc


def publish(tmp: str, path: Path) -> None:
    """Give ``tmp`` the mode a plain ``open()`` would and rename it onto ``path``."""
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes the file private (0600)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = temporary_beside(Path(path))
    try:
        with reporting_write_errors(Path(path)), os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, Path(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_overwriting_inputs(outputs: Any, inputs: Any) -> None:
    """InputError when an output would replace one of the inputs, ``--overwrite`` or not.

    Compared with ``os.path.samefile`` (symbolic and hard links are the same file), so
    only outputs that exist can collide. Entries that are not paths (arrays, None) are
    passed over.
    """
    paths = [Path(p) for p in inputs if isinstance(p, (str, os.PathLike))]
    for out in outputs:
        if not isinstance(out, (str, os.PathLike)) or not Path(out).exists():
            continue
        for p in paths:
            try:
                same = os.path.samefile(out, p)
            except OSError:  # an input that does not exist (yet): reported by its reader
                continue
            if same:
                raise InputError(f"output {out} is the input {p}",
                                 hint="give another output name: inputs are never written over")


def fork_workers(wanted: int, n_jobs: int) -> int:
    """Forked worker processes for ``n_jobs`` jobs (0: do not fork).

    ``min(wanted, n_jobs)``, or 0 where forking is unavailable or unsafe: forking is
    safe only while this process runs no other Python thread (no lock can be held by a
    thread that does not exist in the child).
    """
    import multiprocessing as mp

    if (wanted < 1 or n_jobs < 1 or threading.active_count() > 1
            or "fork" not in mp.get_all_start_methods()):
        return 0
    return min(int(wanted), int(n_jobs))


@contextmanager
def forked_pool(workers: int) -> Iterator[Any]:
    """A ProcessPoolExecutor of ``workers`` forked processes (see :func:`fork_workers`)."""
    import multiprocessing as mp
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with native threads (BLAS
        # pools); the children use none of them. The workers start on first submit.
        warnings.simplefilter("ignore", DeprecationWarning)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
            yield ex


def mp_context() -> Any:
    """``fork`` while this process has one thread (fast start), else forkserver/spawn."""
    import multiprocessing as mp

    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods()
                          else "spawn")


# (setter, getter) of the BLAS libraries NumPy and SciPy load (OpenBLAS builds, MKL).
_BLAS_FUNCTIONS = (
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
)


_BLAS_FOUND: list[list[tuple[Any, Any]]] = []


def _blas_controls() -> list[tuple[Any, Any]]:
    """``(set, get)`` of every BLAS loaded in this process (Linux; none elsewhere).

    Looked up once (NumPy and SciPy load their BLAS when imported, before any warp),
    as the warp asks on every call.
    """
    import ctypes

    if _BLAS_FOUND:
        return _BLAS_FOUND[0]

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower()
                     or "mkl_rt" in line.lower()}
    except OSError:  # not Linux
        return []
    out = []
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _BLAS_FUNCTIONS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                out.append((setter, getter))
                break
    if out:
        _BLAS_FOUND.append(out)
    return out


def limit_blas_threads(n: int = 1) -> int:
    """Set the thread count of every BLAS loaded in this process; return how many were set.

    A pool runs one frame per core already; BLAS threads on top only oversubscribe
    the cores. This is what ``OPENBLAS_NUM_THREADS=1`` does, for the libraries a
    forked worker inherits already loaded.
    """
    import ctypes

    controls = _blas_controls()
    for setter, _ in controls:
        setter(ctypes.c_int(n))
    return len(controls)


_BLAS_LOCK = threading.Lock()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread inside the block, the previous counts restored after.

    For code that runs its own threads, one per core, each calling small BLAS
    products (the warp's tiles): OpenBLAS's own threads on top of them contend for
    the same cores (a 16384^2 warp with the flux's Jacobian took twice as long).
    The products' values do not depend on the BLAS thread count.
    """
    import ctypes

    with _BLAS_LOCK:
        controls = _blas_controls()
        saved = [int(get()) for _, get in controls]
        for setter, _ in controls:
            setter(ctypes.c_int(1))
    try:
        yield
    finally:
        with _BLAS_LOCK:
            for (setter, _), n in zip(controls, saved, strict=True):
                setter(ctypes.c_int(max(1, n)))
