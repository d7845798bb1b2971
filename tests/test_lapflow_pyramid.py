"""LapFlow pyramid and per-scale paths: exactness, activation, recomposed noise, targets (METHODS.md section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from models.lapflow.config import LapFlowConfig, default_critical_times, resolve_critical_times, resolve_num_scales
from models.lapflow.pyramid import (
    activation_times,
    decompose,
    down,
    interpolate,
    noise_level,
    reconstruct,
    up,
)

PATHS = ["linear", "gvp"]


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_down_up_closed_forms() -> None:
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    assert torch.equal(down(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]], dtype=torch.float64))
    assert torch.equal(up(down(x))[0, 0, :2, :2], torch.full((2, 2), 2.5, dtype=torch.float64))
    assert torch.equal(down(up(x)), x)  # average of a copied block is the value


@pytest.mark.parametrize("num_scales", [1, 2, 3, 4])
def test_reconstruction_is_exact(num_scales: int) -> None:
    x = gaussian(2, 3, 16, 16)
    coeffs = decompose(x, num_scales)
    assert [c.shape[-1] for c in coeffs] == [16 >> k for k in range(num_scales)]
    assert torch.allclose(reconstruct(coeffs), x, rtol=0, atol=1e-14)
    # Dyadic inputs make every operation exact in float64: the algebra itself is an exact inverse.
    dyadic = torch.randint(-64, 64, (2, 3, 16, 16), generator=torch.Generator().manual_seed(1)).double() / 8
    assert torch.equal(reconstruct(decompose(dyadic, num_scales)), dyadic)


def test_residuals_have_zero_mean_blocks() -> None:
    coeffs = decompose(gaussian(1, 2, 8, 8), 3)
    for residual in coeffs[:-1]:  # Down(g - Up(Down g)) = 0
        assert torch.allclose(down(residual), torch.zeros_like(down(residual)), atol=1e-15)
    assert torch.allclose(coeffs[-1], down(down(gaussian(1, 2, 8, 8))), atol=1e-15)


def test_decompose_rejects_indivisible_sizes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        decompose(torch.zeros(1, 1, 6, 6), 3)


def test_activation_times_order_and_validation() -> None:
    assert activation_times((), 1) == (0.0,)
    assert activation_times((0.5,), 2) == (0.5, 0.0)
    assert activation_times((1 / 3, 2 / 3), 3) == (2 / 3, 1 / 3, 0.0)  # (T_1, T_2, T_3) finest first
    with pytest.raises(ValueError, match="increase"):
        activation_times((0.6, 0.4), 3)
    with pytest.raises(ValueError, match="critical times"):
        activation_times((0.5,), 3)


def test_config_defaults_by_resolution() -> None:
    cfg = LapFlowConfig()
    assert resolve_num_scales(cfg, 32) == 2 and resolve_num_scales(cfg, 64) == 3 and resolve_num_scales(cfg, 128) == 3
    assert default_critical_times(2) == (0.5,)
    assert default_critical_times(3) == pytest.approx((1 / 3, 2 / 3))
    assert resolve_critical_times(LapFlowConfig(critical_times=(0.2,)), 2) == (0.2,)
    assert resolve_num_scales(LapFlowConfig(num_scales=4), 32) == 4


@pytest.mark.parametrize("path", PATHS)
def test_state_at_activation_is_scaled_noise(path: str) -> None:
    starts = activation_times((0.25, 0.6), 3)
    xs, es = decompose(gaussian(3, 2, 8, 8), 3), decompose(gaussian(3, 2, 8, 8, seed=1), 3)
    for k, start in enumerate(starts):
        t = torch.full((3,), start, dtype=torch.float64)
        state, _ = interpolate(xs[k], es[k], t, start, path)
        expected = (1 - start) * es[k] if path == "linear" else math.cos(math.pi / 2 * start) * es[k]
        assert torch.allclose(state, expected, rtol=0, atol=1e-15)
        assert torch.allclose(state, noise_level(path, start) * es[k], rtol=0, atol=1e-15)


@pytest.mark.parametrize("path", PATHS)
def test_recomposed_noise_and_endpoint(path: str) -> None:
    starts = activation_times((0.25, 0.6), 3)
    eps, x = gaussian(4, 2, 8, 8), gaussian(4, 2, 8, 8, seed=1)
    es, xs = decompose(eps, 3), decompose(x, 3)
    zero = [torch.zeros_like(e) for e in es]
    t = torch.tensor([0.6, 0.7, 0.93, 1.0], dtype=torch.float64)  # all scales active
    noise_part = reconstruct([interpolate(z, e, t, s, path)[0] for z, e, s in zip(zero, es, starts, strict=True)])
    sigma = (1 - t) if path == "linear" else torch.cos(math.pi / 2 * t)
    assert torch.allclose(noise_part, sigma.view(-1, 1, 1, 1) * eps, rtol=0, atol=1e-14)
    ones = torch.ones(4, dtype=torch.float64)
    data_end = reconstruct([interpolate(a, e, ones, s, path)[0] for a, e, s in zip(xs, es, starts, strict=True)])
    assert torch.allclose(data_end, x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("start", [0.0, 1 / 3, 0.5, 0.9])
def test_target_is_time_derivative_of_path(path: str, start: float) -> None:
    x_k, eps_k = gaussian(5, 2, 4, 4), gaussian(5, 2, 4, 4, seed=1)
    t = start + (1 - start) * torch.tensor([0.01, 0.2, 0.5, 0.77, 0.99], dtype=torch.float64)
    _, target = interpolate(x_k, eps_k, t, start, path)
    # Row b depends on t_b only, so a forward-mode derivative along all-ones gives each sample's d state / dt.
    _, derivative = torch.func.jvp(lambda tt: interpolate(x_k, eps_k, tt, start, path)[0], (t,), (torch.ones_like(t),))
    assert torch.allclose(derivative, target, rtol=1e-12, atol=1e-12)


def test_linear_target_closed_form() -> None:
    x_k, eps_k = gaussian(2, 1, 4, 4), gaussian(2, 1, 4, 4, seed=1)
    _, target = interpolate(x_k, eps_k, torch.tensor([0.7, 0.8], dtype=torch.float64), 0.5, "linear")
    assert torch.allclose(target, x_k / 0.5 - eps_k, rtol=0, atol=1e-15)
