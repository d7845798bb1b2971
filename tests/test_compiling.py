"""bench.compiling: every compiled run starts from a fresh dynamo state (dynamo's per-code recompile limit once made
the later runs of one process train eagerly), compiles into the suite's on-disk cache, and records what it compiled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from bench.compiling import CompileMeter, use_compile_cache
from bench.config import parse_set, resolve
from bench.dist import DistInfo
from bench.paths import compile_cache_dir
from bench.train_step import LossModule

CPU = torch.device("cpu")


def test_the_compile_cache_lives_in_the_cache_folder_unless_its_variable_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_COMPILE_CACHE_DIR")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert compile_cache_dir() == tmp_path / "cache" / "torch-compile"
    assert compile_cache_dir(tmp_path / "other") == tmp_path / "other" / "torch-compile"  # train()'s cache folder
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # restored after the test
    assert use_compile_cache() == (tmp_path / "cache" / "torch-compile").absolute()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "torch-compile")
    monkeypatch.setenv("BENCH_COMPILE_CACHE_DIR", str(tmp_path / "shared"))
    assert use_compile_cache(tmp_path / "other") == tmp_path / "shared"
    assert (tmp_path / "shared").is_dir()


class _Affine(nn.Module):
    """A model whose loss is one graph; its width makes graphs that dynamo cannot share."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Linear(width, 1)

    def loss(self, x: Tensor, y: Tensor | None, *, draws: dict | None = None) -> Tensor:
        return self.net(x).squeeze(1)


def test_past_dynamos_recompile_limit_a_new_run_compiles_only_from_a_fresh_state() -> None:
    """THE loss module's forward is one code object for every run of a process: runs that need graphs of their own
    add entries to it. Past torch._dynamo.config.recompile_limit the next one ran eagerly without an error (what the
    runs late in a `bench reproduce mini` command did); a CompileMeter (train() makes one per compiled run) resets
    dynamo first, so that run compiles its graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    limit = torch._dynamo.config.recompile_limit
    for width in range(1, limit + 2):
        torch.compile(LossModule(_Affine(width)), backend="eager")(torch.ones(2, width), None)
    before = counters["stats"]["unique_graphs"]
    torch.compile(LossModule(_Affine(limit + 2)), backend="eager")(torch.ones(2, limit + 2), None)
    assert counters["stats"]["unique_graphs"] == before  # ran eagerly
    meter = CompileMeter()
    try:
        torch.compile(LossModule(_Affine(limit + 2)), backend="eager")(torch.ones(2, limit + 2), None)
        assert meter.summary()["graphs"] == 1
    finally:
        meter.close()


def _train(run: Path, *sets: str) -> list[dict]:
    from bench.train import train

    items = ["data.res=16", "data.synthetic_size=16", "train.batch_size=4", "train.total_images=8"]
    items += ["train.grid_size=0", "train.checkpoint_every=0", "train.compile=true", "train.log_every=0"]
    items += ["model.backbone.depth=1", "model.backbone.hidden=32", "model.backbone.heads=2", *sets]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in items])
    train(cfg, run, DistInfo(0, 1, 0, CPU), None, run.parent / "cache", progress=False)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == "compile"]


def test_a_run_differing_only_in_the_learning_rate_compiles_from_the_cache(tmp_path: Path) -> None:
    """Inductor on the CPU: the second run recompiles in a fresh dynamo state (bench.compiling), and every compiled
    graph of it comes from the on-disk caches of the first run: the learning rate is the optimizer's, outside the
    graph. Each run's stats.jsonl says so in its `compile` event."""
    (first,) = _train(tmp_path / "a")
    (second,) = _train(tmp_path / "b", "train.lr=1e-3")
    for event in (first, second):
        assert event["graphs"] == 1 and event["graph_breaks"] == 0  # one stage: one graph
        assert event["cache_dir"] == os.environ["BENCH_COMPILE_CACHE_DIR"] and event["compile_seconds"] > 0
    assert second["fx_graph_cache_misses"] == 0 and second["fx_graph_cache_hits"] == 2  # forward and backward
    assert second["aot_autograd_cache_hits"] == 1 and second["aot_autograd_cache_misses"] == 0
