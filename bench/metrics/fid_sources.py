"""Image sources for FID: a model by seed (streamed, nothing on disk), a folder of PNGs, saved latents (decoded
here) or saved Inception features, so that sampling on a GPU and scoring elsewhere is possible.

Image sources yield quantised uint8 batches [B, H, W, 3] (bench.sample.quantize, applied exactly once).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.metrics.inception import FEATURE_DIM


def model_batches(
    model: object,
    seeds: list[int],
    spec: object,
    autoencoder: object,
    batch_size: int,
    precision: str,
    nfe: list[int],
    fast: str = "eager",
) -> Iterator[Tensor]:
    """uint8 images of `seeds` generated and decoded batch by batch (per-sample seeds: batch size does not matter)."""
    from bench.sample import generate

    if autoencoder is None:
        raise BenchError("FID from a model needs its autoencoder to decode the samples.")
    for batch in generate(model, seeds, spec, batch_size, precision, autoencoder, fast=fast):
        nfe.append(batch.nfe)
        yield batch.images


def folder_batches(folder: Path, count: int, batch_size: int) -> Iterator[Tensor]:
    """The first `count` PNG files of `folder` (sorted by name) as uint8 batches."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"Sample folder '{folder}' does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if len(files) < count:
        raise BenchError(f"Folder '{folder}' holds {len(files)} PNG files; the protocol needs {count}.")
    shape = None
    for start in range(0, count, batch_size):
        arrays = []
        for path in files[start : min(start + batch_size, count)]:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if shape is not None and arr.shape != shape:
                raise BenchError(
                    f"Image '{path.name}' is {arr.shape[1]}x{arr.shape[0]}, unlike the others in '{folder}'."
                )
            shape = arr.shape
            arrays.append(arr)
        yield torch.from_numpy(np.stack(arrays))


def load_latents(path: Path) -> Tensor:
    """Latents [N, C, h, w] from .npy / .pt / .safetensors, or a folder of `bench sample --latents` files (by seed)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("latents-*.safetensors"))
        if not files:
            raise BenchError(f"Folder '{path}' holds no latents-*.safetensors files.")
        parts = [load_file(str(f)) for f in files]
        latents = torch.cat([p["latents"] for p in parts])
        if all("seeds" in p for p in parts):
            latents = latents[torch.argsort(torch.cat([p["seeds"] for p in parts]))]
        return latents.float()
    if not path.is_file():
        raise BenchError(f"Latents file '{path}' does not exist.")
    if path.suffix == ".npy":
        latents = torch.from_numpy(np.load(path))
    elif path.suffix == ".safetensors":
        latents = load_file(str(path))["latents"]
    elif path.suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        latents = obj["latents"] if isinstance(obj, dict) else obj
    else:
        raise BenchError(f"Latents file '{path}' must be .npy, .pt or .safetensors.")
    if latents.dim() != 4:
        raise BenchError(f"Latents in '{path}' must be [N, C, h, w], got {list(latents.shape)}.")
    return latents.float()


def latent_batches(
    latents: Tensor, autoencoder: object, count: int, batch_size: int, device: torch.device
) -> Iterator[Tensor]:
    """Decode the first `count` latents here and quantise them once."""
    from bench.sample import quantize

    if len(latents) < count:
        raise BenchError(f"There are {len(latents)} latents; the protocol needs {count}.")
    for start in range(0, count, batch_size):
        z = latents[start : min(start + batch_size, count)].to(device)
        with torch.inference_mode():
            yield quantize(autoencoder.decode(z)).cpu()


def load_features(path: Path) -> np.ndarray:
    """Inception features [N, 2048] saved as .npy (or .npz with key 'features')."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"Features file '{path}' does not exist.")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                features = np.asarray(data["features"])
        else:
            features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"Features file '{path}' cannot be read ({exc}).") from None
    if features.ndim != 2 or features.shape[1] != FEATURE_DIM:
        raise BenchError(f"Features in '{path}' must be [N, {FEATURE_DIM}], got {list(features.shape)}.")
    return features
