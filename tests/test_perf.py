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
