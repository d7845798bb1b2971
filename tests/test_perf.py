"""`bench perf` suites on CPU with a tiny backbone: records carry protocols and are marked not reportable."""

from __future__ import annotations

import torch

from bench.perf.suites import attention_suite, forward_suite, training_suite
from bench.results import load_records

TINY = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
CPU = torch.device("cpu")


def test_attention_and_forward_records(tmp_path):
    attention_suite(CPU, tmp_path, [256], warmup=0, repeats=1, batch_scale=1 / 64, backbone=TINY)
    forward_suite(
        CPU,
        tmp_path,
        [256],
        ["lfm", "lapflow"],
        warmup=0,
        repeats=1,
        batch_scale=1 / 64,
        precision="fp32",
        backbone=TINY,
    )
    records = {r.metric: r for r in load_records(tmp_path)}
    assert {
        "time_attention_prefix-split",
        "time_attention_bool-mask",
        "time_forward_prefix",
        "time_forward_masked",
        "time_forward_dense",
    } <= set(records)
    prefix = records["time_attention_prefix-split"]
    assert prefix.extra["max_abs_diff_prefix_vs_mask"] < 2e-2  # bf16 on CPU: exact up to rounding
    assert prefix.protocol["tokens_per_scale"] == [64, 256] and prefix.protocol["reportable"] is False
    assert all(r.value > 0 and r.git["commit"] for r in records.values())


def test_training_throughput_is_deterministic_per_seed(tmp_path):
    a = training_suite(
        CPU, tmp_path, ["lapflow-celebahq256-l2"], batch=2, warmup=1, steps=2, precision="fp32", backbone=TINY
    )
    b = training_suite(
        CPU, tmp_path, ["lapflow-celebahq256-l2"], batch=2, warmup=1, steps=2, precision="fp32", backbone=TINY
    )
    assert a == b and len(a["lapflow-celebahq256-l2"]) == 3
    (record,) = {r.protocol_name: r for r in load_records(tmp_path)}.values()
    assert record.unit == "images/s" and record.extra["train_gmacs_per_image"] > 0 and record.extra["mfu"] is None


def test_perf_training_cli_runs_several_presets_with_per_stage_profile_tables(tmp_path):
    """`bench perf training` over presets of different families, with the step profiled per drawn stage."""
    import json

    from typer.testing import CliRunner

    from bench.cli.app import app

    presets = "lapflow-celebahq128-mini,pyramidal-flow-celebahq128-mini"
    args = ["--device", "cpu", "perf", "training", "--presets", presets, "--modes", "eager", "--batch", "4"]
    args += ["--warmup", "2", "--steps", "2", "--profile-steps", "3", "--tiny", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = {r.preset: r for r in load_records(tmp_path)}
    assert set(records) == set(presets.split(","))
    lap = records["lapflow-celebahq128-mini"].extra
    assert (
        sum(lap["timed_stage_counts"].values()) == 2
        and sum(v["steps"] for v in lap["profile"]["by_stage"].values()) == 3
    )
    table = (tmp_path / "profiles" / lap["profile"]["table"]).read_text()
    assert table.count("# stage ") == len(lap["profile"]["by_stage"]) and "aten::" in table
    assert records["pyramidal-flow-celebahq128-mini"].extra["profile"]["by_stage"].keys() == {"all"}
    json.dumps(lap)  # the record's extra stays JSON


def test_training_suite_writes_what_finished_then_raises_one_error(tmp_path, monkeypatch):
    """Without a failures list the suite raises once, after the last preset; unknown presets fail before any work."""
    import pytest

    from bench.errors import BenchError
    from bench.perf import suites

    real = suites.build

    def build(preset, *args, **kwargs):
        if preset.startswith("lfm"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(preset, *args, **kwargs)

    monkeypatch.setattr(suites, "build", build)
    presets = ["lfm-celebahq256-l2", "dit-celebahq256-l2"]
    with pytest.raises(BenchError, match=r"^1 training measurement\(s\) failed, .*: eager training of "
                       r"lfm-celebahq256-l2 failed while building the model \(OutOfMemoryError: CUDA out of memory\. "
                       r"Tried to allocate 2\.00 GiB\)$"):  # fmt: skip
        suites.training_suite(CPU, tmp_path, presets, batch=2, warmup=0, steps=1, precision="fp32", backbone=TINY)
    records = {r.preset: r for r in load_records(tmp_path)}
    assert records["dit-celebahq256-l2"].value > 0 and records["lfm-celebahq256-l2"].value is None
    with pytest.raises(BenchError, match="Unknown preset"):
        suites.training_suite(CPU, tmp_path / "new", ["lfm-celebahq256-l2", "nope"], batch=2, backbone=TINY)
    assert not (tmp_path / "new").exists()
