"""Performance benchmarks (issue "Performance"): attention paths, network forwards and training throughput.

Sampler and end-to-end times go through `bench eval run --metrics time`; this module adds what that protocol does
not cover. Every measurement becomes a result record (GPU, dtype, compile flag, protocol) via bench.results.
CPU runs work (tests) but their records say "device": "cpu" and are never reported as results.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import registry
from bench.compiling import CompileMeter
from bench.config import RunConfig, resolve
from bench.errors import BenchError
from bench.metrics.timing import measure, synchronize
from bench.perf.harness import (
    LAYOUT_BATCH,
    build,
    device_token,
    fixed_step_spec,
    forward_calls,
    make_train_step,
    peak_tflops,
    record,
    rng_digest,
)
from bench.runtime import configure_numerics


def attention_suite(
    device: torch.device,
    out: Path,
    resolutions: list[int],
    warmup: int = 5,
    repeats: int = 20,
    batch_scale: float = 1.0,
    backbone: dict | None = None,
) -> None:
    """Block-causal attention of the token layouts of the family with an attention hook (Family.attention): dense
    (no mask), boolean-mask SDPA and the prefix split."""
    import importlib

    fam = next(f for f in registry.families() if f.attention)
    kernels = importlib.import_module(str(fam.attention))
    masked_attention, prefix_attention = kernels.masked_attention, kernels.prefix_attention
    for res in resolutions:
        cfg, model = build(f"{fam.name}-celebahq{res}-l2", res, torch.device("meta"), backbone)
        _, hidden, heads = cfg.model.backbone.dims()
        head_dim = hidden // heads
        lengths = [e.tokens for e in reversed(model.net.experts)]  # coarsest first
        batch = max(1, int(LAYOUT_BATCH[res] * batch_scale))
        g = torch.Generator(device=device).manual_seed(0)
        qkv = [
            [torch.randn(batch, heads, n, head_dim, device=device, dtype=torch.bfloat16, generator=g) for n in lengths]
            for _ in range(3)
        ]
        variants: dict[str, Callable[[], Any]] = {
            "dense-unmasked": lambda q=qkv: F.scaled_dot_product_attention(*(torch.cat(t, 2) for t in q)),
            "bool-mask": lambda q=qkv: masked_attention(*q, mode="causal"),
            "prefix-split": lambda q=qkv: prefix_attention(*q, mode="causal"),
        }
        times = {}
        with torch.inference_mode():
            err = (torch.cat(masked_attention(*qkv), 2) - torch.cat(prefix_attention(*qkv), 2)).abs().max().item()
            for name, fn in variants.items():
                times[name] = measure(lambda: None, lambda _s, f=fn: f(), device, warmup, repeats)
        for name, stats in times.items():
            protocol = {
                "name": f"attn-b{batch}-bf16{device_token(device)}",
                "batch": batch,
                "dtype": "bfloat16",
                "heads": heads,
                "head_dim": head_dim,
                "tokens_per_scale": lengths,
                "warmup": warmup,
                "repeats": repeats,
                "variant": name,
                "reportable": device.type == "cuda",
            }
            extra = {
                "p10": stats.p10,
                "p90": stats.p90,
                "relative_to_dense": stats.median / times["dense-unmasked"].median,
                "max_abs_diff_prefix_vs_mask": err,
            }
            record(cfg, f"time_attention_{name}", stats.median, "s", protocol, device, extra, out)


def forward_suite(
    device: torch.device,
    out: Path,
    resolutions: list[int],
    families: list[str],
    warmup: int = 3,
    repeats: int = 10,
    batch_scale: float = 1.0,
    precision: str = "bf16",
    backbone: dict | None = None,
) -> None:
    """One network forward with every scale active, per family and Family.forward_variants (the method: prefix and
    masked attention); families with one variant first."""
    plain = [(f, {}) for f in families if registry.family(f).forward_variants == ({},)]
    variants = plain + [
        (f, dict(o)) for f in families if (f, {}) not in plain for o in registry.family(f).forward_variants
    ]
    for res in resolutions:
        batch = max(1, int(LAYOUT_BATCH[res] * batch_scale))
        for family, overrides in variants:
            cfg, model = build(f"{family}-celebahq{res}-l2", res, device, backbone, **overrides)
            call, run = max(forward_calls(model, cfg, batch, precision), key=lambda c: c[0].tokens)  # all scales
            stats = measure(lambda: None, lambda _s, f=run: f(), device, warmup, repeats)
            variant = overrides.get("attention", "dense")
            protocol = {
                "name": f"forward-b{batch}-{precision}{device_token(device)}",
                "batch": batch,
                "precision": precision,
                "tokens": call.tokens,
                "attention": variant,
                "warmup": warmup,
                "repeats": repeats,
                "reportable": device.type == "cuda",
            }
            record(
                cfg,
                f"time_forward_{variant}",
                stats.median,
                "s",
                protocol,
                device,
                {"p10": stats.p10, "p90": stats.p90, "call": call.name},
                out,
            )
            del model


# `bench perf training --modes`: THE step eager, or compiled in one of train.compile_mode's inductor modes.
TRAIN_MODES: dict[str, str | None] = {
    "eager": None,
    "compile": "default",
    "compile-graphs": "reduce-overhead",
    "compile-autotune": "max-autotune-no-cudagraphs",
}


def train_mode_label(compile_backend: str | None, compile_mode: str = "default") -> str:
    """The --modes name of a backend and inductor mode (eager when not compiled)."""
    if not compile_backend:
        return "eager"
    return next(k for k, v in TRAIN_MODES.items() if v == compile_mode)


@dataclass(frozen=True)
class TrainFailure:
    """One preset that failed in one mode of `bench perf training`: the others go on and are recorded."""

    preset: str
    mode: str
    phase: str  # what it was doing: "building the model", "running the warm-up and timed steps", ...
    error: str  # the exception's type and the first line of its message

    def sentence(self) -> str:
        return f"{self.mode} training of {self.preset} failed while {self.phase} ({self.error})"


def error_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message` (CUDA graph and dynamo errors run to dozens of lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def raise_failures(failures: list[TrainFailure], out: Path) -> None:
    """One sentence for everything that failed (exit 1), once everything that finished is written."""
    if failures:
        raise BenchError(
            f"{len(failures)} training measurement(s) failed, the others are recorded in {out}: "
            + "; ".join(f.sentence() for f in failures)
        )


def training_suite(
    device: torch.device,
    out: Path,
    presets: list[str],
    batch: int = 64,
    warmup: int = 10,
    steps: int = 30,
    compile_backend: str | None = None,
    precision: str = "bf16",
    backbone: dict | None = None,
    profile_steps: int = 0,
    compile_mode: str = "default",
    rng_digests: dict[str, str] | None = None,
    failures: list[TrainFailure] | None = None,
) -> dict[str, list[float]]:
    """Images/s of THE training step (forward, backward, AdamW, EMA) on random latents, with MFU from fvcore counts.

    Returns the per-step losses so that compiled and eager runs can be compared under the same seeds (`rng_digests`,
    when given, receives a digest of the RNG states after the timed steps: equal digests mean equal random draws).
    `compile_mode` is train.compile_mode's inductor mode. With `profile_steps`, that many further steps run under
    torch.profiler and each drawn stage's first profiled step becomes a per-op table (CUDA time, launch counts) in
    `<out>/profiles/<preset>-train-b<batch>-<mode>.txt`.

    A preset that fails (a compile or CUDA-graph error, out of memory) gets an n/a record saying why (`note`,
    `extra.failure`) and the others are measured; its failure is appended to `failures`, or, without that list,
    raised as one BenchError after the last preset. Unknown presets are refused before anything runs.
    """
    run = _TrainRun(device, out, batch, warmup, steps, compile_backend, precision, backbone, profile_steps,
                    compile_mode, configure_numerics(device, precision))  # fmt: skip
    configs = {preset: resolve(preset=preset) for preset in presets}  # bad names: one error before any work
    losses, own = {}, [] if failures is None else failures
    for preset in presets:
        # As in a fresh process (bench.compiling): dynamo's entries and CUDA graph pools do not pile up over presets.
        meter = CompileMeter() if compile_backend else None
        attempt = _Attempt(preset, run.mode)
        try:
            losses[preset] = _measure_training(run, attempt, rng_digests, meter)
            continue
        except Exception as exc:  # any fault of one preset: recorded below, and the other presets still run
            failure = TrainFailure(preset, run.mode, attempt.phase, error_line(exc))
        finally:
            if meter is not None:
                meter.close()
        _release(device, compile_backend)  # outside the handler: the traceback no longer holds the model
        own.append(failure)
        extra = {"failure": dataclasses.asdict(failure), "numerics": run.numerics}
        cfg = attempt.cfg or configs[preset]
        record(cfg, "train_throughput", None, "images/s", run.protocol, device, extra, out, note=failure.sentence())
    if failures is None:
        raise_failures(own, out)
    return losses


@dataclass(frozen=True)
class _TrainRun:
    """The settings of one training_suite call (one mode over its presets)."""

    device: torch.device
    out: Path
    batch: int
    warmup: int
    steps: int
    compile_backend: str | None
    precision: str
    backbone: dict | None
    profile_steps: int
    compile_mode: str
    numerics: Any

    @property
    def mode(self) -> str:
        return train_mode_label(self.compile_backend, self.compile_mode)

    @property
    def protocol(self) -> dict[str, Any]:
        return {
            "name": f"train-b{self.batch}-{self.precision}{'' if self.mode == 'eager' else '-' + self.mode}"
            f"{device_token(self.device)}",
            "batch": self.batch,
            "precision": self.precision,
            "compile": self.compile_backend is not None,
            "compile_backend": self.compile_backend,
            "compile_mode": self.compile_mode if self.compile_backend else None,
            "warmup_steps": self.warmup,
            "timed_steps": self.steps,
            "optimizer": "AdamW (fused on CUDA)",
            "step": "bench.train_step.train_step (clipping, non-finite check, EMA): the step training runs",
            "data": "random latents copied from host each step",
            "reportable": self.device.type == "cuda",
        }


class _Attempt:
    """What a training measurement has got to: the phase names what failed, the config the record to write."""

    def __init__(self, preset: str, mode: str) -> None:
        self.preset, self.mode, self.phase, self.cfg = preset, mode, "building the model", None


def _release(device: torch.device, compile_backend: str | None) -> None:
    """After a failed preset: dynamo's caches and CUDA graph trees (reset), and the memory the model held."""
    import gc

    if compile_backend:
        import torch._dynamo as dynamo

        dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure_training(
    run: _TrainRun, attempt: _Attempt, rng_digests: dict[str, str] | None, meter: CompileMeter | None = None
) -> list[float]:
    """One preset's throughput record (training_suite); `attempt.phase` follows what it is doing; `meter`'s summary
    (what compiled in the warm-up and timed steps) becomes extra.compile."""
    from bench.train_step import compile_note

    device, preset = run.device, attempt.preset
    cfg, model = build(preset, resolve(preset=preset).data.res, device, run.backbone)
    attempt.cfg, stages = cfg, []
    step = make_train_step(model, cfg, device, run.compile_backend, run.precision, stages, run.compile_mode)
    attempt.phase = "running the warm-up and timed steps"
    elapsed, losses = _timed_training(step, model, device, run.batch, run.warmup, run.steps)
    digest = rng_digest(device)
    compiled = meter.summary() if meter is not None else None
    images_per_s = run.batch * run.steps / elapsed
    attempt.phase = "counting the FLOPs of a training forward"
    train_gmacs = 3 * _mean_forward_gflops(model, cfg)  # backward ~ 2x forward
    achieved = images_per_s * train_gmacs * 2 / 1e3  # TFLOP/s at 2 FLOPs per multiply-add
    peak = peak_tflops(device)
    extra = {
        "step_s": elapsed / run.steps,
        "tflops_achieved": achieved,
        "peak_tflops_bf16": peak,
        "mfu": achieved / peak if peak else None,
        "train_gmacs_per_image": train_gmacs,
        "numerics": run.numerics,
        "losses": losses,
        "rng_digest_after_timed_steps": digest,
        "nonfinite_check": getattr(step, "nonfinite_check", None),  # device: no host sync a step; host: one
        **_stage_summary(stages, run.warmup),
        **({"compile": compiled} if compiled is not None else {}),
    }
    if run.compile_backend and (note := compile_note(run.compile_mode, device)):
        extra["compile_note"] = note
    if run.profile_steps > 0:
        from bench.perf.profiling import profile_training_steps

        attempt.phase = "profiling the step"
        table = run.out / "profiles" / f"{preset}-train-b{run.batch}-{run.mode}.txt"
        x = torch.randn(run.batch, *model.latent_shape, generator=torch.Generator().manual_seed(2))
        extra["profile"] = profile_training_steps(
            lambda s=step, x=x: s(x.to(device)), stages, device, table, run.profile_steps
        )
    attempt.phase = "writing the record"
    record(cfg, "train_throughput", images_per_s, "images/s", run.protocol, device, extra, run.out)
    if rng_digests is not None:  # only presets whose record is written
        rng_digests[preset] = digest
    return losses


