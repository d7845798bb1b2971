"""Sampling harness: per-sample seeds -> latents -> decoded, quantised images.

Each seed owns its noise stream (bench.runtime.per_sample_randn_like), so a seed gives the same image whatever the
batch size or number of processes. Images are quantised exactly once (x * 127.5 + 128, clamp, uint8) and saved
losslessly as `{seed:06d}.png`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bench.errors import BenchError
from bench.interface import GenerativeModel, SampleSpec
from bench.io import atomic_write
from bench.runtime import autocast, balanced_labels, per_sample_randn_like


@dataclass
class SampleBatch:
    seeds: list[int]
    latents: Tensor  # [B, C, h, w] float32 on the CPU
    images: Tensor | None  # [B, H, W, 3] uint8 on the CPU, when an autoencoder decoded them
    labels: Tensor | None
    nfe: int


def quantize(x: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8 (the one quantisation of the suite)."""
    return (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def generate(
    model: GenerativeModel,
    seeds: Sequence[int],
    spec: SampleSpec,
    batch_size: int = 64,
    precision: str = "auto",
    autoencoder: torch.nn.Module | None = None,
    labels: Tensor | None = None,
    fast: str = "eager",
) -> Iterator[SampleBatch]:
    """Yield batches of samples for `seeds` in order; labels default to balanced classes by seed.

    `fast` runs the network on a bench.perf.accel fast path (`graph` gives the eager samples exactly).
    """
    from bench.perf.accel import accelerated

    device = model.device
    model.eval()
    with accelerated(model, fast):
        for start in range(0, len(seeds), batch_size):
            chunk = [int(s) for s in seeds[start : start + batch_size]]
            randn_like = per_sample_randn_like(chunk, device)
            noise = randn_like(torch.empty(len(chunk), *model.latent_shape, device=device))
            y = labels[start : start + len(chunk)] if labels is not None else balanced_labels(chunk, model.num_classes)
            y = y.to(device) if y is not None else None
            with torch.inference_mode(), autocast(device, precision):
                out = model.sample(noise, y, spec, randn_like)
                latents = out.latents.float()
                images = quantize(autoencoder.decode(latents)).cpu() if autoencoder is not None else None
            yield SampleBatch(chunk, latents.cpu(), images, y.cpu() if y is not None else None, out.nfe)


def save_png(images: Tensor, seeds: Sequence[int], out_dir: Path) -> list[Path]:
    """Write `{seed:06d}.png` files atomically (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, seed in zip(images.numpy(), seeds, strict=True):
        path = out_dir / f"{int(seed):06d}.png"
        atomic_write_image(Image.fromarray(image), path)
        paths.append(path)
    return paths


def atomic_write_image(image: Image.Image, path: Path) -> None:
    """A lossless PNG, written atomically (bench.io)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), suffix=".tmp.png")


def image_grid(images: Tensor, columns: int | None = None) -> Image.Image:
    """[B, H, W, 3] uint8 -> one PIL grid image."""
    b, h, w, _ = images.shape
    cols = columns or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / cols))
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, img in enumerate(images.numpy()):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return Image.fromarray(grid)


def class_grid(
    model: GenerativeModel,
    seeds: Sequence[int],
    spec: SampleSpec,
    autoencoder: torch.nn.Module,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    precision: str = "auto",
) -> Image.Image:
    """One row per class (all of the model's classes by default), one column per seed.

    Column j starts from seed j's noise in every row, so rows differ only by their label: what the class changes
    is visible even where the samples themselves are poor.
    """
    if model.num_classes <= 0:
        raise BenchError("A class grid needs a class-conditional model; this one has no classes.")
    rows = list(range(model.num_classes)) if classes is None else [int(c) for c in classes]
    bad = [c for c in rows if not 0 <= c < model.num_classes]
    if bad or not rows or not seeds:
        raise BenchError(f"Class grid classes must lie in 0..{model.num_classes - 1} and seeds be given; got {rows}.")
    labels = torch.tensor([c for c in rows for _ in seeds], dtype=torch.long)
    all_seeds = [int(s) for _ in rows for s in seeds]
    batches = generate(model, all_seeds, spec, batch_size, precision, autoencoder, labels)
    return image_grid(torch.cat([b.images for b in batches]), columns=len(seeds))


def save_latents(batch: SampleBatch, out_dir: Path, cfg: object) -> Path:
    """Latents of one batch as `latents-<first seed>-<last seed>.safetensors` (seeds, labels, latents; config)."""
    import json

    from safetensors.torch import save_file

    from bench.config import to_dict

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"latents-{batch.seeds[0]:06d}-{batch.seeds[-1]:06d}.safetensors"
    tensors = {"latents": batch.latents.contiguous(), "seeds": torch.tensor(batch.seeds, dtype=torch.long)}
    if batch.labels is not None:
        tensors["labels"] = batch.labels
    metadata = {"config": json.dumps(to_dict(cfg)), "nfe": str(batch.nfe)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
