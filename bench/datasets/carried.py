"""Carried latents: a prepared data set's cached latents as ONE self-describing safetensors file.

GPU machines may receive no images (DESIGN.md: data travels as cached latents), so `bench reproduce mini-prepare`
exports the latent cache of bench.datasets.cache into `<dataset><res>-<autoencoder>.safetensors`:
  tensors   latents [N, C, h, w] and flipped [N, C, h, w] (the mirrored images' latents) in float16, labels [N] int64
            when the data set has classes;
  metadata  format and version, dataset, res, autoencoder and its full weights hash, source hash (the prepared
            images' fingerprint), count, class names, skipped files, how the latents were encoded.
Training reads it wherever a data folder is expected: `data.path=<file>.safetensors` (bench.data.load_training_data).
The config must name the same data set, resolution and autoencoder; when the autoencoder weights are given
explicitly (`data.autoencoder_path`), their hash must equal the one the latents were encoded with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.config import DataConfig
from bench.datasets.latents import LatentDataset
from bench.errors import BenchError
from bench.io import atomic_write

CARRIED_SUFFIX = ".safetensors"
CARRIED_FORMAT = "bench-latents"
CARRIED_VERSION = "1"
_JSON_KEYS = ("class_names", "skipped", "shape")  # metadata values stored as JSON text (safetensors: str -> str)


def carried_name(cfg: DataConfig) -> str:
    return f"{cfg.dataset}{cfg.res}-{cfg.autoencoder}{CARRIED_SUFFIX}"


def is_carried(path: str) -> bool:
    """True when data.path names a carried latents file rather than a data folder."""
    return bool(path) and path.endswith(CARRIED_SUFFIX)


def export_carried(folder: Path, meta: dict, marker: dict, cfg: DataConfig, out: Path) -> Path:
    """Write the latent cache of a prepared folder (its meta.json and latents marker) as one file, atomically."""
    from safetensors.torch import save_file

    tensors = {"latents": torch.from_numpy(np.load(folder / marker["files"]["latents"]))}
    if "flipped" in marker["files"]:
        tensors["flipped"] = torch.from_numpy(np.load(folder / marker["files"]["flipped"]))
    if (folder / "labels.npy").is_file():
        tensors["labels"] = torch.from_numpy(np.load(folder / "labels.npy").astype(np.int64))
    info = {
        "format": CARRIED_FORMAT,
        "version": CARRIED_VERSION,
        "dataset": cfg.dataset,
        "res": str(cfg.res),
        "autoencoder": cfg.autoencoder,
        "weights_hash": marker["weights_hash"],
        "source_hash": meta["source_hash"],
        "source": str(meta.get("source", "")),
        "count": str(int(tensors["latents"].shape[0])),
        "class_names": json.dumps(meta.get("class_names", [])),
        "skipped": json.dumps(meta.get("skipped", [])),
        "shape": json.dumps(list(tensors["latents"].shape)),
        "encode": str(marker.get("encode", "")),
        "dtype": str(marker.get("dtype", "")),
    }
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(out, lambda tmp: save_file(contiguous, str(tmp), metadata=info))  # 0644: travels elsewhere


def read_carried_meta(path: Path) -> dict:
    """The metadata of a carried file (JSON values decoded), checked to be one; BenchError otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"Carried latents file '{path}' does not exist; run `bench reproduce mini-prepare` first.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise BenchError(f"Carried latents file '{path}' cannot be read ({exc}).") from None
    if raw.get("format") != CARRIED_FORMAT or raw.get("version") != CARRIED_VERSION:
        raise BenchError(f"'{path}' is not a carried latents file of format {CARRIED_FORMAT} v{CARRIED_VERSION}.")
    meta: dict = {k: json.loads(v) if k in _JSON_KEYS else v for k, v in raw.items()}
    meta["res"], meta["count"] = int(meta["res"]), int(meta["count"])
    return meta


def _check_matches(cfg: DataConfig, meta: dict, path: Path) -> None:
    for key in ("dataset", "res", "autoencoder"):
        if getattr(cfg, key) != meta[key]:
            raise BenchError(
                f"Carried latents '{path}' hold {key} {meta[key]!r} but the config asks for {getattr(cfg, key)!r}."
            )
    if cfg.num_classes and cfg.num_classes != len(meta["class_names"]):
        raise BenchError(
            f"Carried latents '{path}' have {len(meta['class_names'])} classes, not data.num_classes = "
            f"{cfg.num_classes}."
        )
    if cfg.autoencoder_path:  # weights named explicitly: they must be the ones that encoded the latents
        from bench.autoencoders import get_spec, resolve_weights, weights_hash

        digest = weights_hash(resolve_weights(get_spec(cfg.autoencoder), cfg.autoencoder_path))
        if digest != meta["weights_hash"]:
            raise BenchError(
                f"Autoencoder weights '{cfg.autoencoder_path}' (sha256 {digest[:12]}) are not the ones that encoded "
                f"'{path}' ({meta['weights_hash'][:12]})."
            )


def load_carried(cfg: DataConfig, path: Path, device: torch.device) -> LatentDataset:
    """The training set from a carried file, on `device` (float32, as from the folder cache)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_carried_meta(path)
    _check_matches(cfg, meta, path)
    tensors = load_file(str(path))
    latents = tensors["latents"].float().to(device)
    flipped = tensors["flipped"].float().to(device) if cfg.flip and "flipped" in tensors else None
    if cfg.flip and flipped is None and cfg.autoencoder != "pixel":
        raise BenchError(f"Carried latents '{path}' hold no mirrored copies; set data.flip=false or re-export.")
    labels = None
    if cfg.num_classes:
        if "labels" not in tensors:
            raise BenchError(f"Carried latents '{path}' hold no class labels; set data.num_classes=0.")
        labels = tensors["labels"].to(device)
    info = {
        "dataset": meta["dataset"],
        "res": meta["res"],
        "autoencoder": meta["autoencoder"],
        "weights_hash": meta["weights_hash"],
        "count": int(latents.shape[0]),
        "source_hash": meta["source_hash"],
        "source": meta["source"],
        "folder": str(path),
        "class_names": meta["class_names"] if cfg.num_classes else [],
        "skipped": meta["skipped"],
    }
    return LatentDataset(latents, labels, cfg.num_classes, info, flipped, cfg.flip)
