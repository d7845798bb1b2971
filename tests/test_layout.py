"""The layout's one rule for bench/ (README "Layout"): the harness imports no family code; families are reached
through the "module:attr" strings of bench/registry.py, so a new family changes nothing in bench/."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
FAMILY_PACKAGES = ("models", "baselines")


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_bench_imports_no_family_package() -> None:
    offenders = [
        f"{path.relative_to(BENCH.parent)}: {name}"
        for path in sorted(BENCH.rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in FAMILY_PACKAGES
    ]
    assert offenders == []
    assert len(list(BENCH.rglob("*.py"))) > 50  # the scan saw the package
