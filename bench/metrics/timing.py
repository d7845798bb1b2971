"""Wall-clock inference time under one protocol (DESIGN.md, "Measurement protocols").

`torch.inference_mode`, eval mode, >= 3 warm-ups, CUDA synchronisation around every repeat, >= 10 repeats,
median with p10/p90; batch 1 (latency, the paper's protocol) and batch 64 (throughput); sampler-only (noise ->
latents) and end-to-end (noise -> decoded, quantised uint8 images on the host). The noise and per-sample
generators are made before each repeat, outside the timed region, so every repeat runs the same trajectory.
CPU timings work (tests, demos) but are marked `"device": "cpu"` in their protocol and never reported as results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError

MIN_WARMUP = 3  # protocol minimums for a reportable number
MIN_REPEATS = 10
MODES = ("sampler", "e2e")


@dataclass(frozen=True)
class TimingProtocol:
    batch: int = 1
    mode: str = "sampler"  # sampler | e2e
    warmup: int = MIN_WARMUP
    repeats: int = MIN_REPEATS
    precision: str = "auto"  # auto | fp32 | bf16 (bench.runtime.autocast)
    fast: str = "eager"  # bench.perf.accel.FAST_PATHS

    def __post_init__(self) -> None:
        from bench.perf.accel import check_fast_path

        if self.mode not in MODES:
            raise BenchError(f"Unknown timing mode '{self.mode}'; choose sampler or e2e.")
        check_fast_path(self.fast)
        if self.batch < 1 or self.repeats < 1 or self.warmup < 0:
            raise BenchError(f"Timing needs batch >= 1 and repeats >= 1, got {self.batch} and {self.repeats}.")

    @property
    def metric(self) -> str:
        return f"time_{self.mode}"

    def name(self, device: torch.device) -> str:
        from bench.runtime import autocast_dtype

        dtype = autocast_dtype(device, self.precision)
        token = {None: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype).replace("torch.", ""))
        parts = [f"time-b{self.batch}-{self.mode}-{token}"]
        if self.fast != "eager":
            parts.append(self.fast)
        if device.type != "cuda":
            parts.append(device.type)
        return "-".join(parts)

    def as_dict(self, device: torch.device) -> dict[str, Any]:
        reportable = device.type == "cuda" and self.warmup >= MIN_WARMUP and self.repeats >= MIN_REPEATS
        return {
            "name": self.name(device),
            "batch": self.batch,
            "mode": self.mode,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "statistic": "median (p10, p90 in extra)",
            "precision": self.precision,
            "fast_path": self.fast,
            "compile": "compile" in self.fast,
            "cuda_graphs": "graph" in self.fast,
            "device": device_label(device),
            "attention_backend": attention_backend(device),
            "sync": "torch.cuda.synchronize before and after each repeat" if device.type == "cuda" else "none (cpu)",
            "reportable": reportable,
        }


@dataclass
class TimingStats:
    median: float
    p10: float
    p90: float
    mean: float
    times: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, times: list[float]) -> TimingStats:
        a = np.asarray(times, dtype=np.float64)
        p10, med, p90 = np.percentile(a, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(a.mean()), [float(t) for t in a])


@dataclass
class TimingResult:
    protocol: TimingProtocol
    stats: TimingStats
    nfe: int  # measured NFE of the timed trajectory (batch-level for adaptive solvers)
    device: torch.device
    first_call_s: float = 0.0  # the first (untimed) call, CUDA-graph capture or compilation included
    max_abs_diff_vs_eager: float = 0.0  # final latents of the fast path vs the eager sampler, same noise

    @property
    def images_per_second(self) -> float:
        return self.protocol.batch / self.stats.median

    def extra(self) -> dict[str, Any]:
        """What a timing record keeps beside its median."""
        s = self.stats
        return {
            "p10": s.p10,
            "p90": s.p90,
            "mean": s.mean,
            "times": s.times,
            "batch": self.protocol.batch,
            "images_per_s": self.images_per_second,
            "first_call_s": self.first_call_s,
            "max_abs_diff_vs_eager": self.max_abs_diff_vs_eager,
        }


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def attention_backend(device: torch.device) -> dict[str, Any]:
    """Which scaled_dot_product_attention kernels were enabled (the one used is chosen by torch per call)."""
    if device.type != "cuda":
        return {"sdpa": f"{device.type} (torch chooses flash-cpu or math)"}
    b = torch.backends.cuda
    return {
        "flash": b.flash_sdp_enabled(),
        "mem_efficient": b.mem_efficient_sdp_enabled(),
        "cudnn": b.cudnn_sdp_enabled(),
        "math": b.math_sdp_enabled(),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    setup: Callable[[], Any], run: Callable[[Any], Any], device: torch.device, warmup: int, repeats: int
) -> TimingStats:
    """Time `run(setup())` `repeats` times after `warmup` untimed calls; setup is outside the timed region."""
    for _ in range(warmup):
        run(setup())
        synchronize(device)
    times = []
    for _ in range(repeats):
        state = setup()
        synchronize(device)
        start = time.perf_counter()
        run(state)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return TimingStats.of(times)


def timed_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one synchronised call (capture or compilation included: the one-off cost of a fast path)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_sampling(
    model: Any, spec: Any, protocol: TimingProtocol, autoencoder: Any = None, seed: int = 0
) -> TimingResult:
    """Time `model.sample` (and decode + quantise + copy to host for e2e) at protocol.batch samples.

    A fast path (CUDA graphs, torch.compile) is set up in the warm-up calls; its one-off cost and the largest
    difference of its latents from the eager sampler's (same noise) are reported in `TimingResult`.
    """
    from bench.perf.accel import accelerated
    from bench.runtime import autocast, balanced_labels, per_sample_randn_like
    from bench.sample import quantize

    if protocol.mode == "e2e" and autoencoder is None:
        raise BenchError("End-to-end timing needs an autoencoder to decode with.")
    device = model.device
    model.eval()
    seeds = list(range(seed, seed + protocol.batch))
    labels = balanced_labels(seeds, model.num_classes)
    y = labels.to(device) if labels is not None else None
    nfe: list[int] = []
    last: list[Any] = []

    def setup() -> tuple:
        randn_like = per_sample_randn_like(seeds, device)
        noise = randn_like(torch.empty(protocol.batch, *model.latent_shape, device=device))
        return noise, randn_like

    def run(state: tuple) -> None:
        noise, randn_like = state
        with torch.inference_mode(), autocast(device, protocol.precision):
            out = model.sample(noise, y, spec, randn_like)
            if protocol.mode == "e2e":
                quantize(autoencoder.decode(out.latents.float())).cpu()
        nfe.append(int(out.nfe))
        last[:] = [out.latents]

    reference = None
    if protocol.fast != "eager":
        run(setup())
        reference = last[0]
    with accelerated(model, protocol.fast):
        setup_s = timed_call(lambda: run(setup()), device)
        stats = measure(setup, run, device, max(0, protocol.warmup - 1), protocol.repeats)
    diff = float((last[0].float() - reference.float()).abs().max()) if reference is not None else 0.0
    timed = nfe[-protocol.repeats :]
    return TimingResult(protocol, stats, int(np.median(timed)), device, setup_s, diff)
