"""Second-order statistics of a trained run's sampled latents against the Gaussian fit of its training latents: the
sampler floor's quantities (bench.oracles.floor) measured on the samples a trained network draws.

Per sample set: the Frechet distance between the two Gaussian fits in latent space (`latent_frechet`), the fraction
of the data's variance the samples keep (`latent_variance`, tr(Cov samples) / tr(Cov data); < 1: too little
variety) and that fraction per band of a two-level Laplacian split (extra.latent_bands: the coarse Gaussian level
and the fine residual, where LapFlow's scales part). Beside the floor's values for the same run and sampler they say
how much of the spread a trained run loses beyond what its sampler alone costs. A Gaussian summary, not an FID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from bench.config import RunConfig
from bench.errors import BenchError
from bench.metrics.protocols import count_token
from bench.oracles.floor import band_ratios
from bench.oracles.gaussian import F64, fit_gaussian, frechet_distance

LATENT_METRICS = ("latent_frechet", "latent_variance")


def carry_latents(cfg: RunConfig) -> torch.Tensor:
    """The training latents a run of `cfg` sees: the carry's images and, with flip, their mirrors."""
    from bench.datasets.carried import load_carried

    data = load_carried(cfg.data, Path(cfg.data.path), torch.device("cpu"))
    if data.labels is not None:
        raise BenchError(
            "The sampler floor and the latent statistics are for unconditional carries; this one holds class labels."
        )
    return torch.cat([data.latents, data.flipped]) if data.flipped is not None else data.latents


@dataclass
class LatentReference:
    """The Gaussian fit of the training latents (the carry's images and, with flip, their mirrors)."""

    mean: Tensor  # [D] float64 on the CPU
    cov: Tensor  # [D, D] float64 on the CPU
    count: int
    shape: tuple[int, ...]  # (C, h, w) of one latent

    @classmethod
    def of(cls, latents: Tensor) -> LatentReference:
        mean, cov = fit_gaussian(latents)
        return cls(mean, cov, int(latents.shape[0]), tuple(int(d) for d in latents.shape[1:]))

    def protocol(self, metric: str, num_samples: int, dataset: str, res: int, source_hash: str | None) -> dict:
        """e.g. latent-frechet-5k-celebahq128: the metric, the sample count, the data set and resolution; the
        reference names the carry's source (the hash its features were checked against)."""
        return {
            "name": f"{metric.replace('_', '-')}-{count_token(num_samples)}-{dataset}{res}",
            "metric": metric,
            "space": "latent",
            "num_samples": num_samples,
            "precision": "float64",
            "reference_latents": {
                "dataset": dataset,
                "res": res,
                "count": self.count,
                "source_hash": source_hash,
                "fit": "Gaussian (mean, unbiased covariance) of the training latents: the carry's images and mirrors",
            },
        }


@dataclass
class LatentMoments:
    """Running sums of a sample set's flattened latents, in float64 on `device` (the mean and covariance of 5,000
    latents of 1,024 values are a few matrix products, next to nothing beside sampling them)."""

    device: torch.device
    count: int = 0
    total: Tensor | None = None
    outer: Tensor | None = None
    shape: tuple[int, ...] = field(default=())

    def add(self, latents: Tensor) -> None:
        x = latents.flatten(1).to(self.device, F64)
        if self.total is None:
            self.total, self.outer = x.sum(0), x.T @ x
            self.shape = tuple(int(d) for d in latents.shape[1:])
        else:
            self.total += x.sum(0)
            self.outer += x.T @ x
        self.count += x.shape[0]

    def fit(self) -> tuple[Tensor, Tensor]:
        """Mean and unbiased covariance (as bench.oracles.gaussian.fit_gaussian), on the CPU."""
        mean = (self.total / self.count).cpu()
        cov = (self.outer.cpu() - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def latent_values(reference: LatentReference, moments: LatentMoments) -> dict[str, tuple[float, dict]]:
    """metric -> (value, record extras) of one sample set; none when its latents are not the reference's shape
    (a run in another space than its carry's latents)."""
    if moments.count < 2 or moments.shape != reference.shape:
        return {}
    mean, cov = moments.fit()
    return {
        "latent_frechet": (frechet_distance(reference.mean, reference.cov, mean, cov), {}),
        "latent_variance": (
            float(cov.trace() / reference.cov.trace()),
            {"latent_bands": band_ratios(cov, reference.cov, reference.shape)},
        ),
    }
