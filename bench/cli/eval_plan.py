"""What `bench eval run` measures (its targets), the plan it prints first (what, how many records, rough cost)
and the measurement loop with its progress lines.

Rough costs are orders of magnitude measured on this project's machines (2 CPU cores; one H200), enough to tell
seconds from hours before a long command starts; the records themselves carry the measured numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.cli.common import echo_header
from bench.errors import BenchError
from bench.metrics.measure import FidRequest, Target

DEFAULT_RES = 256

# Records written per target and metric (bench.metrics.measure): gflops forward/sample/decode; one NFE record;
# sampler-only and end-to-end per timing batch size; one FID record per backend.
FLOPS_RECORDS, NFE_RECORDS, TIME_MODES = 3, 1, 2
CPU_DEFAULT_METRICS = "flops,nfe"  # `bench eval --all` on a CPU: timing an L/2 sampler there takes hours
GPU_DEFAULT_METRICS = "flops,time,nfe"


def default_preset(family: str, res: int) -> str:
    """The family's CelebA-HQ preset at `res` (the paper's architecture), e.g. lfm-celebahq256-l2."""
    from bench.registry import PRESET_TABLES

    names = sorted(n for n in PRESET_TABLES.load(family) if n.startswith(f"{family}-celebahq{res}-"))
    if len(names) > 1:
        names = [n for n in names if n.endswith("-l2")] or names
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise BenchError(f"Model '{family}' has no single CelebA-HQ {res} px preset (found {found}); pass --preset.")
    return names[0]


def build_targets(
    model: str | None, all_: bool, preset: str | None, res: list[int] | None, run_dir: Path | None
) -> list[Target]:
    from bench.config import load_run_config, resolve
    from bench.registry import MODELS

    if run_dir is not None:
        if all_ or preset:
            raise BenchError("--run-dir measures one trained run; drop --all and --preset.")
        cfg = load_run_config(Path(run_dir) / "config.yaml")
        if model and model != cfg.family:
            raise BenchError(f"Run '{run_dir}' is a '{cfg.family}' run, not '{model}'.")
        if res and res != [cfg.data.res]:
            raise BenchError(f"Run '{run_dir}' is trained at {cfg.data.res} px; drop --res.")
        return [Target(cfg.family, cfg, Path(run_dir))]
    if all_ and (model or preset):
        raise BenchError("--all measures every model at its default presets; drop MODEL and --preset.")
    if not (all_ or model or preset):
        raise BenchError("Name a MODEL, a --preset, a --run-dir or --all.")
    families = MODELS.names() if all_ else [MODELS.check(model)] if model else [None]
    targets = []
    for family in families:
        if preset:
            for r in res or [None]:
                overrides = [{"data": {"res": r}}] if r else []
                cfg = resolve(family, preset, overrides=overrides)
                targets.append(Target(cfg.family, cfg, None))
        else:
            for r in res or [DEFAULT_RES]:
                try:
                    name = default_preset(family, r)
                except BenchError as exc:
                    if not all_:
                        raise
                    typer.echo(f"skipping {family} at {r} px: {exc}", err=True)
                    continue
                targets.append(Target(family, resolve(family, name), None))
    return targets


def rough_cost(metric: str, device: Any, time_batches: list[int], num_samples: int) -> str:
    cpu = device.type != "cuda"
    if metric == "flops":
        return "fvcore trace, ~20 s per model on a CPU"
    if metric == "nfe":
        where = "several minutes per L/2 model on a CPU" if cpu else "seconds on a GPU"
        return f"one batch-1 sample per model (sample.steps network calls; {where})"
    if metric == "time":
        largest = max(time_batches)
        where = f"hours at batch {largest} on a CPU" if cpu else "about a minute per model on a GPU"
        return f"(warm-ups + repeats) timed samples at batch {', '.join(map(str, time_batches))}: {where}"
    where = "~0.5 CPU-seconds per sample and backend" if cpu else "minutes per 5k samples on a GPU"
    return f"{num_samples:,} samples generated and scored, {where}"


def record_count(metric: str, time_batches: list[int], backends: int) -> int:
    return {"flops": FLOPS_RECORDS, "nfe": NFE_RECORDS, "time": TIME_MODES * len(time_batches)}.get(metric, backends)


def echo_plan(targets: list, metrics: list[str], device: Any, folder: Any, time_batches: list[int], fid: Any) -> None:
    """What will be measured, how many records, the rough cost, where they go; CPU records are marked."""
    backends = len(fid.backends) if fid is not None else 0
    per_target = sum(record_count(m, time_batches, backends) for m in metrics)
    names = ", ".join(f"{t.cfg.preset or t.family} {t.cfg.data.res} px" for t in targets)
    where = f"{device}" + (
        " (records say environment.gpu: null, i.e. measured on a CPU)" if device.type != "cuda" else ""
    )
    rows = [
        ("models", names),
        ("metrics", ", ".join(metrics)),
        ("records", f"{per_target * len(targets)} ({per_target} per model)"),
        ("device", where),
        ("results", str(folder)),
    ]
    num = fid.num_samples if fid is not None else 0
    rows += [(f"cost {m}", rough_cost(m, device, time_batches, num)) for m in metrics]
    echo_header(f"bench eval: {len(targets)} model(s) x {len(metrics)} metric(s)", rows)


def echo_step(index: int, total: int, target: Any, metric: str) -> None:
    typer.echo(
        f"eval [{index}/{total}] {target.cfg.preset or target.family} {target.cfg.data.res} px: {metric}", err=True
    )


def measure(
    targets: list[Target],
    wanted: list[str],
    dev: Any,
    folder: Path,
    spec_over: list[dict],
    precision: str | None,
    timing: tuple[list[int], int, int, str],
    fid: FidRequest | None,
) -> None:
    """Each metric of each target in turn, with an `eval [i/n]` line before it; records are written as they end."""
    from bench.cli.common import apply_sample_overrides
    from bench.metrics.measure import Context, cost_autoencoder, load_target, run_flops, run_nfe, run_time
    from bench.runtime import configure_numerics, environment

    steps_done, total = 0, len(targets) * len(wanted)
    for target in targets:
        spec = apply_sample_overrides(target.cfg.sample, spec_over)
        prec = precision or target.cfg.train.precision
        numerics = configure_numerics(dev, prec)
        env = {**environment(dev), "numerics": numerics}
        ctx = Context(target, load_target(target, dev), spec, dev, prec, env, folder)
        if {"time", "flops"} & set(wanted):
            ctx.autoencoder, ctx.autoencoder_note = cost_autoencoder(target.cfg, dev)
        for metric in [m for m in ("flops", "nfe", "time", "fid") if m in wanted]:
            steps_done += 1
            echo_step(steps_done, total, target, metric)
            if metric == "flops":
                run_flops(ctx)
            elif metric == "nfe":
                run_nfe(ctx)
            elif metric == "time":
                run_time(ctx, *timing)
            elif fid is not None:
                from bench.metrics.measure import run_fid

                run_fid(ctx, fid)
