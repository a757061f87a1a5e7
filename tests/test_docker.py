"""Static checks of docker/ (no Docker engine needed): what the Dockerfiles COPY and
install must exist in the repository and in pyproject.toml."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
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


def test_cuda_image_is_cuda12_and_runs_gpu_tests():
    text = (DOCKER / "Dockerfile.cuda").read_text(encoding="utf-8")
    assert re.search(r"nvidia/cuda:12[.\d]*-(runtime|devel)", text), "not a CUDA 12 base"
    assert "cuda12" in text
    assert "pytest -m gpu" in text or "pytest gpualign:cuda -m gpu" in text
    assert any(
        m.startswith("gpu:") for m in pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    )
    copied = {s.rstrip("/") for s in copy_sources(DOCKER / "Dockerfile.cuda")}
    assert "tests" in copied
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    assert "docker build -f docker/Dockerfile.cuda -t gpualign:cuda ." in readme
    assert "docker run --rm --gpus all" in readme
    assert "-m gpu" in readme
