"""Solvers against closed forms: exactness on linear fields, convergence order, NFE counts, CFG identities."""

from __future__ import annotations

import math

import pytest
import torch

from bench.solvers import guided, integrate, split_steps


def test_euler_is_exact_for_constant_velocity_and_counts_nfe():
    x0 = torch.randn(3, 5, dtype=torch.float64)
    v = torch.randn(3, 5, dtype=torch.float64)
    x1, nfe = integrate(lambda x, t: v, x0, 0.0, 1.0, "euler", 7)
    assert nfe == 7 and torch.allclose(x1, x0 + v)
    _, nfe_heun = integrate(lambda x, t: v, x0, 0.0, 1.0, "heun", 7)
    assert nfe_heun == 14


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2)])
def test_convergence_order_on_exponential(solver, order):
    # dx/dt = x  ->  x(1) = e * x(0); halving the step divides the error by 2^order.
    x0 = torch.ones(1, 1, dtype=torch.float64)
    errors = [abs(integrate(lambda x, t: x, x0, 0.0, 1.0, solver, n)[0].item() - math.e) for n in (20, 40)]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.05)


def test_dopri5_meets_tolerance_and_reports_measured_nfe():
    x0 = torch.ones(2, 3, dtype=torch.float64)
    calls = []

    def velocity(x, t):
        calls.append(1)
        return x * torch.cos(t.to(x.dtype))[:, None]

    x1, nfe = integrate(velocity, x0, 0.0, 1.0, "dopri5", atol=1e-8, rtol=1e-8)
    assert torch.allclose(x1, x0 * math.exp(math.sin(1.0)), atol=1e-6)
    assert nfe == len(calls) > 6


def test_split_steps_proportional_and_exact_total():
    assert split_steps(80, [0.5, 0.5]) == [40, 40]
    assert sum(split_steps(100, [1 / 3, 1 / 3, 1 / 3])) == 100
    assert split_steps(10, [0.9, 0.1]) == [9, 1]
    assert min(split_steps(3, [0.98, 0.01, 0.01])) >= 1


def test_guidance_identities():
    def network(x, t, y):
        return x * (y.to(x.dtype)[:, None] + 1)  # a label-dependent field; null label = 5

    x, t, y = torch.randn(4, 3), torch.zeros(4), torch.tensor([0, 1, 2, 3])
    cond, uncond = network(x, t, y), network(x, t, torch.full_like(y, 5))
    assert torch.equal(guided(network, y, 1.0, 5)(x, t), cond)
    assert torch.equal(guided(network, y, 0.0, 5)(x, t), uncond)
    assert torch.allclose(guided(network, y, 1.5, 5)(x, t), uncond + 1.5 * (cond - uncond))
