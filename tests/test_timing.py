"""Timing protocol: statistics, warm-ups and repeats, inference/eval mode, NFE and protocol records on CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.errors import BenchError
from bench.interface import SampleOutput
from bench.metrics import timing


def test_stats_are_median_and_percentiles() -> None:
    stats = timing.TimingStats.of([float(t) for t in range(10, 0, -1)])
    assert stats.median == 5.5 and stats.mean == 5.5
    assert stats.p10 == pytest.approx(1.9) and stats.p90 == pytest.approx(9.1)  # linear interpolation


def test_measure_runs_warmups_untimed_and_setup_outside() -> None:
    calls = {"setup": 0, "run": 0}

    def setup() -> int:
        calls["setup"] += 1
        return calls["setup"]

    def run(state: int) -> None:
        calls["run"] += 1

    stats = timing.measure(setup, run, torch.device("cpu"), warmup=3, repeats=5)
    assert calls == {"setup": 8, "run": 8} and len(stats.times) == 5
    assert all(t >= 0 for t in stats.times)


class Recorder(torch.nn.Module):
    """A stand-in model that records the modes it is sampled in."""

    latent_shape = (3, 4, 4)
    num_classes = 0

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[bool, bool]] = []

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def sample(self, noise: torch.Tensor, y: object, spec: object, randn_like: object) -> SampleOutput:
        self.seen.append((torch.is_inference_mode_enabled(), self.training))
        return SampleOutput(noise.clamp(-1, 1), 3, {"net": 3})


def test_sampling_is_timed_in_inference_and_eval_mode() -> None:
    model = Recorder().train()
    protocol = timing.TimingProtocol(batch=2, mode="sampler", warmup=1, repeats=2)
    result = timing.time_sampling(model, None, protocol)
    assert model.seen == [(True, False)] * 3
    assert result.nfe == 3 and result.images_per_second == pytest.approx(2 / result.stats.median)


def test_cpu_protocol_is_marked_and_not_reportable() -> None:
    cpu = torch.device("cpu")
    protocol = timing.TimingProtocol(batch=64, mode="e2e")
    record = protocol.as_dict(cpu)
    assert record["name"] == "time-b64-e2e-fp32-cpu" and record["device"] == "cpu" and not record["reportable"]
    assert (
        timing.TimingProtocol(batch=1, precision="bf16", fast="compile").name(cpu) == "time-b1-sampler-bf16-compile-cpu"
    )
    with pytest.raises(BenchError, match="Unknown fast path 'jit'"):
        timing.TimingProtocol(fast="jit")
    with pytest.raises(BenchError, match="Unknown timing mode"):
        timing.TimingProtocol(mode="decode")
    with pytest.raises(BenchError, match="needs an autoencoder"):
        timing.time_sampling(Recorder(), None, timing.TimingProtocol(mode="e2e", warmup=0, repeats=1))


def test_tiny_lfm_end_to_end_timing_on_cpu() -> None:
    from bench.autoencoders import load_autoencoder
    from bench.config import resolve
    from bench.registry import MODELS

    cfg = resolve(preset="lfm-tiny")
    model = MODELS.load("lfm")(cfg.model, (3, 32, 32), 0)
    spec = dataclasses.replace(cfg.sample, steps=3)
    protocol = timing.TimingProtocol(batch=2, mode="e2e", warmup=1, repeats=2)
    result = timing.time_sampling(model, spec, protocol, load_autoencoder("pixel"))
    assert result.nfe == 3 and len(result.stats.times) == 2
    assert result.stats.p10 <= result.stats.median <= result.stats.p90
