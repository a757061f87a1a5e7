"""Static checks of docker/ (no Docker engine needed): what the Dockerfiles COPY and
install must exist in the repository and in pyproject.toml, the images install what the
README's install lines do, and the CUDA image's test command (docker/gpu-tests.sh,
`pytest -m gpu`) is shipped and wired to the tests it runs."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
GPU_TESTS = DOCKER / "gpu-tests.sh"

if not (DOCKER / "Dockerfile.cuda").is_file():  # e.g. the tests shipped in the CUDA image
    pytest.skip("docker/ is not in this tree", allow_module_level=True)
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def copy_sources(path: Path) -> list[str]:
    sources: list[str] = []
    for word, args in instructions(path):
        if word not in ("COPY", "ADD"):
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        if any(p.startswith("--from") for p in args.split()):
            continue  # copies from another stage, not from the context
        assert len(parts) >= 2, f"{path.name}: malformed {word} {args}"
        sources += parts[:-1]
    return sources


def ignore_patterns(path: Path) -> list[str]:
    ign = path.with_name(path.name + ".dockerignore")
    if not ign.is_file():
        ign = REPO / ".dockerignore"
    if not ign.is_file():
        return []
    lines = ign.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfiles_exist():
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile.cuda", "Dockerfile.cpu"} <= names
    assert (DOCKER / "README.md").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_are_not_ignored(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing"
    patterns = ignore_patterns(dockerfile)
    for src in sources:
        rel = src.rstrip("/")
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, src
        matches = list(REPO.glob(rel)) if any(c in rel for c in "*?[") else [REPO / rel]
        assert matches and all(m.exists() for m in matches), (
            f"{dockerfile.name} copies {src!r}, missing from the repository"
        )
        top = Path(rel).parts[0]
        for pat in patterns:
            assert not fnmatch.fnmatch(rel, pat) and not fnmatch.fnmatch(top, pat), (
                f"{dockerfile.name} copies {src!r} but its dockerignore excludes {pat!r}"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installed_extras_exist(dockerfile):
    extras = set(pyproject()["project"].get("optional-dependencies", {}))
    runs = [args for word, args in instructions(dockerfile) if word == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, f"{dockerfile.name} installs nothing with pip"
    for run in installs:
        for group in re.findall(r"\.\[([^\]]*)\]", run):
            for extra in filter(None, (e.strip() for e in group.split(","))):
                assert extra in extras, (
                    f"{dockerfile.name} installs extra {extra!r}, not in pyproject.toml "
                    f"(has {sorted(extras)})"
                )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_the_gpualign_script(dockerfile):
    scripts = pyproject()["project"].get("scripts", {})
    assert "gpualign" in scripts
    entry = [args for word, args in instructions(dockerfile) if word == "ENTRYPOINT"]
    assert entry and '"gpualign"' in entry[-1], f"{dockerfile.name}: ENTRYPOINT {entry}"
    # the package files pyproject's build needs are copied (readme included)
    copied = {s.rstrip("/") for s in copy_sources(dockerfile)}
    assert {"pyproject.toml", "gpualign", "kernels"} <= copied
    readme = pyproject()["project"].get("readme")
    if isinstance(readme, str):
        assert readme in copied


def copies(path: Path) -> list[tuple[list[str], str, dict[str, str]]]:
    """(sources, destination, --flags) of each COPY/ADD from the build context."""
    out = []
    for word, args in instructions(path):
        if word not in ("COPY", "ADD"):
            continue
        words = args.split()
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        if "from" in flags:
            continue
        parts = [w for w in words if not w.startswith("--")]
        out.append((parts[:-1], parts[-1], flags))
    return out


def workdir_at(path: Path, predicate) -> str | None:
    """The WORKDIR in force at the first instruction for which predicate(word, args)."""
    cwd = None
    for word, args in instructions(path):
        if predicate(word, args):
            return cwd
        if word == "WORKDIR":
            cwd = args if args.startswith("/") or cwd is None else f"{cwd}/{args}"
    return None


def final_workdir(path: Path) -> str | None:
    """The WORKDIR the container starts in."""
    dirs = [a for w, a in instructions(path) if w == "WORKDIR"]
    return dirs[-1] if dirs else None


def pip_installs(text: str) -> list[tuple[bool, frozenset[str]]]:
    """(editable, extras) of every ``pip install`` of the project itself (``.``) in text."""
    found = []
    pat = r"pip install((?:\s+-[-\w]+)*)\s+[\"']?\.(?:\[([^\]]*)\])?[\"']?(?=\s|$|&|;)"
    for m in re.finditer(pat, text, flags=re.M):
        extras = frozenset(e.strip() for e in (m.group(2) or "").split(",") if e.strip())
        found.append(("-e" in m.group(1).split() or "--editable" in m.group(1), extras))
    return found


def script_lines(path: Path) -> list[str]:
    """Shell lines without comments and blank lines."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_cuda_image_is_cuda12():
    text = (DOCKER / "Dockerfile.cuda").read_text(encoding="utf-8")
    assert re.search(r"nvidia/cuda:12[.\d]*-(runtime|devel)", text), "not a CUDA 12 base"
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(dep.startswith("cupy-cuda12x") for dep in extras["cuda12"])


