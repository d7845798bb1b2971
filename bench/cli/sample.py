"""`bench sample`: images (PNG, quantised once) or latents for a seed range from a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import parse_seeds

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Sampling override, e.g. sample.steps=100.")]


def sample_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `bench train`.")],
    seeds: Annotated[str, typer.Option(help="Seed range, e.g. 0-63.")] = "0-15",
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN_DIR/samples/seeds-A-B).")] = None,
    latents: Annotated[bool, typer.Option("--latents", help="Write latents (.safetensors) instead of PNGs.")] = False,
    batch_size: Annotated[int, typer.Option(help="Samples per forward batch (results do not depend on it).")] = 64,
    weights: Annotated[str, typer.Option(help="ema or model.")] = "ema",
    set_: SetOpt = None,
    grid: Annotated[bool, typer.Option(help="Also write grid.png of the samples.")] = False,
) -> None:
    """Sample seeds from RUN_DIR's latest checkpoint; under torchrun each process takes every world-th seed."""
    import dataclasses

    from bench.autoencoders import load_autoencoder
    from bench.checkpoint import load_run
    from bench.config import from_dict, merge, parse_set, to_dict
    from bench.dist import init_distributed, shutdown
    from bench.interface import SampleSpec
    from bench.paths import device_name
    from bench.sample import atomic_write_image, generate, image_grid, save_latents, save_png

    seed_list = parse_seeds(seeds)
    info = init_distributed(device_name())
    try:
        model, cfg = load_run(run_dir, weights, info.device)
        spec_values = to_dict(cfg.sample)
        for s in set_ or []:
            spec_values = merge(spec_values, parse_set(s).get("sample", {}))
        spec = from_dict(SampleSpec, spec_values, prefix="sample.")
        cfg = dataclasses.replace(cfg, sample=spec)
        out_dir = out or run_dir / "samples" / f"seeds-{seed_list[0]}-{seed_list[-1]}"
        mine = seed_list[info.rank :: info.world]
        ae = (
            None
            if latents
            else load_autoencoder(cfg.data.autoencoder, device=info.device, path=cfg.data.autoencoder_path)
        )
        written, images = 0, []
        for batch in generate(model, mine, spec, batch_size, cfg.train.precision, ae):
            if latents:
                save_latents(batch, out_dir, cfg)
            else:
                save_png(batch.images, batch.seeds, out_dir)
                images.append(batch.images)
            written += len(batch.seeds)
        if grid and images and info.world == 1:
            import torch

            atomic_write_image(image_grid(torch.cat(images)), out_dir / "grid.png")
    finally:
        shutdown()
    typer.echo(f"rank {info.rank}: wrote {written} {'latents' if latents else 'images'} to {out_dir}")
