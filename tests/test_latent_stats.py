"""The mini benchmark's latent statistics (bench.reproduce.latent) against closed forms: running moments equal the
floor's Gaussian fit, the data against itself is at distance 0 with all its variance, and a contraction about the
mean by a factor a keeps a^2 of the variance in every band, at the Frechet distance of two Gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from bench.oracles.gaussian import fit_gaussian
from bench.reproduce.latent import LatentMoments, LatentReference, latent_values

SHAPE = (2, 4, 4)


def _data(n: int = 600) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(math.prod(SHAPE), math.prod(SHAPE), generator=g, dtype=torch.float64) / 4
    return (torch.randn(n, math.prod(SHAPE), generator=g, dtype=torch.float64) @ mix + 0.3).reshape(n, *SHAPE)


def _moments(latents: torch.Tensor, batch: int = 128) -> LatentMoments:
    moments = LatentMoments(torch.device("cpu"))
    for chunk in latents.float().split(batch):  # float32 batches, as bench.sample.generate yields them
        moments.add(chunk)
    return moments


def test_running_moments_are_the_floors_gaussian_fit() -> None:
    data = _data()
    mean, cov = _moments(data).fit()
    want_mean, want_cov = fit_gaussian(data.float())
    torch.testing.assert_close(mean, want_mean, atol=1e-10, rtol=0)
    torch.testing.assert_close(cov, want_cov, atol=1e-10, rtol=0)


def test_the_data_against_itself_keeps_everything_at_distance_zero() -> None:
    data = _data()
    values = latent_values(LatentReference.of(data.float()), _moments(data))
    assert values["latent_frechet"][0] == pytest.approx(0.0, abs=1e-8)
    assert values["latent_variance"][0] == pytest.approx(1.0, abs=1e-12)
    assert values["latent_variance"][1]["latent_bands"] == pytest.approx({"coarse": 1.0, "fine": 1.0}, abs=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.9])
def test_a_contraction_keeps_its_square_of_the_variance_in_every_band(scale: float) -> None:
    data = _data()
    reference = LatentReference.of(data.float())
    mean = data.mean(0, keepdim=True)
    shrunk = mean + scale * (data - mean)
    frechet, variance = (latent_values(reference, _moments(shrunk))[m] for m in ("latent_frechet", "latent_variance"))
    assert variance[0] == pytest.approx(scale**2, rel=1e-6)
    assert variance[1]["latent_bands"] == pytest.approx({"coarse": scale**2, "fine": scale**2}, rel=1e-6)
    # same mean, covariance a^2 S: tr(S) + a^2 tr(S) - 2 tr((a^2 S^2)^1/2) = (1 - a)^2 tr(S)
    assert frechet[0] == pytest.approx((1 - scale) ** 2 * float(reference.cov.trace()), rel=1e-5)


def test_latents_of_another_shape_give_no_values() -> None:
    reference = LatentReference.of(_data().float())
    assert latent_values(reference, _moments(torch.randn(10, 3, 4, 4))) == {}
    assert latent_values(reference, LatentMoments(torch.device("cpu"))) == {}  # no samples
