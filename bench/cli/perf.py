"""`bench perf`: attention paths, network forwards and training throughput, as result records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench import registry

app = typer.Typer(no_args_is_help=True, add_completion=False)

ResOpt = Annotated[str, typer.Option(help="Resolutions, e.g. 256,512,1024.")]
OutOpt = Annotated[Path | None, typer.Option(help="Results folder (default $BENCH_RESULTS_DIR or results/).")]
TinyOpt = Annotated[bool, typer.Option("--tiny", help="Tiny backbone instead of L/2 (CPU smoke runs; not results).")]
TINY_BACKBONE = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
# Defaults from the registry: the reference and the method (LFM and LapFlow) at their paper 256 px presets.
PAIR_PRESETS = ",".join(f"{f.name}-celebahq256-l2" for f in (registry.reference(), registry.method()))
FORWARD_MODELS = ",".join(f.name for f in registry.families() if f.perf_forward)


def _setup(out: Path | None) -> tuple:
    from bench.paths import device_name, results_dir
    from bench.runtime import resolve_device

    return resolve_device(device_name()), out or results_dir() / "perf"


def _ints(text: str) -> list[int]:
    from bench.cli.eval import split_ints

    return split_ints(text, "resolutions")


@app.command("attention")
def attention_command(
    res: ResOpt = "256,512,1024",
    batch_scale: float = 1.0,
    warmup: int = 5,
    repeats: int = 20,
    out: OutOpt = None,
    tiny: TinyOpt = False,
) -> None:
    """Time the method's block-causal attention: dense unmasked, boolean-mask SDPA and the prefix split."""
    from bench.perf.suites import attention_suite

    device, folder = _setup(out)
    attention_suite(device, folder, _ints(res), warmup, repeats, batch_scale, TINY_BACKBONE if tiny else None)


@app.command("forward")
def forward_command(
    res: ResOpt = "256,512,1024",
    models: str = FORWARD_MODELS,
    batch_scale: float = 1.0,
    warmup: int = 3,
    repeats: int = 10,
    precision: str = "bf16",
    out: OutOpt = None,
    tiny: TinyOpt = False,
) -> None:
    """Time one forward with every scale active (the method: prefix and masked) against the single-scale DiT."""
    from bench.cli.eval import split_list
    from bench.perf.suites import forward_suite

    device, folder = _setup(out)
    forward_suite(
        device,
        folder,
        _ints(res),
        split_list(models),
        warmup,
        repeats,
        batch_scale,
        precision,
        TINY_BACKBONE if tiny else None,
    )


@app.command("training")
def training_command(
    presets: str = PAIR_PRESETS,
    batch: int = 64,
    warmup: int = 10,
    steps: int = 30,
    compile_: Annotated[bool, typer.Option("--compile", help="Compiled only (the same as --modes compile).")] = False,
    modes: Annotated[
        str,
        typer.Option(
            help="Any of eager, compile (inductor), compile-graphs (inductor + CUDA graphs: train.compile_mode="
            "reduce-overhead), compile-autotune (max-autotune-no-cudagraphs); eager with others: also the loss match."
        ),
    ] = "eager",
    profile_steps: Annotated[int, typer.Option(help="Profiled steps after timing (per-op tables per stage).")] = 0,
    precision: str = "bf16",
    out: OutOpt = None,
    tiny: TinyOpt = False,
) -> None:
    """Training images/s and model FLOPs utilisation of THE training step, per mode, all in one process; eager with
    compiled modes (`--modes eager,compile,compile-graphs`) also compares each one's loss curve with eager's step by
    step (train_loss_match). A preset that fails in one mode is recorded as n/a with the reason and the command goes
    on with the others; it exits 1 at the end, naming every failure, once everything that finished is written."""
    from bench.cli.eval import split_list
    from bench.perf.goals import training_goal
    from bench.perf.suites import TRAIN_MODES, TrainFailure, raise_failures, training_suite

    device, folder = _setup(out)
    wanted = ["compile"] if compile_ else split_list(modes, tuple(TRAIN_MODES), "mode")
    backbone = TINY_BACKBONE if tiny else None
    names = split_list(presets)
    compiled = tuple(dict.fromkeys(m for m in wanted if m != "eager"))
    failures: list[TrainFailure] = []
    if "eager" in wanted and compiled:
        training_goal(
            device, folder, names, batch, warmup, steps, backbone, precision=precision, profile_steps=profile_steps,
            modes=compiled, failures=failures,
        )  # fmt: skip
    else:
        for mode in dict.fromkeys(wanted):
            backend, mode_name = (None, "default") if mode == "eager" else ("inductor", TRAIN_MODES[mode] or "default")
            training_suite(
                device, folder, names, batch, warmup, steps, backend, precision, backbone, profile_steps, mode_name,
                failures=failures,
            )  # fmt: skip
    raise_failures(failures, folder)


