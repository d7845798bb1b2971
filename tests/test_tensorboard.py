"""TensorBoard logs beside stats.jsonl (when TensorBoard is installed) and training without it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from bench.checkpoint import latest_checkpoint
from bench.config import parse_set, resolve
from bench.dist import DistInfo
from bench.train import train

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
SCALARS = ("train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "train/nonfinite_skipped")


def tiny_run(run_dir: Path, images: int, checkpoint_every: int = 1_000_000) -> None:
    sets = [
        "data.res=16",
        "data.synthetic_size=32",
        "train.batch_size=8",
        f"train.total_images={images}",
        "train.log_every=8",
        "train.grid_size=0",
        f"train.checkpoint_every={checkpoint_every}",
    ]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in sets])
    train(cfg, run_dir, CPU, None, run_dir.parent / "cache", progress=False)


def stats_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_tensorboard_gets_the_stats_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    tiny_run(run_dir, 16, checkpoint_every=8)
    shutil.rmtree(latest_checkpoint(run_dir))  # as if stopped hard after 16 images, with a checkpoint at 8
    tiny_run(run_dir, 32)  # resumes at 8 images: the event at 16 is purged and logged again, not repeated
    assert f"tensorboard: logging to {run_dir / 'tensorboard'}" in capsys.readouterr().err
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert set(SCALARS) <= set(events.Tags()["scalars"])
    rows = stats_rows(run_dir)
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["images"] for r in rows] == [8, 16, 24, 32]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in rows], rel=1e-6)


def test_training_without_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when it is not installed
    run_dir = tmp_path / "run"
    tiny_run(run_dir, 16)
    assert "tensorboard: not installed, stats.jsonl only" in capsys.readouterr().err
    assert not (run_dir / "tensorboard").exists()
    assert [r["images"] for r in stats_rows(run_dir)] == [8, 16]
