"""`bench demo`: train a tiny model on the CPU and show in ONE picture that it learned.

With no data root it trains `<model>-tiny` on the shapes data set (bench.datasets.synthetic.shapes_image: coloured
discs, squares, triangles and crosses at three scales on a plain background, 32 px, pixel space). The shapes reach
the training loop as a carried pixel file (bench.datasets.carried; the pixel autoencoder's "latents" are the images
in [-1, 1]), written once to `<cache>/demo/`. With a data root that holds CelebA-HQ (e.g.
BENCH_DATA_ROOT=../shared/data) it trains on the real faces at 64 px.

The picture (`<run dir>/demo.png`): real training images beside sample grids (the same seeds each time) from the
untrained model, at the sample points during training and at the end, with the training loss curve below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import numpy as np

    from bench.config import RunConfig

DEMO_PICTURE = "demo.png"
SHAPES_COUNT = 2048  # shapes images in the demo's data set
SHAPES_RES = 32
FACES_RES = 64
GRID_POINTS = 3  # sample grids during training: at 1/3, 2/3 and the end of it
PANEL_IMAGES = 16  # images per panel (a 4 x 4 grid)
PANEL_INCHES, PICTURE_DPI = 2.6, 110  # picture width: PANEL_INCHES per panel
LOG_STEPS = 8  # steps per stats.jsonl row: a loss curve of ~100 points


def demo_command(
    images: Annotated[int | None, typer.Option(help="Training length in images (default: ~3 min on one core).")] = None,
    model: Annotated[str, typer.Option(help="Family to demo (its -tiny preset).")] = "lfm",
) -> None:
    """Train `<model>-tiny` on shapes (or CelebA-HQ 64 px if a data root holds it); write one picture of it."""
    import os

    import torch

    from bench.cli.train import train_command
    from bench.paths import cache_dir, data_root, runs_dir

    # On a 2-core machine a second intra-op thread spin-waits against everything else: one thread measured ~10x
    # faster here under load. Larger machines keep up to 4 threads.
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))

    root = data_root()
    real = root is not None and root.is_dir() and any(p.name.startswith("celebahq") for p in root.iterdir())
    # 64 px real faces have 4x the tokens of 32 px shapes: a quarter of the images for a similar time.
    dataset, res, default_images = ("celebahq", FACES_RES, 6_144) if real else ("synthetic", SHAPES_RES, 32_768)
    sets = [] if real else [f"data.path={shapes_file(cache_dir() / 'demo', SHAPES_COUNT, SHAPES_RES)}"]
    what = "CelebA-HQ faces" if real else f"{SHAPES_COUNT:,} synthetic shapes images"
    name = f"demo-{model}-{'celebahq' if real else 'shapes'}{res}"
    cfg = _resolve(model, dataset, res, images or default_images, name, sets)
    batch = cfg.train.batch_size
    sets += [
        f"train.sample_every={grid_every(cfg.train.total_images, batch)}",
        f"train.log_every={LOG_STEPS * batch}",
        "train.lr_schedule=cosine",  # a short run: the learning rate decays to 0 by its end
    ]
    typer.echo(f"demo: training {model}-tiny on {what} at {res} px (data root: {root or 'none'})")
    train_command(
        model=None,
        preset=f"{model}-tiny",
        config=None,
        set_=sets,
        dataset=dataset,
        res=res,
        autoencoder=None,
        images=cfg.train.total_images,
        name=name,
        dry_run=False,
        progress=True,
    )
    cfg = _resolve(model, dataset, res, cfg.train.total_images, name, sets)
    run_dir = runs_dir() / cfg.run_name
    start_grid(cfg, run_dir)
    examples = real_examples(cfg, real)
    picture = write_picture(run_dir, examples, f"training images ({'CelebA-HQ' if real else 'shapes'})")
    typer.echo(f"demo: picture of the run (training images, samples from start to end, loss curve): {picture}")
    typer.echo(f"demo: sample grids and stats.jsonl are in {run_dir}")


def _resolve(model: str, dataset: str, res: int, images: int, name: str, sets: list[str]) -> RunConfig:
    from bench.cli.common import cli_overrides
    from bench.config import resolve

    overrides = cli_overrides(sets, dataset=dataset, res=res, images=images, name=name)
    return resolve(None, f"{model}-tiny", None, overrides)


def grid_every(total_images: int, batch_size: int) -> int:
    """train.sample_every for GRID_POINTS grids during training, the last one at the end: whole batches."""
    return max(1, math.ceil(total_images / GRID_POINTS / batch_size)) * batch_size


def shapes_file(folder: Path, count: int, res: int) -> Path:
    """The shapes data set as a carried pixel file (written once, atomically; reused while its version holds)."""
    import tempfile

    import numpy as np

    from bench.config import DataConfig
    from bench.datasets.carried import export_carried
    from bench.datasets.sources import short_hash
    from bench.datasets.synthetic import SHAPES_SEED, SHAPES_VERSION, shapes_images

    path = folder / f"shapes{res}-{count}-v{SHAPES_VERSION}.safetensors"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(dataset="synthetic", res=res, autoencoder="pixel")
    pixels = shapes_images(count, res).astype(np.float32) / 127.5 - 1.0  # the data pipeline's x = u / 127.5 - 1
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        np.save(Path(tmp) / "latents.npy", pixels.astype(np.float16))  # exact: u / 127.5 - 1 round-trips in fp16
        meta = {
            "source_hash": short_hash("shapes", SHAPES_SEED, SHAPES_VERSION, count, res),
            "source": f"bench.datasets.synthetic.shapes_image v{SHAPES_VERSION}, images 0..{count - 1}",
        }
        marker = {"files": {"latents": "latents.npy"}, "weights_hash": "identity", "encode": "pixels", "dtype": "fp16"}
        export_carried(Path(tmp), meta, marker, cfg, path)
    return path


def start_grid(cfg: RunConfig, run_dir: Path) -> Path:
    """samples/grid-0000000000.png: the grid of the untrained model (train() starts from the same weights)."""
    import torch

    from bench.registry import MODELS
    from bench.train import write_grid
    from bench.validate import check_run

    path = run_dir / "samples" / f"grid-{0:010d}.png"
    if path.is_file():
        return path
    torch.manual_seed(cfg.seed)  # as bench.train.train before it builds the model: the same initial weights
    model = MODELS.load(cfg.family)(cfg.model, tuple(check_run(cfg).latent_shape), cfg.data.num_classes)
    return write_grid(model, cfg, run_dir, 0, torch.device("cpu"))


def real_examples(cfg: RunConfig, real: bool) -> np.ndarray:
    """PANEL_IMAGES training images, uint8 [N, H, W, 3]."""
    import numpy as np

    from bench.data import load_prepared_images
    from bench.datasets.synthetic import shapes_images
    from bench.paths import cache_dir, data_root

    if real:
        images = np.asarray(load_prepared_images(cfg.data, data_root(), cache_dir(), progress=False)[0][:PANEL_IMAGES])
    else:
        images = shapes_images(PANEL_IMAGES, cfg.data.res)
    return images.transpose(0, 2, 3, 1)


def read_losses(run_dir: Path) -> tuple[list[int], list[float]]:
    """(images seen, mean loss) of every stats.jsonl row."""
    images, losses = [], []
    for line in (run_dir / "stats.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if "loss" in row:
            images.append(int(row["images"]))
            losses.append(float(row["loss"]))
    return images, losses


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """(images seen, grid file) of the run's sample grids, in training order."""
    grids = sorted((run_dir / "samples").glob("grid-*.png"))
    return [(int(p.stem.split("-")[1]), p) for p in grids]


