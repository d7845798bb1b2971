"""`bench sample`: images (PNG, quantised once) or latents for a seed range from a trained run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.cli.common import apply_sample_overrides, count_text, echo_header, parse_seeds, sample_overrides
from bench.errors import BenchError

if TYPE_CHECKING:  # the CLI imports no torch at start-up
    from bench.config import RunConfig
    from bench.dist import DistInfo
    from bench.interface import GenerativeModel

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Sampling override, e.g. sample.steps=100.")]


def sample_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `bench train`.")],
    seeds: Annotated[str, typer.Option(help="Seed range, e.g. 0-63.")] = "0-15",
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN_DIR/samples/seeds-A-B).")] = None,
    latents: Annotated[bool, typer.Option("--latents", help="Write latents (.safetensors) instead of PNGs.")] = False,
    batch_size: Annotated[int, typer.Option(help="Samples per forward batch (results do not depend on it).")] = 64,
    fast: Annotated[str, typer.Option(help="eager, graph (CUDA graphs: same samples), compile, compile-graph.")] = (
        "eager"
    ),
    weights: Annotated[str, typer.Option(help="ema or model.")] = "ema",
    set_: SetOpt = None,
    grid: Annotated[bool, typer.Option(help="Also write grid.png of the samples.")] = False,
    class_grid: Annotated[
        bool, typer.Option("--class-grid", help="Write only class-grid.png: a row per class, a column per seed.")
    ] = False,
    classes: Annotated[str, typer.Option(help="--class-grid rows, e.g. 0-9 or 1,4,9 (default: all).")] = "",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Sample seeds from RUN_DIR's latest checkpoint; under torchrun each process takes every world-th seed."""

    from bench.checkpoint import CONFIG_FILE, load_run
    from bench.config import load_run_config
    from bench.dist import init_distributed, shutdown
    from bench.paths import check_writable_dir, device_name
    from bench.perf.accel import check_fast_path

    seed_list = parse_seeds(seeds)
    class_list = parse_classes(classes) if classes else None
    if batch_size <= 0:
        raise BenchError(f"--batch-size must be positive, got {batch_size}.")
    sample_sets = sample_overrides(set_ or [], "bench sample")
    info = init_distributed(device_name())
    try:
        check_fast_path(fast, info.device)
        if not (run_dir / CONFIG_FILE).is_file():
            raise BenchError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}).")
        out_dir = check_writable_dir(
            out or run_dir / "samples" / f"seeds-{seed_list[0]}-{seed_list[-1]}", "output folder"
        )
        spec = apply_sample_overrides(load_run_config(run_dir / CONFIG_FILE).sample, sample_sets)  # before loading
        model, cfg = load_run(run_dir, weights, info.device)
        cfg = dataclasses.replace(cfg, sample=spec)
        if class_grid:
            write_class_grid(model, cfg, seed_list, class_list, out_dir, batch_size, info)
            return
        if info.is_main:
            echo_header(
                f"bench sample: {cfg.family} ({count_text(sum(p.numel() for p in model.parameters()))} parameters)",
                _header_rows(run_dir, cfg, info, len(seed_list), out_dir, weights, fast, latents),
            )
        mine = seed_list[info.rank :: info.world]
        written = write_samples(model, cfg, mine, out_dir, batch_size, info, latents, grid, fast, progress)
    finally:
        shutdown()
    who = f"rank {info.rank}: " if info.world > 1 else ""
    typer.echo(f"{who}wrote {written} {'latents' if latents else 'images'} to {out_dir}")


def write_samples(
    model: GenerativeModel,
    cfg: RunConfig,
    seeds: list[int],
    out_dir: Path,
    batch_size: int,
    info: DistInfo,
    latents: bool,
    grid: bool,
    fast: str,
    progress: bool,
) -> int:
    """This process's seeds as PNGs (or latents), with a labelled progress bar; returns how many were written."""
    from tqdm import tqdm

    from bench.autoencoders import load_autoencoder
    from bench.sample import atomic_write_image, generate, image_grid, save_latents, save_png

    ae = None if latents else load_autoencoder(cfg.data.autoencoder, device=info.device, path=cfg.data.autoencoder_path)
    written, images = 0, []
    bar = tqdm(total=len(seeds), unit="img", desc="sample", dynamic_ncols=True, disable=not (progress and info.is_main))
    for batch in generate(model, seeds, cfg.sample, batch_size, cfg.train.precision, ae, fast=fast):
        if latents:
            save_latents(batch, out_dir, cfg)
        else:
            save_png(batch.images, batch.seeds, out_dir)
            images.append(batch.images)
        written += len(batch.seeds)
        bar.update(len(batch.seeds))
    bar.close()
    if grid and images and info.world == 1:
        import torch

        atomic_write_image(image_grid(torch.cat(images)), out_dir / "grid.png")
    return written


def _header_rows(
    run_dir: Path, cfg: RunConfig, info: DistInfo, n: int, out_dir: Path, weights: str, fast: str, latents: bool
) -> list[tuple[str, str]]:
    import json

    from bench.checkpoint import latest_checkpoint
    from bench.runtime import autocast_dtype

    ckpt = latest_checkpoint(run_dir)
    seen = json.loads((ckpt / "state.json").read_text())["images_seen"] if ckpt else 0
    dtype = "bf16 autocast" if autocast_dtype(info.device, cfg.train.precision) else "float32"
    procs = f" x {info.world} processes" if info.world > 1 else ""
    s = cfg.sample
    return [
        ("device", f"{info.device}{procs}, {dtype}, fast path {fast}"),
        ("checkpoint", f"{ckpt} ({weights} weights, {seen:,} images seen)"),
        ("sampling", f"{s.solver}, {s.steps} steps, guidance {s.guidance:g}"),
        ("length", f"{n:,} seeds -> {'latents' if latents else f'PNGs decoded with {cfg.data.autoencoder}'}"),
        ("out", str(out_dir)),
    ]


def parse_classes(text: str) -> list[int]:
    """'0-9' or '1,4,9' -> class ids (same forms as seeds)."""
    try:
        return parse_seeds(text)
    except BenchError:
        raise BenchError(f"Classes must look like '0-9', '3' or '1,4,9', got '{text}'.") from None


def write_class_grid(
    model: GenerativeModel,
    cfg: RunConfig,
    seeds: list[int],
    classes: list[int] | None,
    out_dir: Path,
    batch_size: int,
    info: DistInfo,
) -> None:
    """class-grid.png in out_dir (one process: the grid is small and its layout needs every row)."""
    from bench.autoencoders import load_autoencoder
    from bench.sample import atomic_write_image, class_grid

    if info.world > 1:
        raise BenchError("--class-grid runs in one process; start it without torchrun.")
    ae = load_autoencoder(cfg.data.autoencoder, device=info.device, path=cfg.data.autoencoder_path)
    image = class_grid(model, seeds, cfg.sample, ae, classes, batch_size, cfg.train.precision)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_image(image, out_dir / "class-grid.png")
    rows = classes if classes is not None else list(range(model.num_classes))
    typer.echo(f"wrote class-grid.png ({len(rows)} classes x {len(seeds)} seeds) to {out_dir}")
