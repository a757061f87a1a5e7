"""The README's promises about the user's files each name the tests that back them;
those tests must exist (a renamed or deleted test would leave a promise unchecked)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMISES = ("Inputs are never modified", "No half-written file",
            "One line on stderr for every failure", "Sizes are checked",
            "An interrupted batch resumes")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### What gpualign promises about your files")
    end = text.index("\n#", start + 10)
    return text[start:end]


def _bullets() -> dict[str, str]:
    bullets = re.split(r"\n- ", _section())[1:]
    return {next(p for p in PROMISES if p in b): b for b in bullets
            if any(p in b for p in PROMISES)}


def test_every_promise_is_in_the_readme_and_names_a_test():
    bullets = _bullets()
    assert sorted(bullets) == sorted(PROMISES)
    for promise, text in bullets.items():
        assert re.search(r"`tests/[\w/]+\.py", text), f"{promise!r} names no test"


def test_the_named_tests_exist():
    refs = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", _section())
    assert len(refs) >= 10
    for path, name in refs:
        file = ROOT / path
        assert file.is_file(), f"README names {path}, which does not exist"
        if name:
            tree = ast.parse(file.read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"README names {path}::{name}, which does not exist"
        else:
            assert "def test_" in file.read_text(), f"{path} holds no test"
