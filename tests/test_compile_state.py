"""What a mini-benchmark record says about the training path (extra.compile, compile_mode, compile_note,
compile_stats), read from the config and the loop's stats.jsonl events: eager, compiled in a mode, a mode that could
not apply, what it compiled, a fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import resolve
from bench.reproduce.scorer import compile_state


def _run_dir(tmp_path: Path, events: list[dict]) -> Path:
    rows = [{"event": "start", "images": 0}, {"images": 256, "step": 1, "loss": 1.0}, *events]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _cfg(**train: object):
    return resolve(preset="lfm-tiny", overrides=[{"train": train}])


def test_eager_run(tmp_path: Path) -> None:
    assert compile_state(_cfg(), _run_dir(tmp_path, [])) == {"compile": False}


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune-no-cudagraphs"])
def test_compiled_run_names_its_mode(tmp_path: Path, mode: str) -> None:
    cfg = _cfg(compile=True, compile_mode=mode)
    assert compile_state(cfg, _run_dir(tmp_path, [])) == {"compile": True, "compile_mode": mode}


def test_a_mode_that_could_not_apply_carries_the_loops_note(tmp_path: Path) -> None:
    note = "compile_mode reduce-overhead captures CUDA graphs, which need a CUDA device: compiled without them on cpu"
    run = _run_dir(tmp_path, [{"event": "compile_note", "images": 0, "reason": note}])
    state = compile_state(_cfg(compile=True, compile_mode="reduce-overhead"), run)
    assert state == {"compile": True, "compile_mode": "reduce-overhead", "compile_note": note}


def test_a_fallback_to_eager_says_where_and_why(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, [{"event": "compile_fallback", "images": 512, "reason": "InductorError: boom"}])
    state = compile_state(_cfg(compile=True), run)
    assert state == {"compile": False, "compile_note": "compile failed at 512 images: InductorError: boom"}


def test_the_last_compile_event_says_what_the_run_compiled(tmp_path: Path) -> None:
    stats = {"graphs": 2, "compile_seconds": 80.5, "fx_graph_cache_hits": 0, "fx_graph_cache_misses": 4}
    events = [{"event": "compile", "images": 256, **stats, "graphs": 1}, {"event": "compile", "images": 512, **stats}]
    state = compile_state(_cfg(compile=True), _run_dir(tmp_path, events))
    assert state == {"compile": True, "compile_mode": "default", "compile_stats": stats}