def test_install_lines_are_the_readmes():
    """CPU image: the README's ``pip install .``; CUDA image: its ``pip install ".[cuda12]"``
    plus only the ``test`` extra (pytest & co, to run the gpu tests). Never editable."""
    readme = pip_installs((REPO / "README.md").read_text(encoding="utf-8"))
    assert (False, frozenset()) in readme and (False, frozenset({"cuda12"})) in readme, readme

    def image(name: str) -> tuple[bool, frozenset[str]]:
        runs = [a for w, a in instructions(DOCKER / name) if w == "RUN" and "pip install" in a]
        found = [i for r in runs for i in pip_installs(r)]
        assert len(found) == 1, f"{name}: expected one install of the project, got {runs}"
        return found[0]

    assert image("Dockerfile.cpu") == (False, frozenset())
    editable, extras = image("Dockerfile.cuda")
    assert not editable
    assert "cuda12" in extras
    assert extras - {"cuda12"} == {"test"}, f"CUDA image installs extras {sorted(extras)}"
    test_deps = pyproject()["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"pytest\b", d) for d in test_deps)


def test_cpu_image_builds_the_host_library():
    """The slim CPU image installs a compiler for the wheel build (the fast CPU warp),
    checks the library loads, and removes the compiler in the same layer."""
    runs = [a for w, a in instructions(DOCKER / "Dockerfile.cpu") if w == "RUN"]
    (run,) = [r for r in runs if "pip install" in r]
    steps = [s.strip() for s in run.split("&&")]
    install = next(i for i, s in enumerate(steps) if s.startswith("pip install"))
    assert any("apt-get install" in s and "g++" in s for s in steps[:install]), steps
    assert any("_host.status()" in s and "compiled" in s for s in steps[install + 1:]), steps
    assert any("apt-get purge" in s and "g++" in s for s in steps[install + 1:]), steps


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_host_library_built_here_is_not_copied(dockerfile):
    """An editable install leaves gpualign/libgpualign_host.so in the checkout; the wheel
    built in the image must not pick it up (the image builds its own, or none)."""
    patterns = ignore_patterns(dockerfile)
    assert any(fnmatch.fnmatch("gpualign/libgpualign_host.so", p) for p in patterns), patterns


def test_cuda_image_ships_its_test_command():
    cuda = DOCKER / "Dockerfile.cuda"
    installed = {Path(dst): (srcs, flags) for srcs, dst, flags in copies(cuda)}
    dst = Path("/usr/local/bin/gpualign-gpu-tests")
    assert dst in installed, f"gpu-tests.sh is not installed as {dst}"
    srcs, flags = installed[dst]
    assert srcs == ["docker/gpu-tests.sh"] and GPU_TESTS.is_file()
    mode = int(flags.get("chmod", "0"), 8) or os.stat(GPU_TESTS).st_mode
    assert mode & 0o111 == 0o111, "the test command is not executable in the image"
    # the tests and pytest's configuration are in the image, where the script runs them
    copied = {s.rstrip("/") for s in copy_sources(cuda)}
    assert {"tests", "pyproject.toml"} <= copied
    home = final_workdir(cuda)
    assert home == "/opt/gpualign"  # the script's default GPUALIGN_SRC, checked below

    def landed(name: str) -> str:
        """Where the COPY of ``name`` puts it in the image."""
        cwd = workdir_at(cuda, lambda w, a: w == "COPY" and name in a.split())
        srcs, dst = next((s, d) for s, d, _ in copies(cuda) if name in s)
        base = dst if dst.startswith("/") else f"{cwd}/{dst}"
        base = os.path.normpath(base)
        return base if not dst.endswith("/") or name.endswith("/") else f"{base}/{name}"

    assert landed("pyproject.toml") == f"{home}/pyproject.toml"
    assert landed("tests/") == f"{home}/tests"
    markers = pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("gpu:") for m in markers)
    assert any("pytest.mark.gpu" in p.read_text(encoding="utf-8")
               for p in (REPO / "tests").rglob("test_*.py"))
    label = [a for w, a in instructions(cuda) if w == "LABEL"]
    assert any("--entrypoint gpualign-gpu-tests gpualign:cuda" in a for a in label), label


