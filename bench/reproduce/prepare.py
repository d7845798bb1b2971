"""`bench reproduce mini-prepare` (CPU): the carry folder for the GPU and the cached FID reference statistics.

The carry folder holds the data set's latents as one file (bench.datasets.carried), a copy of the autoencoder's
weights (TAESD is 5 MB) so the GPU run can draw a grid, and carry.json. Reference statistics stay in the cache
(BENCH_CACHE_DIR/fid-refs); mini-score checks they come from the same images as the latents.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from bench.config import DataConfig
from bench.errors import BenchError
from bench.reproduce.mini import CARRY_FORMAT, CARRY_MANIFEST, FORMAT_VERSION, MAX_CARRY_BYTES, write_json_atomic


def copy_weights(name: str, autoencoder_path: str, dest: Path) -> str:
    """Copy the autoencoder's diffusers folder (config.json and weights) to `dest`, atomically; returns its hash."""
    from bench.autoencoders import WEIGHT_SUFFIXES, get_spec, resolve_weights, weights_hash

    src = resolve_weights(get_spec(name), autoencoder_path)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.endswith(WEIGHT_SUFFIXES)):
            shutil.copyfile(f, tmp / f.name)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return weights_hash(dest)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def prepare_mini(
    out: Path,
    cfg: DataConfig,
    backends: list[str],
    device: torch.device,
    ref_batch: int = 100,
    ref_stats: bool = True,
    progress: bool = True,
) -> dict:
    """Prepare images and latents (reused when current), export the carry folder, cache reference statistics."""
    from bench.data import prepare, prepared_meta
    from bench.datasets.cache import latents_stem, read_json
    from bench.datasets.carried import carried_name, export_carried
    from bench.paths import cache_dir, data_root
    from bench.runtime import git_state

    root, cache = data_root(), cache_dir()
    folder = prepare(cfg, root, cache, device=device, progress=progress)
    meta = prepared_meta(folder) or {}
    stem, digest = latents_stem(cfg)
    marker = read_json(folder / f"{stem}.json")
    if marker is None or not meta:
        raise BenchError(f"Preparation of '{cfg.dataset}' at {cfg.res} px left no latents marker in '{folder}'.")
    out.mkdir(parents=True, exist_ok=True)
    latents = export_carried(folder, meta, marker, cfg, out / carried_name(cfg))
    copied = copy_weights(cfg.autoencoder, cfg.autoencoder_path, out / cfg.autoencoder)
    if copied != digest:
        raise BenchError(f"The copied weights in '{out / cfg.autoencoder}' hash differently from the source.")
    manifest = {
        "format": CARRY_FORMAT,
        "version": FORMAT_VERSION,
        "dataset": cfg.dataset,
        "res": cfg.res,
        "autoencoder": cfg.autoencoder,
        "latents": latents.name,
        "weights": cfg.autoencoder,
        "weights_hash": digest,
        "source_hash": meta["source_hash"],
        "source": meta.get("source", ""),
        "count": meta["count"],
        "flip": cfg.flip,
        **({"class_names": meta["class_names"]} if meta.get("class_names") else {}),  # labels carried beside
        **({"class_titles": meta["class_titles"]} if meta.get("class_titles") else {}),  # grid labels
        "git": git_state(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ref_stats": _reference(cfg, backends, device, ref_batch, meta["source_hash"], progress) if ref_stats else {},
    }
    write_json_atomic(out / CARRY_MANIFEST, manifest)
    manifest["bytes"] = folder_bytes(out)
    return manifest


def oversize_note(manifest: dict, out: Path) -> str | None:
    """What to do with a carry folder larger than one GPU command carries. It is complete and stays, and the features
    of --features still follow (a refusal here came after the encoding, the long part, and left the features
    undone): its latents file travels in parts over several commands and is joined on the GPU machine."""
    if manifest["bytes"] <= MAX_CARRY_BYTES:
        return None
    parts = -(-manifest["bytes"] // (MAX_CARRY_BYTES // 2))  # parts of at most half a command, beside the tree
    latents = out / manifest["latents"]
    return (
        f"The carry folder is {manifest['bytes'] / 2**20:.1f} MiB, over the {MAX_CARRY_BYTES // 2**20} MiB one GPU "
        f"command carries: send '{latents.name}' in parts (`split -n {parts} -d {latents}`), one part per command, "
        "and join them on the GPU machine with `cat` (README, 256 px)."
    )


def _reference(
    cfg: DataConfig, backends: list[str], device: torch.device, batch: int, source_hash: str, progress: bool
) -> dict:
    """Reference statistics per backend (computed once, cached), checked to come from the same images."""
    from bench.metrics.fid import load_stats, reference_stats
    from bench.paths import cache_dir, data_root

    paths = reference_stats(
        cfg.dataset, cfg.res, backends, device, batch, data_root(), cache_dir(), cfg.path, progress=progress
    )
    out = {}
    for backend, path in paths.items():
        ref = load_stats(path)
        if ref.meta.get("source_hash") != source_hash:
            raise BenchError(f"Reference statistics '{path}' come from other images than the carried latents.")
        out[backend] = {"path": str(path), "n": ref.n, "source_hash": source_hash}
    return out


def prepare_features(
    cfg: DataConfig, folder: Path, device: torch.device, batch: int, progress: bool = True, backend: str = "tf"
) -> Path:
    """The real images' features of one FID backend as FOLDER/<dataset><res>-<backend>-features.safetensors
    (bench.reproduce.reference): tf for `mini --real-features`, clean for `--real-features-clean`.

    Features already saved beside (PREFIX-<backend>.npy) are reused when they reproduce the cached reference
    statistics of that backend; otherwise they are computed again (with the statistics).
    """
    from bench.metrics.fid import ref_stats_path, reference_stats
    from bench.paths import cache_dir, data_root
    from bench.reproduce.reference import export_reference_features, features_path

    prefix = Path(folder) / f"{cfg.dataset}{cfg.res}"
    npy, out = Path(f"{prefix}-{backend}.npy"), features_path(folder, cfg.dataset, cfg.res, backend)
    ref = ref_stats_path(cfg.dataset, cfg.res, backend, cache_dir())
    if npy.is_file() and ref.is_file():
        try:
            return export_reference_features(npy, ref, out, *prepared_labels(cfg, progress))
        except BenchError:
            pass  # stale features: compute them again below
    reference_stats(
        cfg.dataset, cfg.res, [backend], device, batch, data_root(), cache_dir(), cfg.path, progress, prefix
    )
    return export_reference_features(npy, ref, out, *prepared_labels(cfg, progress))


def prepared_labels(cfg: DataConfig, progress: bool = False) -> tuple[np.ndarray | None, list[str]]:
    """(class ids of the prepared images in their order, class names); (None, []) for a data set without classes."""
    from bench.data import load_prepared_images, make_source
    from bench.paths import cache_dir, data_root

    plain = dataclasses.replace(cfg, autoencoder="pixel", num_classes=0, flip=False)  # reference_stats' images
    names = make_source(plain, data_root()).class_names
    if not names:
        return None, []
    labelled = dataclasses.replace(plain, num_classes=len(names))
    _, labels, _ = load_prepared_images(labelled, data_root(), cache_dir(), progress=progress)
    return np.asarray(labels, dtype=np.int64), list(names)


def prepare_split_features(
    cfg: DataConfig, split: str, folder: Path, device: torch.device, batch: int, progress: bool = True
) -> Path:
    """Labelled tf features of another split (Imagenette's val images, for the probe's accuracy) as
    FOLDER/<dataset><res>-<split>-tf-features.safetensors; the images are verified and prepared like the train split.
    """
    from bench.data import load_prepared_images
    from bench.metrics.fid import compute_stats, image_batches
    from bench.metrics.inception import FID_INCEPTION_SHA256
    from bench.paths import cache_dir, data_root
    from bench.reproduce.reference import features_path, write_features

    split_cfg = dataclasses.replace(cfg, split=split)
    if split_cfg == cfg:
        raise BenchError(f"--val-split '{split}' is the split the latents come from; name a held-out split.")
    labels, names = prepared_labels(split_cfg, progress)
    if labels is None:
        raise BenchError(f"Data set '{cfg.dataset}' has no classes: its '{split}' split cannot test a class probe.")
    plain = dataclasses.replace(split_cfg, autoencoder="pixel", num_classes=0, flip=False)
    images, _, meta = load_prepared_images(plain, data_root(), cache_dir(), progress=progress)
    _, feats = compute_stats(image_batches(images, batch), ["tf"], device, cache_dir(), True, progress)
    info = {"dataset": cfg.dataset, "res": cfg.res, "backend": "tf", "split": split}
    info |= {"source_hash": meta["source_hash"], "inception_sha256": FID_INCEPTION_SHA256}
    out = features_path(folder, cfg.dataset, cfg.res, split=split)
    return write_features(out, feats["tf"], info, labels, names)
