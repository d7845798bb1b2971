"""Fréchet Inception Distance through torch-fidelity (TF-exact, primary) and clean-fid (second column), offline.

Both backends use the verified FID Inception network of bench.metrics.inception. Images reach this module already
quantised once (uint8 [B, H, W, 3], bench.sample.quantize); each backend resizes to 299 px exactly as the library
does (torch-fidelity: TF1 bilinear inside its extractor; clean-fid: PIL bicubic on float images, its `clean` mode).
Statistics are float64 (streaming mean and unbiased covariance) so they do not depend on the batch size.
Image sources (a model by seed, PNG folders, saved latents, saved features) are in bench.metrics.fid_sources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.io import atomic_path, atomic_write
from bench.metrics.inception import FEATURE_DIM, FID_INCEPTION_SHA256
from bench.metrics.protocols import FID_BACKENDS, FIDProtocol, check_backend

SQRTM_EPS = 1e-6  # diagonal offset when sqrtm of a near-singular product fails (pytorch-fid / clean-fid)
IMAG_ATOL = 1e-3  # largest tolerated imaginary part on the diagonal of sqrtm (pytorch-fid / clean-fid)

Extractor = Callable[[Tensor], np.ndarray]  # uint8 [B, H, W, 3] -> float64 [B, 2048]


# ----------------------------------------------------------------------------------------------------------------
# statistics


class FeatureStats:
    """Streaming float64 mean and covariance of feature rows, shifted by the first row for accuracy."""

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        self.dim, self.n = dim, 0
        self.shift: np.ndarray | None = None
        self.s1 = np.zeros(dim, dtype=np.float64)
        self.s2 = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise BenchError(f"Features must be [N, {self.dim}], got {list(f.shape)}.")
        if not np.isfinite(f).all():
            raise BenchError("Inception features contain NaN or infinite values.")
        if len(f) == 0:
            return
        if self.shift is None:
            self.shift = f[0].copy()  # the first sample, whatever the batch size
        y = f - self.shift
        self.n += len(f)
        self.s1 += y.sum(axis=0)
        self.s2 += y.T @ y

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2 or self.shift is None:
            raise BenchError(f"FID statistics need at least 2 samples, got {self.n}.")
        mu = self.shift + self.s1 / self.n
        cov = (self.s2 - np.outer(self.s1, self.s1) / self.n) / (self.n - 1)
        return mu, (cov + cov.T) / 2

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        stats = cls(np.asarray(features).shape[1])
        stats.update(features)
        return stats


@dataclass
class RefStats:
    """Reference statistics (.npz): mean, covariance, sample count and where they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    meta: dict = field(default_factory=dict)  # backend, library, mode, dataset, res, source_hash, inception_sha256

    @property
    def backend(self) -> str:
        return str(self.meta.get("backend", ""))


def psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition (negative rounding clipped to 0)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_from_root(root1: Tensor, s2: Tensor) -> Tensor:
    """Tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) given root1 = S1^1/2 (real arithmetic, eigh only)."""
    m = root1 @ s2 @ root1
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) for symmetric PSD S1, S2, in float64 (torch's LAPACK eigh on the CPU)."""
    a, b = torch.from_numpy(np.ascontiguousarray(s1)), torch.from_numpy(np.ascontiguousarray(s2))
    return float(trace_sqrt_from_root(psd_sqrt(a), b))


def _trace_sqrtm(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr sqrtm(S1 S2) by scipy (Schur), with pytorch-fid's offset retry and imaginary-part check."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise BenchError(f"sqrtm of the covariance product has an imaginary part {np.abs(covmean.imag).max():.3g}.")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh"
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) in float64.

    method "eigh" (default): the eigen-decomposition form, exact for covariance matrices and several times faster
    than "sqrtm" (scipy's Schur square root as in pytorch-fid / clean-fid); the two agree to ~1e-10 relative.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise BenchError(
            f"FID statistics disagree in shape: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}."
        )
    if method not in ("eigh", "sqrtm"):
        raise BenchError(f"Unknown Fréchet distance method '{method}'; choose eigh or sqrtm.")
    tr_covmean = _trace_sqrt_product(s1, s2) if method == "eigh" else _trace_sqrtm(s1, s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_stats(stats: FeatureStats, ref: RefStats) -> float:
    mu, sigma = stats.mean_cov()
    return frechet_distance(mu, sigma, ref.mu, ref.sigma)


def score(
    stats: dict[str, FeatureStats], ref: str, cache_dir: Path | None = None
) -> list[tuple[FIDProtocol, float, dict]]:
    """FID per backend against `ref` (a name like 'celebahq128' or an .npz): (protocol, value, reference meta)."""
    out = []
    for backend, s in stats.items():
        r = resolve_ref(ref, backend, cache_dir)
        dataset, res = r.meta.get("dataset"), r.meta.get("res")
        if not dataset or not res:
            raise BenchError(f"Reference statistics '{ref}' do not name their data set and resolution.")
        out.append((FIDProtocol(backend, s.n, str(dataset), int(res)), fid_from_stats(s, r), {**r.meta, "n": r.n}))
    return out


# ----------------------------------------------------------------------------------------------------------------
# feature extractors


def _check_images(images: Tensor) -> Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise BenchError(f"FID expects quantised uint8 images [B, H, W, 3], got {images.dtype} {list(images.shape)}.")
    return images


def make_extractor(
    backend: str, device: torch.device | str = "cpu", cache_dir: Path | None = None, random_weights: bool = False
) -> Extractor:
    """Batched Inception features for one backend, resized to 299 px exactly as that library does.

    `random_weights` (tf only) measures throughput where the FID weights are absent; its features mean nothing.
    """
    from bench.metrics.inception import clean_extractor, tf_extractor

    if random_weights and check_backend(backend) != "tf":
        raise BenchError("Random Inception weights exist for the tf backend only.")
    if check_backend(backend) == "tf":
        net = tf_extractor(device, cache_dir, random_weights)

        def tf_features(images: Tensor) -> np.ndarray:
            # [B, H, W, 3] permuted is channels-last already, the layout the network runs in
            x = _check_images(images).permute(0, 3, 1, 2).to(device)
            with torch.inference_mode():
                return net(x)[0].double().cpu().numpy()

        return tf_features

    from cleanfid.resize import build_resizer

    resize, net_fn = build_resizer("clean"), clean_extractor(device)

    def clean_features(images: Tensor) -> np.ndarray:
        # clean-fid's resize, then the network as cleanfid.fid.get_batch_features calls it; that module itself is not
        # imported: it imports `requests` (its downloads), which the GPU machine lacks
        arr = np.stack([resize(img) for img in _check_images(images).numpy()])  # float32 [B, 299, 299, 3]
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            return net_fn(x.to(device)).double().cpu().numpy()

    return clean_features


def compute_stats(
    batches: Iterable[Tensor],
    backends: Iterable[str],
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    keep_features: bool = False,
    progress: bool = False,
) -> tuple[dict[str, FeatureStats], dict[str, np.ndarray]]:
    """One pass over uint8 image batches, features for every backend: (stats, features if kept) by backend."""
    from tqdm import tqdm

    names = [check_backend(b) for b in backends]
    extractors = {b: make_extractor(b, device, cache_dir) for b in names}
    stats = {b: FeatureStats() for b in names}
    kept: dict[str, list[np.ndarray]] = {b: [] for b in names}
    with tqdm(desc="FID features", unit="img", disable=not progress) as bar:
        for images in batches:
            for b in names:
                f = extractors[b](images)
                stats[b].update(f)
                if keep_features:
                    kept[b].append(f.astype(np.float32))
            bar.update(len(images))
    features = {b: np.concatenate(v) for b, v in kept.items() if v}
    return stats, features


def rebatch(arrays: Iterable[np.ndarray | Tensor], batch_size: int) -> Iterator[Tensor]:
    """Re-chunk image batches to `batch_size` rows (feature memory stays bounded on the GPU)."""
    pending: list[Tensor] = []
    count = 0
    for a in arrays:
        t = torch.as_tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a
        pending.append(t)
        count += len(t)
        while count >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending)


# ----------------------------------------------------------------------------------------------------------------
# reference statistics files


def save_stats(path: Path, stats: FeatureStats, meta: dict) -> Path:
    mu, sigma = stats.mean_cov()
    meta = {**meta, "inception_sha256": FID_INCEPTION_SHA256}
    arrays = {
        "mu": mu,
        "sigma": sigma,
        "n": np.array(stats.n),
        "protocol": np.array(json.dumps(meta, sort_keys=True)),
        "source_hash": np.array(str(meta.get("source_hash", ""))),
    }
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".tmp.npz")
    return Path(path)