def _stage_summary(stages: list[int], warmup: int) -> dict[str, Any]:
    """Which stages the warm-up and the timed steps drew, and whether each timed stage had already run in the
    warm-up (a compiled step that meets a stage for the first time compiles inside the timed window; under CUDA
    graphs a stage is recorded on its second call, so `stages_warmed_up_twice` says whether timing saw replays only)."""
    if not stages:
        return {}
    timed, early = stages[warmup:], stages[:warmup]
    counts = {str(s): timed.count(s) for s in sorted(set(stages))}
    return {
        "timed_stage_counts": counts,
        "warmup_stage_counts": {str(s): early.count(s) for s in sorted(set(stages))},
        "stages_warmed_up": set(timed) <= set(early),
        "stages_warmed_up_twice": all(early.count(s) >= 2 for s in set(timed)),
    }


def _timed_training(
    step: Callable[[torch.Tensor], torch.Tensor],
    model: Any,
    device: torch.device,
    batch: int,
    warmup: int,
    steps: int,
) -> tuple[float, list[float]]:
    """Seconds for `steps` training steps after `warmup` untimed ones, and every step's loss."""
    data = torch.randn(steps + warmup, batch, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    seen = []
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        seen.append(step(data[i].to(device, non_blocking=True)))
    synchronize(device)
    return time.perf_counter() - start, [float(v) for v in seen]


def _mean_forward_gflops(model: Any, cfg: RunConfig) -> float:
    """Multiply-adds (G) of one training forward per image: the mean over the distinct network calls, since every
    multi-scale family trains its stages/scale sets with equal probability (LapFlow, Pyramidal Flow)."""
    from bench.metrics.flops import count_flops

    calls = model.flop_trace(fixed_step_spec(cfg))
    return sum(count_flops(c.module, c.inputs) for c in calls) / len(calls)
