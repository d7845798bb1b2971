"""`bench train`: train any family through the one training loop (single process or torchrun).

Before any work: the resolved config is validated (values, name, model, autoencoder weights, device, data and
the run folder); --dry-run runs the same checks, prints the config and stops. A header then says what will run.
A run stopped by SIGINT or SIGTERM writes a checkpoint and exits with 128 + the signal (130 or 143).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.cli.common import cli_overrides, count_text, echo_header, signal_exit_code

if TYPE_CHECKING:  # the CLI imports no torch at start-up
    from bench.config import RunConfig
    from bench.dist import DistInfo
    from bench.train import TrainResult
    from bench.validate import RunCheck

PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="Preset name (see `bench ls presets`).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of overrides.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override key=value (repeatable).")]


def train_command(
    model: Annotated[str | None, typer.Argument(help="Model family (see `bench ls models`).")] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dataset: Annotated[str | None, typer.Option(help="Data set (synthetic, celebahq, imagenet).")] = None,
    res: Annotated[int | None, typer.Option(help="Image resolution in px.")] = None,
    autoencoder: Annotated[str | None, typer.Option(help="Autoencoder name (see `bench ls autoencoders`).")] = None,
    images: Annotated[int | None, typer.Option(help="Training length in images seen.")] = None,
    name: Annotated[str | None, typer.Option(help="Run directory name (default: the preset).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, print the resolved config and stop.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train MODEL (or the preset's model); rerunning the same command resumes from the last checkpoint."""
    from bench.config import dump, resolve
    from bench.data import describe_data
    from bench.paths import cache_dir, check_writable_dir, data_root, device_name, runs_dir
    from bench.runtime import resolve_device
    from bench.validate import check_run

    overrides = cli_overrides(set_, dataset=dataset, res=res, autoencoder=autoencoder, images=images, name=name)
    cfg = resolve(model, preset, str(config) if config else None, overrides)
    check = check_run(cfg)
    device = resolve_device(device_name())
    run_dir = check_writable_dir(runs_dir() / cfg.run_name, "run folder")
    check_writable_dir(cache_dir(), "cache folder")
    data_lines = describe_data(cfg.data, data_root(), cache_dir())
    if dry_run:
        from bench.dist import DistInfo

        typer.echo(dump(cfg), nl=False)
        echo_header(
            f"bench train --dry-run: {_model_line(cfg, check)}",
            _header_rows(cfg, DistInfo(0, 1, 0, device), data_lines, run_dir),
        )
        return
    from bench.dist import init_distributed, shutdown
    from bench.train import train

    info = init_distributed(device_name())
    try:
        if info.is_main:
            echo_header(f"bench train: {_model_line(cfg, check)}", _header_rows(cfg, info, data_lines, run_dir))
        result = train(cfg, run_dir, info, data_root(), cache_dir(), progress=progress)
    finally:
        shutdown()
    if info.is_main:
        typer.echo(_final_line(result))
    if result.interrupted:
        from bench.stop import StopFlag  # the signal that stopped the loop (TrainResult says only that one did)

        raise typer.Exit(signal_exit_code(StopFlag.last_signal or 15))


def _model_line(cfg: RunConfig, check: RunCheck) -> str:
    shape = "x".join(str(d) for d in check.latent_shape)
    preset = f" ({cfg.preset})" if cfg.preset else ""
    return f"{cfg.family}{preset}, {count_text(check.parameters)} parameters, latents {shape}"


def _header_rows(cfg: RunConfig, info: DistInfo, data_lines: tuple[str, str], run_dir: Path) -> list[tuple[str, str]]:
    from bench.checkpoint import resume_point
    from bench.runtime import autocast_dtype

    t = cfg.train
    dtype = autocast_dtype(info.device, t.precision)
    procs = f" x {info.world} processes" if info.world > 1 else ""
    dtype_text = "bf16 autocast" if dtype is not None else "float32"
    steps = math.ceil(t.total_images / t.batch_size)
    length = f"{t.total_images:,} images = {steps:,} steps of {t.batch_size} (checkpoint every {t.checkpoint_every:,})"
    if t.max_seconds > 0:
        length += f", at most {t.max_seconds:g} s of training"
    ckpt, skipped = resume_point(run_dir)
    if ckpt is None:
        resume = "from the start (no checkpoint yet)"
    else:
        import json

        seen = json.loads((ckpt / "state.json").read_text())["images_seen"]
        resume = f"from {ckpt.name} ({seen:,} of {t.total_images:,} images)"
    if skipped:
        resume += f"; skipping corrupt {', '.join(p.name for p, _ in skipped)}"
    return [
        ("device", f"{info.device}{procs}, {dtype_text} (train.precision {t.precision})"),
        ("data", data_lines[0]),
        ("cache", data_lines[1]),
        ("autoencoder", cfg.data.autoencoder),
        ("length", length),
        ("run folder", str(run_dir)),
        ("resume", resume),
    ]


def _final_line(result: TrainResult) -> str:
    trained = not math.isnan(result.last_loss)  # NaN: no step ran in this call
    if result.interrupted:
        status = "interrupted (checkpoint written; rerun the same command to resume)"
    elif not trained:
        status = "already complete (remove the run directory or pass --name to train again)"
    else:
        status = "done"
    loss = f"last loss {result.last_loss:.4f}, " if trained else ""
    counts = f"{result.state.images_seen} images, {result.state.step} steps"
    return f"{status}: {counts}, {loss}run dir {result.run_dir}"
