"""The repository's folders keep their direction: bench/ and testkit/ never import tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[str]:
    mods = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            mods.append(node.module or "")
    return mods


def test_bench_and_testkit_do_not_import_the_tests():
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "testkit").glob("*.py"))
    assert len(files) > 10
    for path in files:
        bad = [m for m in _imports(path) if m == "tests" or m.startswith("tests.")]
        assert not bad, (path.name, bad)
