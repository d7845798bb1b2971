"""The real images' Inception features for the mini benchmark: one safetensors file, checked where it is used.

`export_reference_features` (mini-prepare --features) packs the float32 features of the prepared real images with
their data set, resolution, backend and source hash, after checking that they reproduce the cached FID reference
statistics. `load_reference` reads them on the scoring device and refuses features of other images than the
carried latents. FID statistics are formed from these features (float64 mean and unbiased covariance).
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


def features_path(folder: Path, dataset: str, res: int, backend: str = "tf") -> Path:
    return Path(folder) / f"{dataset}{res}-{backend}-features.safetensors"


def export_reference_features(npy: Path, ref_npz: Path, out: Path) -> Path:
    """Pack `npy` (float32 [M, 2048]) with the metadata of the reference statistics it must reproduce."""
    from safetensors.torch import save_file

    from bench.metrics.fid import FeatureStats, load_stats

    feats = np.load(npy)
    ref = load_stats(ref_npz)
    mu, _ = FeatureStats.of(feats.astype(np.float64)).mean_cov()
    if len(feats) != ref.n or not np.allclose(mu, ref.mu, atol=STATS_ATOL):
        raise BenchError(f"Features '{npy}' do not reproduce the reference statistics '{ref_npz}'.")
    meta = {k: str(ref.meta.get(k, "")) for k in ("dataset", "res", "backend", "source_hash", "inception_sha256")}
    meta.update(format=FEATURES_FORMAT, count=str(len(feats)))
    tensors = {"features": torch.from_numpy(feats.astype(np.float32))}
    return atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_reference(path: Path, carry: Carry, device: torch.device) -> Reference:
    """Features on `device` with their statistics; refuses other images, resolutions or Inception weights."""
    from safetensors import safe_open

    from bench.metrics.fid import FeatureStats
    from bench.metrics.inception import FID_INCEPTION_SHA256

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"Real-image features '{path}' do not exist; run `bench reproduce mini-prepare --features`.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            feats = f.get_tensor("features")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise BenchError(f"Real-image features '{path}' cannot be read ({exc}).") from None
    if meta.get("format") != FEATURES_FORMAT:
        raise BenchError(f"'{path}' is not a reference-features file (format {FEATURES_FORMAT}).")
    m = carry.manifest
    if meta.get("source_hash") != m["source_hash"] or (meta.get("dataset"), meta.get("res")) != (
        m["dataset"],
        str(m["res"]),
    ):
        raise BenchError(
            f"Features '{path}' come from other images than the carried latents ({m['dataset']}, "
            f"{m['res']} px); rerun `bench reproduce mini-prepare --features` on the same data."
        )
    if meta.get("inception_sha256") != FID_INCEPTION_SHA256:
        raise BenchError(f"Features '{path}' were computed with other Inception weights.")
    mu, sigma = FeatureStats.of(feats.double().numpy()).mean_cov()
    meta["sha256"] = sha256_file(path)
    return Reference(
        feats.float().to(device), torch.from_numpy(mu).to(device), torch.from_numpy(sigma).to(device), meta
    )
