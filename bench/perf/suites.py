"""Performance benchmarks (issue "Performance"): attention paths, network forwards and training throughput.

Sampler and end-to-end times go through `bench eval run --metrics time`; this module adds what that protocol does
not cover. Every measurement becomes a result record (GPU, dtype, compile flag, protocol) via bench.results.
CPU runs work (tests) but their records say "device": "cpu" and are never reported as results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import registry
from bench.config import RunConfig, resolve
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
) -> dict[str, list[float]]:
    """Images/s of THE training step (forward, backward, AdamW, EMA) on random latents, with MFU from fvcore counts.

    Returns the per-step losses so that compiled and eager runs can be compared under the same seeds (`rng_digests`,
    when given, receives a digest of the RNG states after the timed steps: equal digests mean equal random draws).
    `compile_mode` is train.compile_mode's inductor mode. With `profile_steps`, that many further steps run under
    torch.profiler and each drawn stage's first profiled step becomes a per-op table (CUDA time, launch counts) in
    `<out>/profiles/<preset>-train-b<batch>-<mode>.txt`.
    """
    from bench.train_step import compile_note

    numerics = configure_numerics(device, precision)
    losses = {}
    mode = train_mode_label(compile_backend, compile_mode)
    for preset in presets:
        if compile_backend:
            # As in a fresh process: THE loss module's forward is one code object for every preset and mode, so
            # dynamo's cache entries (and their per-code recompile limit) and the CUDA graph pools would pile up.
            import torch._dynamo as dynamo  # `import torch._dynamo` would make `torch` local to this function

            dynamo.reset()
        cfg, model = build(preset, resolve(preset=preset).data.res, device, backbone)
        stages: list[int] = []
        step = make_train_step(model, cfg, device, compile_backend, precision, stages, compile_mode)
        elapsed, losses[preset] = _timed_training(step, model, device, batch, warmup, steps)
        digest = rng_digest(device)
        if rng_digests is not None:
            rng_digests[preset] = digest
        images_per_s = batch * steps / elapsed
        train_gmacs = 3 * _mean_forward_gflops(model, cfg)  # backward ~ 2x forward
        achieved = images_per_s * train_gmacs * 2 / 1e3  # TFLOP/s at 2 FLOPs per multiply-add
        peak = peak_tflops(device)
        protocol = {
            "name": f"train-b{batch}-{precision}{'' if mode == 'eager' else '-' + mode}{device_token(device)}",
            "batch": batch,
            "precision": precision,
            "compile": compile_backend is not None,
            "compile_backend": compile_backend,
            "compile_mode": compile_mode if compile_backend else None,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "optimizer": "AdamW (fused on CUDA)",
            "step": "bench.train_step.train_step (clipping, non-finite check, EMA): the step training runs",
            "data": "random latents copied from host each step",
            "reportable": device.type == "cuda",
        }
        extra = {
            "step_s": elapsed / steps,
            "tflops_achieved": achieved,
            "peak_tflops_bf16": peak,
            "mfu": achieved / peak if peak else None,
            "train_gmacs_per_image": train_gmacs,
            "numerics": numerics,
            "losses": losses[preset],
            "rng_digest_after_timed_steps": digest,
            **_stage_summary(stages, warmup),
        }
        if compile_backend and (note := compile_note(compile_mode, device)):
            extra["compile_note"] = note
        if profile_steps > 0:
            from bench.perf.profiling import profile_training_steps

            table = out / "profiles" / f"{preset}-train-b{batch}-{mode}.txt"
            x = torch.randn(batch, *model.latent_shape, generator=torch.Generator().manual_seed(2))
            extra["profile"] = profile_training_steps(
                lambda s=step, x=x: s(x.to(device)), stages, device, table, profile_steps
            )
        record(cfg, "train_throughput", images_per_s, "images/s", protocol, device, extra, out)
        del model, step
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