@app.command("goals")
def goals_command(
    suites: Annotated[str, typer.Option(help="Any of sampler, latency, training, fid, profile.")] = "sampler,latency",
    res: ResOpt = "256,512,1024",
    fast: Annotated[str, typer.Option(help="Sampler fast paths: eager, graph, compile(-graph).")] = "eager,graph",
    latency_fast: Annotated[str, typer.Option(help="Fast paths of the batch-1 latency goal.")] = "eager,graph",
    steps: Annotated[int, typer.Option(help="Euler steps (= NFE) of the sampler-ratio goal.")] = 10,
    batch_scale: float = 1.0,
    warmup: int = 3,
    repeats: int = 10,
    train_presets: Annotated[str, typer.Option(help="Presets of the training goal.")] = PAIR_PRESETS,
    fid_backends: Annotated[str, typer.Option(help="FID backends of the CPU FID goal (tf, clean).")] = "tf",
    fid_images: Annotated[int, typer.Option(help="Images of the FID goal (CPU: prepared CelebA-HQ 128 px).")] = 5000,
    out: OutOpt = None,
    tiny: TinyOpt = False,
) -> None:
    """The performance goals (sampler time ratio, latency, training and FID throughput) as records with their
    threshold and whether it is met (goal, met), measured side by side in this process."""
    from bench.cli.eval import split_list
    from bench.perf.accel import check_fast_path
    from bench.perf.goals import fid_goal, latency_goal, sampler_goal, training_goal
    from bench.perf.profiling import profile_suite
    from bench.perf.suites import TrainFailure, raise_failures

    device, folder = _setup(out)
    wanted = split_list(suites, ("sampler", "latency", "training", "fid", "profile"), "suite")
    fast_paths, latency_paths = split_list(fast), split_list(latency_fast)
    checked = (fast_paths if "sampler" in wanted else []) + (latency_paths if "latency" in wanted else [])
    for f in checked:
        check_fast_path(f, device)
    backbone = TINY_BACKBONE if tiny else None
    if "profile" in wanted:
        profile_suite(device, folder, backbone=backbone, compile_backend="inductor" if device.type == "cuda" else None)
    if "sampler" in wanted:
        sampler_goal(device, folder, _ints(res), fast_paths, steps, warmup, repeats, batch_scale, backbone)
    if "latency" in wanted:
        latency_goal(device, folder, latency_paths, warmup=warmup, repeats=repeats, backbone=backbone)
    failures: list[TrainFailure] = []  # a failed training preset is recorded as n/a; the other goals still run
    if "training" in wanted:
        training_goal(device, folder, split_list(train_presets), backbone=backbone, failures=failures)
    if "fid" in wanted:
        from bench.metrics.protocols import FID_BACKENDS

        fid_goal(device, folder, fid_images, backends=tuple(split_list(fid_backends, tuple(FID_BACKENDS), "backend")))
    raise_failures(failures, folder)
