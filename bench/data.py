"""Data sets for training and evaluation: preparation (verify, crop, cache) and the in-memory training set.

Sources and their layouts are described in bench.datasets.sources, the cache layout in bench.datasets.cache; a
carried latents file (`data.path=<file>.safetensors`, bench.datasets.carried) stands in for a data folder.
Pixel values map to [-1, 1] as x = u / 127.5 - 1, the inverse of the harness's quantisation floor(127.5 x + 128).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.autoencoders import get_spec, latent_shape, load_autoencoder, resolve_weights
from bench.config import DataConfig
from bench.datasets.cache import META, encode_images, prepare_images, prepare_latents, read_json
from bench.datasets.carried import is_carried, load_carried
from bench.datasets.latents import LatentDataset
from bench.datasets.sources import ClassFolderSource, FolderSource, Source, SyntheticSource, resolve_data_path
from bench.errors import BenchError

__all__ = [
    "ClassFolderSource",
    "FolderSource",
    "LatentDataset",
    "SyntheticSource",
    "load_prepared_images",
    "load_training_data",
    "make_source",
    "prepare",
    "resolve_data_path",
]

TO_DEVICE_ROWS = 4096  # rows converted per step when moving uint8 images to a float tensor


def make_source(cfg: DataConfig, data_root: Path | None) -> Source:
    """The registry's source class for cfg.dataset (unknown names get a close-match hint)."""
    from bench.registry import DATASETS

    if cfg.res <= 0:
        raise BenchError(f"data.res must be a positive resolution, got {cfg.res}.")
    if cfg.num_classes < 0:
        raise BenchError(f"data.num_classes must be 0 (unconditional) or positive, got {cfg.num_classes}.")
    return DATASETS.load(cfg.dataset)(cfg, data_root)


def _prepare(
    cfg: DataConfig,
    data_root: Path | None,
    cache_dir: Path,
    skip_bad: bool,
    encode_latents: bool,
    device: torch.device | str,
    progress: bool,
) -> tuple[Path, dict, dict | None]:
    """(prepared folder, its meta, latents marker or None)."""
    encode = encode_latents and get_spec(cfg.autoencoder).kind != "identity"
    if encode:  # fail on geometry or missing weights before any long work
        latent_shape(cfg.autoencoder, cfg.res)
        resolve_weights(get_spec(cfg.autoencoder), cfg.autoencoder_path)
    folder, meta = prepare_images(make_source(cfg, data_root), Path(cache_dir), skip_bad, progress)
    marker = prepare_latents(folder, meta, cfg, device, progress) if encode else None
    return folder, meta, marker


