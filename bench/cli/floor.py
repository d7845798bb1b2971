"""`bench reproduce mini-floor`: what each family's sampler costs with an exact network (bench.oracles), on a
Gaussian fit of a mini carry's latents. CPU, minutes; no training, no GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_FLOOR_MODELS = "lapflow,lfm,pyramidal-flow,dit"
# Each run takes the entries of its kind of solver (flow: euler, heun, dopri5; DiT: ddpm, ddim). DDPM draws a fresh
# noise per step, so its exact law needs steps x latent-size basis inputs: 100 steps at 128 px take minutes.
DEFAULT_FLOOR_SAMPLERS = "euler:100,euler:200,heun:25,heun:50,dopri5,ddpm:100,ddim:50"


def mini_floor_command(
    carry: Annotated[Path, typer.Option(help="Carry folder of `bench reproduce mini-prepare`.")] = Path(".carry/mini"),
    models: Annotated[str, typer.Option(help="Mini runs (families with an exact network).")] = DEFAULT_FLOOR_MODELS,
    samplers: Annotated[
        str, typer.Option(help="Samplers besides each preset's, solver[:steps] as `reproduce mini --samplers`.")
    ] = DEFAULT_FLOOR_SAMPLERS,
    out: Annotated[Path | None, typer.Option(help="Results folder (else $BENCH_RESULTS_DIR or results/).")] = None,
) -> None:
    """The sampler floor: each run's sampler with its family's exact network for N(mean, covariance) of the carry's
    latents (DiT: the exact noise prediction and the VLB-optimal per-coordinate variance). Records the Frechet
    distance (latent space) between that Gaussian and the samples' law, and the fraction of its variance they keep,
    in all and per Laplacian band, for the preset's sampler and each entry of --samplers of its kind of solver, in
    results/mini/<dataset><res>/floor/."""
    from bench.cli.eval import results_dir
    from bench.oracles.records import run_floors
    from bench.reproduce.mini import MINI_SUBDIR, model_presets, read_carry
    from bench.reproduce.samplers import parse_samplers

    entries = parse_samplers(samplers)
    found = read_carry(carry)
    runs = model_presets([m.strip() for m in models.split(",") if m.strip()], str(found.manifest["dataset"]))
    subdir = f"{MINI_SUBDIR}/{found.manifest['dataset']}{found.manifest['res']}/floor"
    written = run_floors(runs, found.data_overrides(), entries, results_dir(out), subdir, log=typer.echo)
    typer.echo(f"{len(written)} records in {results_dir(out) / subdir}")
