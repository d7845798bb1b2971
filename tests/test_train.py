"""The one training loop: resume exactness, non-finite protection, SIGTERM checkpoints, stats and grids."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.checkpoint import latest_checkpoint
from bench.config import parse_set, resolve
from bench.dist import DistInfo
from bench.errors import BenchError
from bench.train import train

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def tiny_cfg(images: int, *extra: str, family: str = "lfm"):
    sets = [
        "data.res=16",
        "data.synthetic_size=48",
        "train.batch_size=8",
        f"train.total_images={images}",
        "train.log_every=8",
        "train.grid_size=4",
        "train.checkpoint_every=1000000",
        "sample.steps=3",
        *extra,
    ]
    return resolve(preset=f"{family}-tiny", overrides=[parse_set(s) for s in sets])


def run(cfg, run_dir: Path):
    return train(cfg, run_dir, CPU, None, run_dir.parent / "cache", progress=False)


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(run_dir)
    out = {f"model.{k}": v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    out |= {f"ema.{k}": v for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    for i, s in opt["state"].items():
        out |= {f"opt.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)}
    return out


@pytest.mark.parametrize("family", ["lfm", "lapflow"])
def test_resume_equals_straight_run(tmp_path, family):
    straight = run(tiny_cfg(64, family=family), tmp_path / "straight")
    run(tiny_cfg(32, family=family), tmp_path / "resumed")
    resumed = run(tiny_cfg(64, family=family), tmp_path / "resumed")  # same command, longer: resumes at step 4
    assert straight.state.step == resumed.state.step == 8
    a, b = checkpoint_tensors(tmp_path / "straight"), checkpoint_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (tmp_path / "straight" / "stats.jsonl").read_text().splitlines()]
    assert [r["images"] for r in rows if "loss" in r] == list(range(8, 65, 8))
    assert list((tmp_path / "straight" / "samples").glob("grid-*.png"))


def test_changed_config_is_refused(tmp_path):
    run(tiny_cfg(8), tmp_path / "r")
    with pytest.raises(BenchError, match=r"different config.*train\.lr"):
        run(tiny_cfg(16, "train.lr=0.1"), tmp_path / "r")


def test_nonfinite_steps_never_reach_weights(tmp_path, monkeypatch):
    from baselines.lfm.model import LatentFlowMatching

    original = LatentFlowMatching.loss
    calls = {"n": 0}

    def sometimes_nan(self, x, y, **kw):
        calls["n"] += 1
        loss = original(self, x, y, **kw)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    monkeypatch.setattr(LatentFlowMatching, "loss", sometimes_nan)
    result = run(tiny_cfg(40), tmp_path / "r")
    assert result.state.nonfinite_skipped == 2 and result.state.step == 5
    assert all(torch.isfinite(v).all() for v in checkpoint_tensors(tmp_path / "r").values())
    calls["n"] = 0
    with pytest.raises(BenchError, match="non-finite steps"):
        run(tiny_cfg(40, "train.max_nonfinite=1"), tmp_path / "r2")


def test_sigterm_writes_a_checkpoint_and_rerun_resumes(tmp_path):
    run_dir = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "bench.cli.app",
        "train",
        "--preset",
        "lfm-tiny",
        "--no-progress",
        "--set",
        "data.res=16",
        "--set",
        "data.synthetic_size=48",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.total_images=100000000",
        "--set",
        "train.log_every=8",
        "--set",
        "train.grid_size=2",
        "--set",
        "sample.steps=2",
        "--name",
        "sig",
    ]
    env = {**__import__("os").environ, "BENCH_RUNS_DIR": str(run_dir), "BENCH_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats = run_dir / "sig" / "stats.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM: a scheduler can tell it from a finished run
    assert "interrupted" in out
    ckpt = latest_checkpoint(run_dir / "sig")
    assert ckpt is not None and not list((run_dir / "sig" / "checkpoints").glob(".*tmp"))
    step = json.loads((ckpt / "state.json").read_text())["step"]
    assert step >= 2


def test_ema_warmup_forgets_initial_weights_in_short_runs():
    from bench.ema import ema_decay_at

    assert ema_decay_at(0.999, False, 5) == 0.999
    assert ema_decay_at(0.999, True, 0) == pytest.approx(0.1)  # the first EMA is ~the trained weights
    assert ema_decay_at(0.999, True, 10_000) == 0.999
    kept = 1.0
    for step in range(96):  # a 96-step CPU run: share of the initial weights left in the EMA
        kept *= ema_decay_at(0.999, True, step)
    assert kept < 1e-6 < 0.999**96
