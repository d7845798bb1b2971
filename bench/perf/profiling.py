"""Where the time goes: torch.profiler tables and GPU-busy fractions for the calls behind the performance goals.

For each named call: the wall time without the profiler (median of a few), the summed duration of its GPU kernels
and their number (from one profiled call), so `gpu_busy` = kernel time / wall time tells launch- or Python-bound
calls (busy << 1) from GPU-bound ones (busy ~ 1). The top kernels/operators go to `<name>.txt` beside the record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench import registry
from bench.metrics.timing import measure, synchronize
from bench.perf.harness import LAYOUT_BATCH, build, forward_calls, make_train_step, record

ROW_LIMIT = 30
TRAIN_ROW_LIMIT = 45  # a training step has forward, backward and optimizer kernels


def profile_call(
    fn: Callable[[], Any], device: torch.device, table_path: Path, repeats: int = 5, warmup: int = 4
) -> dict[str, Any]:
    """Warm `fn` (compilation, graph capture), time it, profile one call; writes the operator table."""
    wall = measure(lambda: None, lambda _s: fn(), device, warmup, repeats).median
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    kernel_s = sum(e.time_range.elapsed_us() for e in kernels) / 1e6
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(prof.key_averages().table(sort_by=sort, row_limit=ROW_LIMIT) + "\n")
    return {
        "wall_s": wall,
        "gpu_kernel_s": kernel_s,
        "gpu_busy": kernel_s / wall if device.type == "cuda" else None,
        "kernels": len(kernels),
        "table": table_path.name,
    }


def profile_suite(
    device: torch.device,
    out: Path,
    res: int = 256,
    families: tuple[str, ...] | None = None,
    batches: tuple[int, ...] | None = None,
    training: bool = True,
    compile_backend: str | None = "inductor",
    backbone: dict | None = None,
) -> list[Path]:
    """Profile every sampling forward (eager, bf16) at each batch size, and one (compiled) training step."""
    batches = batches or (LAYOUT_BATCH[res], 1)
    families = families or (registry.reference().name, registry.method().name)
    paths = []
    for family in families:
        cfg, model = build(f"{family}-celebahq{res}-l2", res, device, backbone)
        model.eval()
        for batch in batches:
            for call, fn in forward_calls(model, cfg, batch, "bf16"):
                name = f"{call.name}-{call.tokens}tok"
                label = f"{family}-{res}-forward-{name}-b{batch}"
                summary = profile_call(fn, device, out / "profiles" / f"{label}.txt")
                protocol = {"name": f"profile-forward-b{batch}-bf16-eager", "batch": batch, "call": name}
                paths.append(record(cfg, "gpu_busy", summary["gpu_busy"], "fraction", protocol, device, summary, out))
        # Multi-stage families draw a stage per step (different shapes per call): one profiled call would not
        # represent the median step, so only single-stage training steps are profiled.
        if training and not getattr(model, "may_skip_parameters", False):
            model.train()
            step = make_train_step(model, cfg, device, compile_backend, "bf16")
            x = torch.randn(64, *model.latent_shape, device=device)
            label = f"{family}-{res}-train-b64-{'compiled' if compile_backend else 'eager'}"
            torch.manual_seed(0)
            summary = profile_call(lambda s=step, x=x: s(x), device, out / "profiles" / f"{label}.txt")
            protocol = {"name": f"profile-train-b64-bf16-{compile_backend or 'eager'}", "batch": 64}
            paths.append(record(cfg, "gpu_busy", summary["gpu_busy"], "fraction", protocol, device, summary, out))
        del model
    return paths


def profile_training_steps(
    step: Callable[[], Any], stages: list[int], device: torch.device, table_path: Path, steps: int = 4
) -> dict[str, Any]:
    """Profile `steps` more calls of THE training step, one profiler session each, and write the per-op table of
    the first profiled step of every drawn stage (LapFlow's stages differ in shapes and cost; one table mixing them
    would describe no real step). Returns kernels, kernel seconds and launches per step, by stage."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sections: list[str] = []
    by_stage: dict[str, dict[str, Any]] = {}
    for _ in range(steps):
        drawn = len(stages)
        synchronize(device)
        with profile(activities=activities) as prof:
            step()
            synchronize(device)
        key = str(stages[drawn]) if len(stages) > drawn else "all"
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        summary = by_stage.setdefault(key, {"steps": 0, "kernels": 0, "gpu_kernel_s": 0.0})
        summary["steps"] += 1
        summary["kernels"] += len(kernels)
        summary["gpu_kernel_s"] += sum(e.time_range.elapsed_us() for e in kernels) / 1e6
        if summary["steps"] == 1:
            table = prof.key_averages().table(sort_by=sort, row_limit=TRAIN_ROW_LIMIT)
            sections.append(f"# stage {key}: one training step, {len(kernels)} GPU kernels\n{table}")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text("\n".join(sections) + "\n")
    per_step = {
        k: {
            "steps": v["steps"],
            "kernels_per_step": v["kernels"] / v["steps"],
            "gpu_kernel_s_per_step": v["gpu_kernel_s"] / v["steps"],
        }
        for k, v in by_stage.items()
    }
    return {"table": table_path.name, "by_stage": per_step}
