"""The sampler floor: how far a family's sampler lands from the data when its network is exact.

The data are replaced by a Gaussian with the latents' own mean and covariance (a second-order model of them); each
run's model gets its family's exact network for it (bench.oracles.networks) and samples through its own sample()
in float64. What the sampler alone costs is then exact: the Frechet distance between the data's Gaussian and the
law of the samples (in latent space; 0 for an exact sampler), the fraction of the data's variance the samples keep
(trace ratio; < 1: too little variety) and that fraction per band of a two-level Laplacian split (the coarse
Gaussian level and the fine residual), where LapFlow's scales part.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from bench.interface import SampleSpec
from bench.oracles.gaussian import F64, FixedNoise, ShapeRecorder, frechet_distance, law_of, residual_maps

BANDS = ("coarse", "fine")  # residual_maps(..., 2) finest first: fine residual, then the coarse Gaussian level


@dataclasses.dataclass(frozen=True)
class Floor:
    frechet: float  # latent-space Frechet distance between N(mu, Sigma) and the samples' law
    variance: float  # tr(Cov samples) / tr(Sigma)
    bands: dict[str, float]  # the same ratio per Laplacian band
    mean_error: float  # max |E[samples] - mu|
    nfe: int  # network evaluations per sample

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sampler_law(model: nn.Module, spec: SampleSpec, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, int]:
    """Mean, covariance and NFE of model.sample's output under its exact network: the noise and every randn_like
    draw (sized by a first pass) are basis inputs, one batch per input block (bench.oracles.gaussian.law_of).
    Fixed-step solvers map every batch alike, so the law is exact; dopri5 picks its steps per batch, so with
    several blocks (Pyramidal Flow's jump noise) its law holds to within its tolerance, and the NFE is the largest
    batch's, as in the mini benchmark's records."""
    recorder = ShapeRecorder()
    model.sample(torch.zeros(1, *shape, dtype=F64), None, spec, recorder)
    nfe = 0

    def run(blocks: list[Tensor]) -> Tensor:
        nonlocal nfe
        out = model.sample(blocks[0].reshape(-1, *shape), None, spec, FixedNoise(blocks[1:]))
        nfe = max(nfe, out.nfe)
        return out.latents

    mean, cov = law_of(run, [math.prod(shape), *recorder.sizes])
    return mean, cov, nfe


def band_ratios(cov: Tensor, sigma: Tensor, shape: tuple[int, ...]) -> dict[str, float]:
    """tr(P C P^T) / tr(P Sigma P^T) for the fine residual and the coarse level of a two-level pyramid."""
    fine, coarse = residual_maps(*shape, 2)
    return {
        name: float(torch.trace(p @ cov @ p.T) / torch.trace(p @ sigma @ p.T))
        for name, p in zip(BANDS, (coarse, fine), strict=True)
    }


def sampler_floor(model: nn.Module, spec: SampleSpec, mu: Tensor, sigma: Tensor) -> Floor:
    """The floor of `model`'s sampler `spec` (model.net already the exact network for N(mu, sigma))."""
    shape = tuple(model.latent_shape)
    mean, cov, nfe = sampler_law(model, spec, shape)
    return Floor(
        frechet=frechet_distance(mu, sigma, mean, cov),
        variance=float(cov.trace() / sigma.trace()),
        bands=band_ratios(cov, sigma, shape),
        mean_error=float((mean - mu).abs().max()),
        nfe=nfe,
    )
