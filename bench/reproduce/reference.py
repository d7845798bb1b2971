"""The real images' Inception features for the mini benchmark: one safetensors file, checked where it is used.

`export_reference_features` (mini-prepare --features) packs the float32 features of the prepared real images with
their data set, resolution, backend and source hash, after checking that they reproduce the cached FID reference
statistics. `load_reference` reads them on the scoring device and refuses features of other images than the
carried latents. FID statistics are formed from these features (float64 mean and unbiased covariance).
A data set with classes also stores `labels` [M] (int64, the prepared images' order) and its class names, so the
class-accuracy probe (bench.reproduce.probe) trains on the same file; `load_split_features` reads another split's
file (Imagenette's val images: the probe's own accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.io import atomic_write
from bench.reproduce.mini import Carry, sha256_file

FEATURES_FORMAT = "bench-reference-features"
STATS_ATOL = 1e-4  # float32 features reproduce the float64 reference mean to ~1e-6; anything larger is other data


@dataclass
class Reference:
    features: Tensor  # [M, 2048] float32 on the scoring device
    mu: Tensor  # float64
    sigma: Tensor  # float64
    meta: dict  # dataset, res, backend, source_hash, inception_sha256, count, sha256 (of the file)
    labels: Tensor | None = None  # [M] int64 class ids on the scoring device (data sets with classes)

    @property
    def n(self) -> int:
        return len(self.features)

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def res(self) -> int:
        return int(self.meta["res"])

    def describe(self) -> dict:
        return {k: self.meta.get(k) for k in ("dataset", "res", "backend", "count", "source_hash", "sha256")}


def features_path(folder: Path, dataset: str, res: int, backend: str = "tf", split: str = "") -> Path:
    """FOLDER/<dataset><res>[-<split>]-<backend>-features.safetensors (no split: the training images)."""
    return Path(folder) / f"{dataset}{res}{f'-{split}' if split else ''}-{backend}-features.safetensors"


def write_features(out: Path, feats: np.ndarray, meta: dict, labels: np.ndarray | None, names: list[str]) -> Path:
    """The features file: float32 features (+ int64 labels and their class names), metadata as strings; atomic."""
    import json

    from safetensors.torch import save_file

    meta = {**{k: str(v) for k, v in meta.items()}, "format": FEATURES_FORMAT, "count": str(len(feats))}
    tensors = {"features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))}
    if labels is not None:
        if len(labels) != len(feats):
            raise BenchError(f"{len(labels)} class labels for {len(feats)} feature rows; nothing was written.")
        tensors["labels"] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        meta["class_names"] = json.dumps(list(names))
    return atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def export_reference_features(
    npy: Path, ref_npz: Path, out: Path, labels: np.ndarray | None = None, names: list[str] | None = None
) -> Path:
    """Pack `npy` (float32 [M, 2048]) with the metadata of the reference statistics it must reproduce."""
    from bench.metrics.fid import FeatureStats, load_stats

    feats = np.load(npy)
    ref = load_stats(ref_npz)
    mu, _ = FeatureStats.of(feats.astype(np.float64)).mean_cov()
    if len(feats) != ref.n or not np.allclose(mu, ref.mu, atol=STATS_ATOL):
        raise BenchError(f"Features '{npy}' do not reproduce the reference statistics '{ref_npz}'.")
    meta = {k: str(ref.meta.get(k, "")) for k in ("dataset", "res", "backend", "source_hash", "inception_sha256")}
    return write_features(out, feats, meta, labels, names or [])


def read_features_file(
    path: Path, what: str = "Real-image features", prepare: str = "--features"
) -> tuple[Tensor, Tensor | None, dict]:
    """(features, labels or None, metadata with class_names decoded) of a features file; BenchError if it is none."""
    import json

    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} '{path}' do not exist; run `bench reproduce mini-prepare {prepare}`.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            feats = f.get_tensor("features")
            labels = f.get_tensor("labels") if "labels" in f.keys() else None  # noqa: SIM118 (a safe_open handle, not a dict)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise BenchError(f"{what} '{path}' cannot be read ({exc}).") from None
    if meta.get("format") != FEATURES_FORMAT:
        raise BenchError(f"'{path}' is not a reference-features file (format {FEATURES_FORMAT}).")
    meta["class_names"] = json.loads(meta.get("class_names", "[]"))
    return feats, labels, meta


def load_reference(path: Path, carry: Carry, device: torch.device, backend: str = "tf") -> Reference:
    """Features on `device` with their statistics; refuses another backend's features (tf samples scored against
    clean-fid features would be a number of no protocol), other images, resolutions or Inception weights."""
    from bench.metrics.fid import FeatureStats
    from bench.metrics.inception import FID_INCEPTION_SHA256

    path = Path(path)
    prepare = "--features" if backend == "tf" else f"--features --backend {backend}"
    what = "Real-image features" if backend == "tf" else f"Real-image {backend} features"
    feats, labels, meta = read_features_file(path, what, prepare)
    if meta.get("backend") != backend:
        raise BenchError(
            f"Features '{path}' were computed with the {meta.get('backend') or 'unknown'} FID backend, not {backend}; "
            f"run `bench reproduce mini-prepare --features --backend {backend}`."
        )
    m = carry.manifest
    if meta.get("source_hash") != m["source_hash"] or (meta.get("dataset"), meta.get("res")) != (
        m["dataset"],
        str(m["res"]),
    ):
        raise BenchError(
            f"Features '{path}' come from other images than the carried latents ({m['dataset']}, "
            f"{m['res']} px); rerun `bench reproduce mini-prepare {prepare}` on the same data."
        )
    if meta.get("inception_sha256") != FID_INCEPTION_SHA256:
        raise BenchError(f"Features '{path}' were computed with other Inception weights.")
    mu, sigma = FeatureStats.of(feats.double().numpy()).mean_cov()
    meta["sha256"] = sha256_file(path)
    on_device = labels.to(device) if labels is not None else None
    return Reference(
        feats.float().to(device), torch.from_numpy(mu).to(device), torch.from_numpy(sigma).to(device), meta, on_device
    )


def load_split_features(path: Path, carry: Carry, device: torch.device) -> tuple[Tensor, Tensor, dict]:
    """(features, labels, metadata) of another split's labelled features (the probe's val images) on `device`;
    refuses files of another data set, resolution, class list or Inception network."""
    from bench.metrics.inception import FID_INCEPTION_SHA256

    feats, labels, meta = read_features_file(path, "Labelled features")
    m = carry.manifest
    if (meta.get("dataset"), meta.get("res")) != (m["dataset"], str(m["res"])) or labels is None:
        raise BenchError(f"'{path}' holds no labelled features of {m['dataset']} at {m['res']} px.")
    if meta["class_names"] != carry.class_names:
        raise BenchError(f"The classes of '{path}' are not the carried latents' classes.")
    if meta.get("inception_sha256") != FID_INCEPTION_SHA256:
        raise BenchError(f"Features '{path}' were computed with other Inception weights.")
    if meta.get("source_hash") == m["source_hash"]:
        raise BenchError(f"'{path}' holds features of the training images, not of a held-out split.")
    meta["sha256"] = sha256_file(path)
    return feats.float().to(device), labels.to(device), meta
