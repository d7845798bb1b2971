"""Every family's sampler, driven by the exact (Bayes-optimal) network for Gaussian data, returns the data's law.

For latents x ~ N(mu, Sigma) each family's training state is z = A x + B eps and its target u = C x + D eps, linear
maps of the data and of the Gaussian noise, so the network a perfect training run converges to is the posterior mean
E[u | z] in closed form (bench.oracles). A sampler that integrates that field (or draws from DDPM's exact reverse
conditionals) must hand back N(mu, Sigma) itself: this checks the training path, the activation / stage-jump states
and the segment or stage loop of each sampler together, against METHODS.md's definitions written out again as
matrices (not the families' own pyramid code). The sampler's output is affine in the noise it draws, so its law is
read off exactly from a batch of basis inputs: no Monte Carlo error.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from baselines.dit.config import DiTConfig
from baselines.dit.model import build as build_dit
from baselines.lfm.config import LFMConfig
from baselines.lfm.model import build as build_lfm
from baselines.pyramidal_flow.config import PyramidalFlowConfig
from baselines.pyramidal_flow.model import build as build_pyramidal
from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.oracles.floor import band_ratios, sampler_floor, sampler_law
from bench.oracles.gaussian import F64, fit_gaussian, frechet_distance, one_time, residual_maps
from bench.oracles.networks import install_exact_network
from models.lapflow.config import LapFlowConfig
from models.lapflow.model import build as build_lapflow
from models.lapflow.pyramid import decompose
from models.sizes import BackboneConfig

TINY = BackboneConfig("S", patch=1, depth=1, hidden=8, heads=2)
EXACT = SampleSpec(solver="dopri5", atol=1e-9, rtol=1e-9)


def gaussian_data(dim: int, seed: int, diagonal: bool = False) -> tuple[Tensor, Tensor]:
    """A mean and a well-conditioned covariance (eigenvalues in [0.2, 1.7]), with correlations across pixels."""
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 * torch.randn(dim, generator=g, dtype=F64)
    if diagonal:
        return mu, torch.diag(0.2 + 1.5 * torch.rand(dim, generator=g, dtype=F64))
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))
    return mu, q @ torch.diag(torch.linspace(0.2, 1.7, dim, dtype=F64)) @ q.T


def assert_law(mean: Tensor, cov: Tensor, mu: Tensor, sigma: Tensor, atol: float) -> None:
    assert (mean - mu).abs().max() < atol, f"mean off by {(mean - mu).abs().max():.2e}"
    assert (cov - sigma).abs().max() < atol, f"covariance off by {(cov - sigma).abs().max():.2e}"


SHAPE = (2, 8, 8)


def exact_model(family: str, seed: int, **options: object) -> tuple[nn.Module, Tensor, Tensor]:
    """A family's model on SHAPE latents with its exact network for a seeded Gaussian."""
    builders = {
        "lfm": (build_lfm, LFMConfig),
        "lapflow": (build_lapflow, LapFlowConfig),
        "pyramidal-flow": (build_pyramidal, PyramidalFlowConfig),
    }
    build, config = builders[family]
    mu, sigma = gaussian_data(math.prod(SHAPE), seed)
    model = build(config(backbone=TINY, **options), SHAPE)
    return install_exact_network(family, model, mu, sigma), mu, sigma


# ----------------------------------------------------------------------------------------------------------------
# the closed forms themselves


def test_residual_maps_are_the_pyramid_of_the_lapflow_code() -> None:
    x = torch.randn(3, *SHAPE, dtype=F64)
    for scales in (1, 2, 3):
        maps = residual_maps(*SHAPE, scales)
        for p, coeff in zip(maps, decompose(x, scales), strict=True):
            assert torch.allclose(x.flatten(1) @ p.T, coeff.flatten(1), atol=1e-12)


