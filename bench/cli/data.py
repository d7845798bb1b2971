"""`bench data ...`: prepare data sets (verify every image, crop, cache; optionally encode latents once).

Imports stay lazy: `bench --help` must not import torch.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bench.paths import cache_dir, data_root

app = typer.Typer(help="Prepare data sets: verify, crop and cache images (and latents).", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Data set preparation (data root: --data-root / BENCH_DATA_ROOT; cache: BENCH_CACHE_DIR)."""


@app.command()
def prepare(
    dataset: str = typer.Argument(..., help="synthetic | celebahq | imagenet"),
    res: int = typer.Option(..., "--res", help="Square resolution to prepare."),
    path: str = typer.Option("", "--path", help="Data set folder (default: found under the data root by name)."),
    autoencoder: str = typer.Option("pixel", "--autoencoder", help="Also cache this autoencoder's latents."),
    autoencoder_path: str = typer.Option("", "--autoencoder-path", help="Local weights folder for the autoencoder."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out unreadable files (listed in meta.json)."),
    split: str = typer.Option("train", "--split", help="imagenet: sub-folder holding the class folders."),
    num_classes: int = typer.Option(0, "--num-classes", help="imagenet: expected class count (0: any)."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Also encode mirrored images (latent flip)."),
    synthetic_size: int = typer.Option(0, "--synthetic-size", help="synthetic: image count (0: the default)."),
    device: str = typer.Option("auto", "--device", help="Device for encoding latents (auto, cpu, cuda, ...)."),
) -> None:
    """Verify and prepare DATASET at --res into the cache; reruns reuse what matches."""
    from bench.config import DataConfig
    from bench.data import prepare as prepare_data
    from bench.data import prepared_meta
    from bench.registry import AUTOENCODERS, DATASETS
    from bench.runtime import resolve_device
    from bench.validate import check_resolution

    check_resolution(res, "--res")
    cfg = DataConfig(
        dataset=DATASETS.check(dataset),
        res=res,
        autoencoder=AUTOENCODERS.check(autoencoder),
        autoencoder_path=autoencoder_path,
        path=path,
        split=split,
        num_classes=num_classes,
        flip=flip,
        synthetic_size=synthetic_size or DataConfig.synthetic_size,
    )
    root, cache = data_root(), cache_dir()
    folder = prepare_data(cfg, root, cache, skip_bad=skip_bad, device=resolve_device(device), progress=True)
    meta = prepared_meta(folder) or {}
    typer.echo(f"Prepared {meta['count']} images of '{dataset}' at {res} px in {folder}.")
    if meta.get("class_names"):
        typer.echo(f"Classes: {len(meta['class_names'])}.")
    if meta.get("skipped"):
        typer.echo(f"Skipped {len(meta['skipped'])} unreadable files: {', '.join(meta['skipped'])}.")
    latents = sorted(p.name for p in Path(folder).glob(f"latents-{autoencoder}-*.npy"))
    if latents:
        typer.echo(f"Latents: {', '.join(latents)}.")
