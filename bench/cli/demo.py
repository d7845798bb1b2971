"""`bench demo`: the main job on the embedded default — train a tiny LFM, then sample a grid.

With no data configured it trains on the suite's synthetic data set (32 px, pixel space); with a data root that
holds CelebA-HQ (e.g. BENCH_DATA_ROOT=../shared/data) it trains on the real faces at 64 px.
"""

from __future__ import annotations

from typing import Annotated

import typer


def demo_command(
    images: Annotated[int | None, typer.Option(help="Training length in images (default: sized for ~3 min).")] = None,
    model: Annotated[str, typer.Option(help="Family to demo (its -tiny preset).")] = "lfm",
) -> None:
    """Train `<model>-tiny` on the embedded default (or CelebA-HQ 64 px if a data root holds it) and sample."""
    import os

    import torch

    from bench.cli.train import train_command
    from bench.paths import data_root

    # On a 2-core machine a second intra-op thread spin-waits against everything else: one thread measured ~10x
    # faster here under load. Larger machines keep up to 4 threads.
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))

    root = data_root()
    real = root is not None and any(p.name.startswith("celebahq") for p in root.iterdir() if p.is_dir())
    # 64 px real faces have 4x the tokens of 32 px synthetic images: a quarter of the images for a similar time.
    dataset, res, default_images = ("celebahq", 64, 6_144) if real else ("synthetic", 32, 24_576)
    images = images or default_images
    typer.echo(f"demo: training {model}-tiny on {dataset} at {res} px (data root: {root or 'none, synthetic'})")
    train_command(
        model=None,
        preset=f"{model}-tiny",
        config=None,
        set_=None,
        dataset=dataset,
        res=res,
        autoencoder=None,
        images=images,
        name=f"demo-{model}-{dataset}{res}",
        dry_run=False,
        progress=True,
    )
    typer.echo("demo: sample grid and stats are in the run directory above (samples/grid-*.png, stats.jsonl)")
