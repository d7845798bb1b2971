"""Issue "Performance" goal records on CPU with a tiny backbone: ratios, goal flags, loss matching, profiles."""

from __future__ import annotations

import pytest
import torch

from bench.perf.goals import fid_throughput, goal, sampler_goal, training_goal
from bench.perf.profiling import profile_suite
from bench.results import load_records

TINY = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
CPU = torch.device("cpu")


def test_goal_flags() -> None:
    assert goal(0.6, 0.7, "<=")["met"] is True and goal(0.8, 0.7, "<=")["met"] is False
    assert goal(900.0, 870.0, ">=")["met"] is True and goal(None, 1.0, "<=")["met"] is None


def test_sampler_ratio_is_the_ratio_of_its_two_timings(tmp_path) -> None:
    ratios = sampler_goal(CPU, tmp_path, [256], ["eager"], steps=4, warmup=0, repeats=1, batch_scale=1 / 64,
                          backbone=TINY)  # fmt: skip
    records = load_records(tmp_path)
    times = {r.model: r.value for r in records if r.metric == "time_sampler"}
    (ratio,) = [r for r in records if r.metric == "sampler_time_ratio"]
    assert ratio.value == pytest.approx(times["lapflow"] / times["lfm"]) == pytest.approx(ratios[(256, "eager")])
    # Two scales with T_1 = 1/2: half the steps on 64 tokens, half on 64 + 256 -> about 3/4 of LFM's FLOPs.
    assert 0.6 < ratio.extra["flop_ratio"] < 0.8
    assert ratio.extra["goal"] == {"threshold": 0.7, "direction": "<="} and isinstance(ratio.extra["met"], bool)
    assert all(r.protocol["reportable"] is False for r in records)


def test_compiled_training_follows_the_eager_loss_curve(tmp_path) -> None:
    torch._dynamo.reset()
    deviations = training_goal(CPU, tmp_path, ["lfm-celebahq256-l2"], batch=2, warmup=1, steps=2, backbone=TINY,
                               compile_backend="aot_eager", precision="fp32")  # fmt: skip
    (match,) = [r for r in load_records(tmp_path) if r.metric == "train_loss_match"]
    assert match.value == deviations["lfm-celebahq256-l2"]["compile"] < 1e-4 and match.extra["met"] is True
    assert len(match.extra["eager_losses"]) == len(match.extra["compiled_losses"]) == 3


def test_fid_throughput_runs_the_inception_network_without_its_weights(tmp_path) -> None:
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    rate = fid_throughput(CPU, tmp_path, images, batch=2, weights="random")
    (record,) = load_records(tmp_path)
    assert record.metric == "fid_feature_throughput" and record.value == rate > 0
    assert record.protocol["weights"] == "random" and record.extra["seconds_per_5k"] == pytest.approx(5000 / rate)


def test_profiles_write_tables_and_records(tmp_path) -> None:
    profile_suite(CPU, tmp_path, families=("lfm", "lapflow"), batches=(1,), compile_backend=None, backbone=TINY)
    records = load_records(tmp_path)
    calls = sorted((r.model, r.protocol.get("call", "train")) for r in records)
    # LapFlow's training step is not profiled: its random stage changes the shapes from step to step.
    assert calls == [("lapflow", "segment0-64tok"), ("lapflow", "segment1-320tok"), ("lfm", "dit-256tok"),
                     ("lfm", "train")]  # fmt: skip
    assert all(r.extra["kernels"] == 0 and r.value is None for r in records)  # no GPU: nothing to be busy
    assert {p.name for p in (tmp_path / "profiles").iterdir()} == {r.extra["table"] for r in records}
