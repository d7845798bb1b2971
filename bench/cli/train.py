"""`bench train`: train any family through the one training loop (single process or torchrun)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import cli_overrides

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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and stop.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train MODEL (or the preset's model); rerunning the same command resumes from the last checkpoint."""
    from bench.config import dump, resolve
    from bench.paths import cache_dir, data_root, device_name, runs_dir

    overrides = cli_overrides(set_, dataset=dataset, res=res, autoencoder=autoencoder, images=images, name=name)
    cfg = resolve(model, preset, str(config) if config else None, overrides)
    if dry_run:
        typer.echo(dump(cfg), nl=False)
        return
    from bench.dist import init_distributed, shutdown
    from bench.train import train
    from bench.validate import validate_run_config

    validate_run_config(cfg)
    info = init_distributed(device_name())
    try:
        result = train(cfg, runs_dir() / cfg.run_name, info, data_root(), cache_dir(), progress=progress)
    finally:
        shutdown()
    if info.is_main:
        trained = not math.isnan(result.last_loss)  # NaN: no step ran in this call
        if result.interrupted:
            status = "interrupted (checkpoint written; rerun to resume)"
        elif not trained:
            status = "already complete (remove the run directory or pass --name to train again)"
        else:
            status = "done"
        loss = f"last loss {result.last_loss:.4f}, " if trained else ""
        counts = f"{result.state.images_seen} images, {result.state.step} steps"
        typer.echo(f"{status}: {counts}, {loss}run dir {result.run_dir}")