def picture_panels(run_dir: Path, examples: np.ndarray, examples_title: str) -> list[tuple[str, np.ndarray]]:
    """(title, RGB image) of each panel: a grid of the training images, then the sample grids in training order."""
    import numpy as np
    import torch
    from PIL import Image

    from bench.sample import image_grid

    grids = sample_grids(run_dir)
    last = grids[-1][0] if grids else 0
    panels = [(examples_title, np.asarray(image_grid(torch.from_numpy(np.ascontiguousarray(examples)))))]
    for images_seen, path in grids:
        title = "samples at the start" if images_seen == 0 else f"after {images_seen:,} images"
        title = title if images_seen < last else f"at the end ({images_seen:,} images)"
        panels.append((title, np.asarray(Image.open(path).convert("RGB"))))
    return panels


def write_picture(run_dir: Path, examples: np.ndarray, examples_title: str) -> Path:
    """demo.png: the panels side by side and the loss curve below (dotted lines: where the grids were sampled)."""
    from matplotlib.figure import Figure

    panels = picture_panels(run_dir, examples, examples_title)
    fig = Figure(figsize=(PANEL_INCHES * len(panels), 6.2), layout="constrained")
    grid_spec = fig.add_gridspec(2, len(panels), height_ratios=(1.0, 0.8))
    for i, (title, image) in enumerate(panels):
        ax = fig.add_subplot(grid_spec[0, i])
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid_spec[1, :])
    images, losses = read_losses(run_dir)
    ax.plot(images, losses, color="tab:blue", marker=".", label="training loss (mean over each log interval)")
    for images_seen, _ in sample_grids(run_dir)[1:]:
        ax.axvline(images_seen, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("images seen (dotted: sample grids above)")
    ax.set_ylabel("flow-matching loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.suptitle(f"bench demo: {run_dir.name}", fontsize=11)
    path = run_dir / DEMO_PICTURE
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=PICTURE_DPI)
    tmp.replace(path)
    return path