def prepare(
    cfg: DataConfig,
    data_root: Path | None,
    cache_dir: Path,
    skip_bad: bool = False,
    encode_latents: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Verify and prepare the images (and cache latents for a non-pixel autoencoder); returns the folder.

    Idempotent: a folder whose meta matches the source (files, sizes, mtimes, processing) is reused. Unreadable or
    truncated files are all named in one BenchError and nothing is written, unless `skip_bad` (listed in meta).
    """
    return _prepare(cfg, data_root, cache_dir, skip_bad, encode_latents, device, progress)[0]


def _labels(cfg: DataConfig, folder: Path) -> np.ndarray | None:
    """Class ids when the run is class-conditional (cfg.num_classes > 0); dropped when unconditional."""
    path = folder / "labels.npy"
    if cfg.num_classes == 0:
        return None
    if not path.is_file():
        raise BenchError(f"Data set '{cfg.dataset}' has no class labels; set data.num_classes=0.")
    return np.load(path)


def load_prepared_images(
    cfg: DataConfig, data_root: Path | None, cache_dir: Path, progress: bool = True
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(uint8 [N, 3, R, R] memmap, int64 labels or None, meta); prepares the images if needed."""
    folder, meta, _ = _prepare(cfg, data_root, cache_dir, False, False, "cpu", progress)
    return np.load(folder / "images.npy", mmap_mode="r"), _labels(cfg, folder), meta


def _pixels_to_tensor(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 [N, 3, R, R] -> float32 in [-1, 1] on `device`, converted in chunks (no full float copy on the host)."""
    out = torch.empty(images.shape, dtype=torch.float32, device=device)
    for start in range(0, len(images), TO_DEVICE_ROWS):
        chunk = torch.from_numpy(np.array(images[start : start + TO_DEVICE_ROWS])).to(device)
        out[start : start + len(chunk)] = chunk.float().div_(127.5).sub_(1.0)
    return out


def _load_latent_file(path: Path, device: torch.device) -> Tensor:
    return torch.from_numpy(np.load(path).astype(np.float32)).to(device)


def load_training_data(
    cfg: DataConfig, data_root: Path | None, cache_dir: Path, device: torch.device | str = "cpu", progress: bool = True
) -> LatentDataset:
    """The training set on `device`; prepares images and (cfg.latent_cache) caches latents when needed."""
    device = torch.device(device)
    if is_carried(cfg.path):  # data.path names a carried latents file (bench.datasets.carried): no images needed
        return load_carried(cfg, Path(cfg.path), device)
    spec = get_spec(cfg.autoencoder)
    latent_shape(cfg.autoencoder, cfg.res)
    folder, meta, marker = _prepare(cfg, data_root, cache_dir, False, cfg.latent_cache, device, progress)
    labels_np = _labels(cfg, folder)
    flipped = None
    if spec.kind == "identity":
        latents, digest = _pixels_to_tensor(np.load(folder / "images.npy", mmap_mode="r"), device), "identity"
    elif marker is not None:
        latents = _load_latent_file(folder / marker["files"]["latents"], device)
        if cfg.flip:
            flipped = _load_latent_file(folder / marker["files"]["flipped"], device)
        digest = marker["weights_hash"]
    else:  # latent_cache off: encode in memory every time
        images = np.load(folder / "images.npy", mmap_mode="r")
        ae = load_autoencoder(cfg.autoencoder, device, cfg.autoencoder_path)
        shape = (len(images), *latent_shape(cfg.autoencoder, cfg.res))
        latents = torch.empty(shape, dtype=torch.float32, device=device)
        encode_images(ae, images, False, device, latents, progress)
        if cfg.flip:
            flipped = torch.empty_like(latents)
            encode_images(ae, images, True, device, flipped, progress)
        digest = ae.weights_hash
    info = {
        "dataset": cfg.dataset,
        "res": cfg.res,
        "autoencoder": cfg.autoencoder,
        "weights_hash": digest,
        "count": int(latents.shape[0]),
        "source_hash": meta["source_hash"],
        "source": meta["source"],
        "folder": str(folder),
        "class_names": meta["class_names"] if cfg.num_classes else [],
        "skipped": meta["skipped"],
    }
    labels = torch.from_numpy(labels_np).to(device) if labels_np is not None else None
    return LatentDataset(latents, labels, cfg.num_classes, info, flipped, cfg.flip)


def prepared_meta(folder: Path) -> dict | None:
    """meta.json of a prepared folder (None if absent or unreadable)."""
    return read_json(Path(folder) / META)


def describe_data(cfg: DataConfig, data_root: Path | None, cache_dir: Path) -> tuple[str, str]:
    """(data line, cache line) for a command's header, without preparing anything.

    Also validates: a missing data folder or an empty one fails here, before any work. The image cache holds
    uint8 [N, 3, R, R]; a non-pixel autoencoder's latents are encoded once into the same folder.
    """
    if is_carried(cfg.path):
        return f"carried latents {cfg.path} ({cfg.dataset} {cfg.res} px, {cfg.autoencoder})", "none (carried file)"
    source = make_source(cfg, data_root)
    where = f"in {source.root}" if source.root is not None else "generated by the suite"
    data = f"{cfg.dataset}: {source.count} images {where}, prepared at {cfg.res} px"
    folder = Path(cache_dir) / source.cache_name()
    meta = read_json(folder / META)
    prepared = bool(meta) and meta.get("source_hash") == source.fingerprint() and (folder / "images.npy").is_file()
    size = source.count * 3 * cfg.res * cfg.res
    size_text = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    cache = f"{folder} ({'images cached' if prepared else f'to prepare: {size_text} of images'}"
    if get_spec(cfg.autoencoder).kind != "identity":
        from bench.datasets.cache import latents_stem

        marker = read_json(folder / f"{latents_stem(cfg)[0]}.json") if prepared and cfg.latent_cache else None
        if not cfg.latent_cache:
            cache += f"; latents encoded with {cfg.autoencoder} in memory at every start"
        elif marker:
            cache += f"; {cfg.autoencoder} latents cached"
        else:
            flips = " and their mirror images" if cfg.flip else ""
            cache += f"; {cfg.autoencoder} latents of {source.count} images{flips} to encode once"
    return data, cache + ")"
