"""Sampling from an EMA that still holds most of its random initialisation warns loudly (issue 14 item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.config import parse_set, resolve
from bench.dist import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
SMALL = ["data.res=16", "data.synthetic_size=16", "train.batch_size=8", "train.total_images=16", "train.grid_size=0"]
SMALL += ["model.backbone.depth=1", "model.backbone.hidden=32", "model.backbone.heads=2", "train.checkpoint_every=0"]


@pytest.mark.parametrize(("warmup", "warns"), [(False, True), (True, False)])
def test_loading_a_young_ema_warns_unless_it_warmed_up(
    tmp_path: Path, capsys: pytest.CaptureFixture, warmup: bool, warns: bool
) -> None:
    from bench.checkpoint import load_run
    from bench.train import train

    sets = [*SMALL, f"train.ema_warmup={str(warmup).lower()}", "train.ema_decay=0.999"]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in sets])
    train(cfg, tmp_path / "run", CPU, None, tmp_path / "cache", progress=False)
    capsys.readouterr()
    load_run(tmp_path / "run", "ema")
    err = capsys.readouterr().err
    assert ("WARNING: the EMA weights after 2 steps still hold 100% of their random initial values" in err) == warns
    load_run(tmp_path / "run", "model")  # the raw weights are not an average: no warning
    assert "WARNING" not in capsys.readouterr().err


def test_every_short_run_preset_warms_its_ema_up() -> None:
    from bench.registry import all_presets

    short = [name for name in all_presets() if name.endswith("-tiny") or "-mini" in name]
    assert len(short) >= 12
    assert all(resolve(preset=name).train.ema_warmup for name in short), short