def test_frechet_distance_closed_forms() -> None:
    mu, sigma = gaussian_data(6, seed=0)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    # Commuting covariances: ||dmu||^2 + sum (sqrt(l1) - sqrt(l2))^2 over the shared eigenbasis.
    a, b = torch.rand(6, dtype=F64) + 0.1, torch.rand(6, dtype=F64) + 0.1
    shift = torch.ones(6, dtype=F64)
    expected = float(6 + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert abs(frechet_distance(mu, torch.diag(a), mu + shift, torch.diag(b)) - expected) < 1e-9


def test_fit_gaussian_and_one_time() -> None:
    x = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    mu, sigma = fit_gaussian(x)
    assert mu.tolist() == [1.0, 1.0] and sigma.tolist() == [[2.0, -2.0], [-2.0, 2.0]]
    with pytest.raises(ValueError, match="one time"):
        one_time(torch.tensor([0.1, 0.2]))


def test_exact_networks_refuse_what_they_do_not_model() -> None:
    mu, sigma = gaussian_data(32, seed=0)
    with pytest.raises(BenchError, match="No exact network for the family 'toy'"):
        install_exact_network("toy", build_lfm(LFMConfig(backbone=TINY), (2, 4, 4)), mu, sigma)
    with pytest.raises(BenchError, match="DiT's exact network needs the sampling spec"):
        install_exact_network("dit", build_dit(DiTConfig(backbone=TINY), (2, 4, 4)), mu, sigma)
    conditional = build_lfm(LFMConfig(backbone=TINY), (2, 4, 4), num_classes=10)
    with pytest.raises(BenchError, match="unconditional"):
        install_exact_network("lfm", conditional, mu, sigma)


# ----------------------------------------------------------------------------------------------------------------
# LFM, LapFlow and Pyramidal Flow (METHODS.md sections 1-3)


@pytest.mark.parametrize("sigma_min", [0.0, 1e-2])
def test_lfm_exact_velocity_samples_the_data(sigma_min: float) -> None:
    model, mu, sigma = exact_model("lfm", seed=1, sigma_min=sigma_min)
    mean, cov, _ = sampler_law(model, EXACT, SHAPE)
    # At t = 1 the path keeps sigma_min eps: the law is N(mu, Sigma + sigma_min^2 I).
    assert_law(mean, cov, mu, sigma + sigma_min**2 * torch.eye(len(mu), dtype=F64), atol=1e-6)


@pytest.mark.parametrize(
    ("scales", "path", "critical_times"),
    [(2, "linear", ()), (2, "linear", (0.3,)), (2, "gvp", ()), (3, "linear", ()), (3, "gvp", (0.2, 0.7))],
)
def test_lapflow_exact_velocity_samples_the_data(scales: int, path: str, critical_times: tuple[float, ...]) -> None:
    """Segments, activation states sigma(T_{k+1}) eps^(k), joint integration and reconstruction give back the data's
    law, cross-scale correlations included: a perfectly trained LapFlow loses no variety (its recall is not capped
    by the formulation)."""
    model, mu, sigma = exact_model("lapflow", seed=scales, num_scales=scales, path=path, critical_times=critical_times)
    mean, cov, _ = sampler_law(model, EXACT, SHAPE)
    assert_law(mean, cov, mu, sigma, atol=1e-6)


@pytest.mark.parametrize("stages", [2, 3])
def test_pyramidal_flow_exact_velocity_samples_the_data(stages: int) -> None:
    """The jump a Up(x) + b block_noise(z) must give each stage the law of its training start point: with exact
    velocities the last stage then ends on the data's law (the point-mass oracle of test_pyramidal_flow.py checks the
    signal path only; this checks the noise's covariance through the jumps too: the jump noise is a basis input)."""
    model, mu, sigma = exact_model("pyramidal-flow", seed=10 + stages, stages=stages)
    mean, cov, _ = sampler_law(model, EXACT, SHAPE)
    assert_law(mean, cov, mu, sigma, atol=1e-6)


@pytest.mark.parametrize("family", ["lfm", "lapflow", "pyramidal-flow"])
def test_euler_converges_to_the_data_law_at_first_order(family: str) -> None:
    """Each family's fixed-step sampler approaches the law as 1 / steps; its floor (bench.oracles.floor) shrinks
    with it, the samples holding too little variance (Euler under-shoots the spread on every band)."""
    model, mu, sigma = exact_model(family, seed=5)
    errors, floors = [], []
    for steps in (26, 52, 104):
        mean, cov, nfe = sampler_law(model, SampleSpec(solver="euler", steps=steps), SHAPE)
        assert nfe == steps
        errors.append(max((mean - mu).abs().max().item(), (cov - sigma).abs().max().item()))
        floors.append(sampler_floor(model, SampleSpec(solver="euler", steps=steps), mu, sigma))
    assert errors[0] < 0.3
    for coarse, fine in itertools.pairwise(errors):
        assert 1.7 < coarse / fine < 2.3, errors
    assert floors[0].frechet > floors[1].frechet > floors[2].frechet > 0
    assert all(f.variance < 1 and max(f.bands.values()) < 1 for f in floors)


def test_floor_of_an_exact_sampler_is_zero() -> None:
    model, mu, sigma = exact_model("lapflow", seed=3)
    floor = sampler_floor(model, EXACT, mu, sigma)
    assert abs(floor.frechet) < 1e-5 and abs(floor.variance - 1) < 1e-6 and floor.mean_error < 1e-6
    assert all(abs(r - 1) < 1e-6 for r in floor.bands.values()) and floor.nfe > 10
    assert band_ratios(sigma, sigma, SHAPE) == {"coarse": 1.0, "fine": 1.0}


# ----------------------------------------------------------------------------------------------------------------
# DiT: DDPM's ancestral sampler with the exact noise prediction and the VLB-optimal learned variance


def dit_model(steps: int, seed: int, diagonal: bool) -> tuple[nn.Module, Tensor, Tensor, object]:
    shape = (2, 4, 4)
    mu, sigma = gaussian_data(math.prod(shape), seed=seed, diagonal=diagonal)
    model = build_dit(DiTConfig(backbone=TINY), shape)
    install_exact_network("dit", model, mu, sigma, SampleSpec(solver="ddpm", steps=steps))
    return model, mu, sigma, model.sampling_process(steps)


def start_gain(process: object, eigenvalues: Tensor) -> Tensor:
    """Per eigenvalue l of Sigma, E[out | x_T] - E[out] per unit of x_T in the exact chain: Cov(out, x_T) / Var(x_T)
    = sqrt(abar_T) l / (abar_T l + 1 - abar_T) (every step's map is diagonal in Sigma's eigenbasis)."""
    abar_t = float(process.alphas_cumprod[-1])
    return abar_t**0.5 * eigenvalues / (abar_t * eigenvalues + 1 - abar_t)


@pytest.mark.parametrize("steps", [10, 50])
def test_dit_exact_network_samples_the_data(steps: int) -> None:
    """Independent coordinates: every reverse conditional of the respaced chain is exact, so the law is the data's up
    to DDPM's own two approximations, both in closed form: the last step's denoising (Var E[x_0 | x_0'] = abar_0 v^2
    / var_0) and the start N(0, I) in place of the chain's last marginal N(sqrt(abar_T) mu, var_T), which the
    output's dependence on x_T (start_gain) carries through."""
    model, mu, sigma, process = dit_model(steps, seed=20, diagonal=True)
    mean, cov, nfe = sampler_law(model, SampleSpec(solver="ddpm", steps=steps), (2, 4, 4))
    assert nfe == steps
    v, abar0, abar_t = sigma.diagonal(), float(process.alphas_cumprod[0]), float(process.alphas_cumprod[-1])
    gain = start_gain(process, v)
    expected_mean = mu - gain * abar_t**0.5 * mu
    expected_var = abar0 * v**2 / (abar0 * v + 1 - abar0) - gain**2 * (abar_t * (v - 1))
    assert (expected_var - v).abs().max() < 1e-3 and (expected_mean - mu).abs().max() < 1e-4  # both are small
    assert_law(mean, cov, expected_mean, torch.diag(expected_var), atol=3e-6)


def test_dit_exact_network_with_correlated_data() -> None:
    """Correlated coordinates: the exact noise prediction keeps the mean exact (the same start correction, now in
    Sigma's eigenbasis), while a per-coordinate variance cannot draw the correlated reverse noise exactly: the
    spread comes out close to the data's, not equal to it (the DiT floor of bench.oracles.floor)."""
    model, mu, sigma, process = dit_model(50, seed=21, diagonal=False)
    mean, cov, _ = sampler_law(model, SampleSpec(solver="ddpm", steps=50), (2, 4, 4))
    lam, u = torch.linalg.eigh(sigma)
    expected_mean = mu - u @ (start_gain(process, lam) * (u.T @ mu)) * float(process.alphas_cumprod[-1]) ** 0.5
    assert (mean - expected_mean).abs().max() < 3e-6
    assert 0.98 < float(cov.trace() / sigma.trace()) < 1.02 and (cov - sigma).abs().max() > 1e-3


def test_dit_ddim_with_the_exact_network_converges() -> None:
    model, mu, sigma, _ = dit_model(10, seed=22, diagonal=False)
    floors = []
    for steps in (10, 40):
        install_exact_network("dit", model, mu, sigma, SampleSpec(solver="ddim", steps=steps))
        floors.append(sampler_floor(model, SampleSpec(solver="ddim", steps=steps), mu, sigma))
    assert floors[0].frechet > floors[1].frechet and floors[1].nfe == 40