def load_stats(path: Path) -> RefStats:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
            n = int(data["n"]) if "n" in data else 0
            meta = json.loads(str(data["protocol"])) if "protocol" in data else {}
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"FID statistics file '{path}' cannot be read ({exc}).") from None
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise BenchError(f"FID statistics file '{path}' holds mu {mu.shape} and sigma {sigma.shape}, not 2048-d.")
    return RefStats(mu, sigma, n, meta)


def ref_stats_path(dataset: str, res: int, backend: str, cache_dir: Path | None = None) -> Path:
    from bench.metrics.inception import _default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    return root / "fid-refs" / f"{dataset}{res}-{check_backend(backend)}.npz"


def resolve_ref(ref: str, backend: str, cache_dir: Path | None = None) -> RefStats:
    """`ref` is an .npz path or a reference name like 'celebahq128' (cached by `bench eval ref-stats`)."""
    path = Path(ref)
    if path.suffix != ".npz":
        import re

        m = re.fullmatch(r"([a-z_]+?)(\d+)", ref)
        if not m:
            raise BenchError(f"Reference '{ref}' is neither an .npz file nor a name like 'celebahq128'.")
        path = ref_stats_path(m[1], int(m[2]), backend, cache_dir)
        if not path.is_file():
            raise BenchError(
                f"No {backend} reference statistics for '{ref}'; run `bench eval ref-stats {m[1]} --res {m[2]}`."
            )
    if not path.is_file():
        raise BenchError(f"Reference statistics file '{path}' does not exist.")
    stats = load_stats(path)
    if stats.backend and stats.backend != backend:
        raise BenchError(f"Reference '{path}' was computed with backend '{stats.backend}', not '{backend}'.")
    if stats.meta.get("inception_sha256", FID_INCEPTION_SHA256) != FID_INCEPTION_SHA256:
        raise BenchError(f"Reference '{path}' was computed with other Inception weights.")
    return stats


def reference_stats(
    dataset: str,
    res: int,
    backends: Iterable[str] = tuple(FID_BACKENDS),
    device: torch.device | str = "cpu",
    batch_size: int = 100,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    data_path: str = "",
    progress: bool = True,
    save_features: Path | None = None,
) -> dict[str, Path]:
    """Reference .npz per backend from the prepared data set, computed once (again only if the source changed).

    `save_features` (a path prefix) also keeps the features as PREFIX-<backend>.npy, recomputing them if needed.
    """
    from bench.config import DataConfig
    from bench.data import load_prepared_images
    from bench.metrics.inception import _default_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    cfg = DataConfig(dataset=dataset, res=res, autoencoder="pixel", path=data_path, num_classes=0, flip=False)
    images, _, meta = load_prepared_images(cfg, data_root, cache, progress=progress)
    source_hash = str(meta.get("source_hash", ""))
    paths = {b: ref_stats_path(dataset, res, b, cache) for b in backends}
    todo = [b for b, p in paths.items() if save_features is not None or not _ref_is_current(p, source_hash)]
    if todo:
        batches = image_batches(images, batch_size)
        stats, features = compute_stats(batches, todo, device, cache, save_features is not None, progress)
        if save_features is not None:
            save_feature_files(features, save_features)
        for b in todo:
            lib, mode, _ = FID_BACKENDS[b]
            meta_out = {
                "backend": b,
                "library": lib,
                "mode": mode,
                "dataset": dataset,
                "res": res,
                "source_hash": source_hash,
                "count": len(images),
            }
            save_stats(paths[b], stats[b], meta_out)
    return paths


def image_batches(images: np.ndarray, batch_size: int) -> Iterator[Tensor]:
    """Prepared uint8 images [N, 3, R, R] (a memmap) as uint8 [B, R, R, 3] batches, each a writable copy."""
    for i in range(0, len(images), batch_size):
        yield torch.from_numpy(np.array(images[i : i + batch_size]).transpose(0, 2, 3, 1))


def _ref_is_current(path: Path, source_hash: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = load_stats(path).meta
    except BenchError:
        return False
    return meta.get("source_hash") == source_hash and meta.get("inception_sha256") == FID_INCEPTION_SHA256


def save_feature_files(feats: dict, prefix: Path) -> None:
    """Each backend's features as `<prefix>-<backend>.npy` (float32), written to a temporary file and renamed."""
    for backend, f in feats.items():
        path = Path(f"{prefix}-{backend}.npy")
        with atomic_path(path, suffix=".tmp.npy") as tmp:
            np.save(tmp, f.astype(np.float32))
        print(f"features {backend} {list(f.shape)} -> {path}")