def test_gpu_tests_script_runs_pytest_m_gpu():
    lines = script_lines(GPU_TESTS)
    assert GPU_TESTS.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    run = [ln for ln in lines if re.match(r"exec pytest\b", ln)]
    assert len(run) == 1, lines
    assert re.search(r"\s-m gpu\b", run[0]) and run[0].endswith('"$@"'), run[0]
    assert lines.index(run[0]) == len(lines) - 1
    cds = [ln for ln in lines if ln.startswith("cd ")]
    assert any("${GPUALIGN_SRC:-/opt/gpualign}" in ln for ln in cds), cds
    if shutil.which("sh"):
        res = subprocess.run(["sh", "-n", str(GPU_TESTS)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_readmes_run_lines_use_what_the_image_has():
    """Every documented ``docker run ... --entrypoint X gpualign:cuda`` runs the test
    command the image installs, or pytest with ``-m gpu`` (tests and config in WORKDIR)."""
    docs = {p: p.read_text(encoding="utf-8") for p in (DOCKER / "README.md", REPO / "README.md")}
    seen = set()
    for path, text in docs.items():
        for m in re.finditer(r"docker run [^\n]*--entrypoint (\S+) gpualign:cuda([^\n#]*)", text):
            entry, rest = m.group(1), m.group(2)
            assert "--gpus all" in m.group(0), f"{path.name}: {m.group(0)}"
            assert entry in ("pytest", "gpualign-gpu-tests"), f"{path.name}: {m.group(0)}"
            if entry == "pytest":
                assert re.search(r"-m gpu\b", rest), f"{path.name}: {m.group(0)}"
            seen.add((path.name, entry))
    assert ("README.md", "gpualign-gpu-tests") in seen  # docker/README.md documents it
    readme = docs[DOCKER / "README.md"]
    assert "docker build -f docker/Dockerfile.cuda -t gpualign:cuda ." in readme
    assert "docker build -f docker/Dockerfile.cpu  -t gpualign:cpu  ." in readme


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_gpu_tests_script_without_a_gpu_exits_2_in_one_line():
    """Run here (the checkout as /opt/gpualign, no device visible): one line, exit 2."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPUALIGN_SRC": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(["sh", str(GPU_TESTS), "-q"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=REPO)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpualign-gpu-tests: no usable GPU: "), err
    assert "Traceback" not in res.stderr
