"""The performance-goals table: goal records beside thresholds and anchors, training judged against the anchor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.perf.goals import sampler_goal
from bench.perf.suites import training_suite
from bench.report.build import generate
from bench.report.goals import load_anchors

TINY = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
CPU = torch.device("cpu")


def _anchors(results: Path, official: float) -> None:
    (results / "anchors").mkdir(parents=True, exist_ok=True)
    anchors = {"train-official-b64-bf16": {"value": official, "unit": "images/s", "gpu": "H100", "what": "test"}}
    (results / "anchors" / "performance.json").write_text(json.dumps({"source": "test", "anchors": anchors}))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    presets = ["lfm-celebahq256-l2", "lapflow-celebahq256-l2"]
    training_suite(CPU, folder, presets, batch=2, warmup=0, steps=1, precision="fp32", backbone=TINY)
    sampler_goal(CPU, folder, [256], ["eager"], steps=2, warmup=0, repeats=1, batch_scale=1 / 64, backbone=TINY)
    return folder


def _rows(results: Path) -> dict[tuple[str, str], dict[str, str]]:
    report = generate(results, results / "no-runs", with_plots=False)
    (table,) = [t for t in report.tables if t.id == "performance-goals"]
    assert not any(t.id == "other" for t in report.tables)  # every goal record has its place
    rows = [dict(zip(table.headers, (c.text for c in row), strict=True)) for row in table.rows]
    return {(row["What"], row["Method"]): row for row in rows}


@pytest.mark.parametrize(("official", "met"), [(0.001, "yes"), (1e9, "no")])
def test_lfm_training_is_judged_against_twice_the_anchor(results: Path, official: float, met: str) -> None:
    _anchors(results, official)
    rows = _rows(results)
    lfm = rows[("Training images/s, batch 64", "LFM")]
    assert lfm["Met"] == met and lfm["Threshold"].startswith(">= ") and "(2x anchor)" in lfm["Threshold"]
    assert lfm["Anchor"].endswith("images/s (H100)") and lfm["GPU"] == "cpu"


def test_lapflow_training_and_sampler_rows(results: Path) -> None:
    _anchors(results, 1.0)
    rows = _rows(results)
    lapflow = rows[("Training images/s, batch 64", "LapFlow")]
    assert "(LFM, same protocol)" in lapflow["Threshold"] and lapflow["Met"] in ("yes", "no")
    ratio = rows[("Sampler time vs LFM, equal NFE", "LapFlow")]
    assert ratio["Threshold"] == "<= 0.700" and ratio["Notes"].startswith("FLOP ratio 0.7")


def test_bad_anchor_file_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "performance.json").write_text("{}")
    with pytest.raises(BenchError, match="is not valid"):
        load_anchors(tmp_path)
    assert load_anchors(tmp_path / "elsewhere") == {}
