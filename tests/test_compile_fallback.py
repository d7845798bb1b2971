"""Training with torch.compile falls back to eager, once and with a note, when the compiler fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import bench.train
from bench.checkpoint import latest_checkpoint
from bench.config import parse_set, resolve
from bench.dist import DistInfo
from bench.train import train
from bench.train_step import compile_failure

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
SMALL = ["data.res=16", "data.synthetic_size=16", "train.batch_size=8", "train.total_images=32", "train.grid_size=0"]
SMALL += ["model.backbone.depth=1", "model.backbone.hidden=32", "model.backbone.heads=2", "train.checkpoint_every=0"]


class FakeCompilerError(RuntimeError):
    """Stands for an error raised inside torch.compile's stack (what compile_failure recognises by module)."""


FakeCompilerError.__module__ = "torch._inductor.exc"


class Failing(nn.Module):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def forward(self, *args: object) -> torch.Tensor:
        raise self.error


def _cfg(compile_: bool):
    return resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in [*SMALL, f"train.compile={compile_}".lower()]])


def test_a_compiler_failure_trains_eagerly_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eager = train(_cfg(False), tmp_path / "eager", CPU, None, tmp_path / "cache", progress=False)
    monkeypatch.setattr(bench.train, "compile_loss", lambda m, **_: Failing(FakeCompilerError("boom")))
    fell = train(_cfg(True), tmp_path / "fell", CPU, None, tmp_path / "cache", progress=False)
    assert fell.state.step == eager.state.step == 4
    a = load_file(str(latest_checkpoint(tmp_path / "eager") / "ema.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "fell") / "ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the re-run starts from the failed attempt's RNG state
    events = [json.loads(line) for line in (tmp_path / "fell" / "stats.jsonl").read_text().splitlines()]
    notes = [e for e in events if e.get("event") == "compile_fallback"]
    assert len(notes) == 1 and notes[0]["reason"] == "FakeCompilerError: boom" and notes[0]["images"] == 0


def test_other_errors_are_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.train, "compile_loss", lambda m, **_: Failing(ValueError("a model bug")))
    with pytest.raises(ValueError, match="a model bug"):
        train(_cfg(True), tmp_path / "run", CPU, None, tmp_path / "cache", progress=False)
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = FakeCompilerError("inner")
    assert compile_failure(wrapped) and not compile_failure(RuntimeError("plain"))
