"""Sample-set metrics on Inception features beside FID: KID, precision/recall, memorisation and a bootstrap of FID.

All take generated features `fake` [N, D] and real features `real` [M, D] (torch tensors on any device) and work in
float64 where sums of many products are formed.
- KID: torch-fidelity's estimator (Binkowski et al. 2018): cubic polynomial kernel k(x, y) = (x.y / D + 1)^3,
  unbiased MMD^2 on `subsets` random subsets of `subset_size` (numpy RandomState(seed), as torch-fidelity draws
  them), mean and standard deviation over subsets. Computed here with torch, so it runs on the GPU.
- Precision and recall: Kynkaanniemi et al. 2019 with k = 3 nearest neighbours, through torch-fidelity itself.
- Memorisation: the fraction of samples whose nearest real image is closer than the `quantile` of the distances
  between real images and their nearest other real image. Fresh samples of the data distribution land near
  `quantile` (0.05); copies of training images land near 1.
- Bootstrap of FID over samples: FID of `reps` resamplings (with replacement) of the generated features against
  fixed reference statistics; its standard deviation is the spread due to the finite sample set. Resampling
  repeats about a third of the samples, which raises FID (its finite-sample bias grows as distinct samples get
  fewer): the resampled values sit above the point estimate, so report FID +- a multiple of the std, not the
  bootstrap percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError

KID_SUBSETS = 100  # torch-fidelity defaults (kid_subsets, kid_subset_size, rng_seed)
KID_SUBSET_SIZE = 1000
KID_SEED = 2020
KID_DEGREE, KID_COEF0 = 3, 1.0  # polynomial kernel (x.y * gamma + coef0)^degree, gamma = 1 / D
PRC_NEIGHBORHOOD = 3  # k of the k-NN manifolds (Kynkaanniemi et al. 2019; torch-fidelity's default)
MEMORISATION_QUANTILE = 0.05
BOOTSTRAP_SEED = 0


def _check(fake: Tensor, real: Tensor) -> None:
    if fake.dim() != 2 or real.dim() != 2 or fake.shape[1] != real.shape[1]:
        raise BenchError(f"Feature sets must be [N, D] with one D; got {list(fake.shape)} and {list(real.shape)}.")


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + KID_COEF0) ** KID_DEGREE


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    m = len(x)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    off_diagonal = kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()
    return off_diagonal / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def kid(
    fake: Tensor, real: Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over random subsets, as torch-fidelity's kid_features_to_metric."""
    _check(fake, real)
    if min(len(fake), len(real)) < subset_size:
        raise BenchError(f"KID subsets of {subset_size} need at least that many samples; got {len(fake)}, {len(real)}.")
    rng = np.random.RandomState(seed)
    x64, y64 = fake.double(), real.double()
    values = []
    for _ in range(subsets):
        i = torch.from_numpy(rng.choice(len(fake), subset_size, replace=False)).to(fake.device)
        j = torch.from_numpy(rng.choice(len(real), subset_size, replace=False)).to(real.device)
        values.append(_mmd2_unbiased(x64[i], y64[j]))
    mmds = torch.stack(values).cpu().numpy()
    return float(mmds.mean()), float(mmds.std())


def precision_recall(fake: Tensor, real: Tensor, k: int = PRC_NEIGHBORHOOD) -> tuple[float, float]:
    """(precision, recall) with k-NN manifolds, by torch-fidelity (generated first, real second)."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    _check(fake, real)
    out = prc_features_to_metric(
        fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=False, verbose=False
    )
    return float(out["precision"]), float(out["recall"])


def _nearest(a: Tensor, b: Tensor, exclude_self: bool = False, chunk: int = 2048) -> Tensor:
    """Distance from every row of a to its nearest row of b (itself excluded when a is b)."""
    out = []
    for start in range(0, len(a), chunk):
        d = torch.cdist(a[start : start + chunk].double(), b.double())
        if exclude_self:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + start] = float("inf")
        out.append(d.min(dim=1).values)
    return torch.cat(out)


@dataclass(frozen=True)
class Memorisation:
    fraction: float  # samples closer to their nearest real image than `threshold`
    threshold: float  # the `quantile` of real-to-nearest-other-real distances
    quantile: float
    median_ratio: float  # median sample-to-real distance over median real-to-real distance


def memorisation(fake: Tensor, real: Tensor, quantile: float = MEMORISATION_QUANTILE) -> Memorisation:
    _check(fake, real)
    if not 0 < quantile < 1 or len(real) < 2:
        raise BenchError("Memorisation needs 0 < quantile < 1 and at least two real feature rows.")
    real_nn = _nearest(real, real, exclude_self=True)
    fake_nn = _nearest(fake, real)
    threshold = torch.quantile(real_nn, quantile)
    ratio = fake_nn.median() / real_nn.median()
    return Memorisation(float((fake_nn < threshold).double().mean()), float(threshold), quantile, float(ratio))


@dataclass(frozen=True)
class Bootstrap:
    reps: int
    std: float
    mean: float  # above the point estimate by the duplicate-sample bias (see the module docstring)
    p05: float
    p95: float


def bootstrap_fid(
    fake: Tensor, ref_mu: Tensor, ref_sigma: Tensor, reps: int = 100, seed: int = BOOTSTRAP_SEED
) -> Bootstrap:
    """FID of `reps` resamplings of `fake` (with replacement) against fixed reference statistics, in float64."""
    from bench.metrics.fid import psd_sqrt, trace_sqrt_from_root

    if reps < 2:
        raise BenchError("A bootstrap needs at least 2 repetitions.")
    x = fake.double()
    mu_r, sigma_r = ref_mu.double().to(x.device), ref_sigma.double().to(x.device)
    root = psd_sqrt(sigma_r)
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(reps):
        idx = torch.randint(len(x), (len(x),), generator=g).to(x.device)
        xs = x[idx]
        mu = xs.mean(dim=0)
        cov = torch.cov(xs.T)
        tr_covmean = trace_sqrt_from_root(root, cov)
        values.append(((mu - mu_r) ** 2).sum() + cov.trace() + sigma_r.trace() - 2 * tr_covmean)
    fids = torch.stack(values).cpu().numpy()
    return Bootstrap(
        reps, float(fids.std()), float(fids.mean()), float(np.quantile(fids, 0.05)), float(np.quantile(fids, 0.95))
    )
