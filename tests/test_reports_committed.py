"""`bench report` is a pure function of results/: the committed reports/ regenerate byte-identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report.build import build_report

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / "reports" / "README.md").is_file(), reason="reports/ not generated yet")
def test_committed_reports_regenerate_byte_identically(tmp_path):
    build_report(REPO / "results", tmp_path / "reports", runs_dir=tmp_path / "no-runs")
    ours = {p.relative_to(tmp_path / "reports") for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    committed = {p.relative_to(REPO / "reports") for p in (REPO / "reports").rglob("*") if p.is_file()}
    assert ours == committed
    changed = [
        str(p) for p in sorted(ours) if (tmp_path / "reports" / p).read_bytes() != (REPO / "reports" / p).read_bytes()
    ]
    assert not changed, f"reports/ is stale; run `bench report --runs-dir /nonexistent`: {changed[:5]}"
