"""ODE loops from t0 to t1 (t = 0 noise, t = 1 data) that count function evaluations.

The state is one tensor [B, ...]; multi-scale families pack their scales. Euler and Heun are exactly
per-sample (batch-independent); dopri5 (torchdiffeq) adapts its steps to the whole batch's error, so results
agree across batch sizes only to within its tolerances.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]  # (x [B, ...], t [B]) -> dx/dt
Network = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # (x, t, y) -> output


def integrate(
    velocity: Velocity,
    x: Tensor,
    t0: float,
    t1: float,
    solver: str = "euler",
    steps: int = 50,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> tuple[Tensor, int]:
    """Integrate dx/dt = velocity(x, t) from t0 to t1; returns (x(t1), number of velocity evaluations)."""
    if solver == "dopri5":
        return _dopri5(velocity, x, t0, t1, atol, rtol)
    if solver not in ("euler", "heun"):
        raise ValueError(f"flow solvers are euler, heun and dopri5, not '{solver}'")
    times = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()
    nfe = 0
    for ta, tb in itertools.pairwise(times):
        dt = tb - ta
        d = velocity(x, _full(x, ta))
        nfe += 1
        if solver == "euler":
            x = x + dt * d
        else:
            x_pred = x + dt * d
            d2 = velocity(x_pred, _full(x, tb))
            nfe += 1
            x = x + dt * 0.5 * (d + d2)
    return x, nfe


def _full(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)


def _dopri5(velocity: Velocity, x: Tensor, t0: float, t1: float, atol: float, rtol: float) -> tuple[Tensor, int]:
    from torchdiffeq import odeint

    nfe = 0

    def func(t: Tensor, state: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(state, _full(state, float(t)))

    span = torch.tensor([t0, t1], dtype=torch.float64, device=x.device)
    out = odeint(func, x, span, method="dopri5", atol=atol, rtol=rtol)
    return out[-1], nfe


def split_steps(steps: int, lengths: list[float]) -> list[int]:
    """Split a step budget over segments in proportion to their length (largest remainder; >= 1 each)."""
    total = sum(lengths)
    raw = [steps * length / total for length in lengths]
    out = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(out) < steps:
        out[order[i % len(order)]] += 1
        i += 1
    return out


def guided(network: Network, y: Tensor | None, guidance: float, null_label: int) -> Velocity:
    """Classifier-free guidance v = v_u + w (v_c - v_u), with the conditional and null batches in one call.

    w = 1 (or no labels) is the plain conditional network; w = 0 the unconditional one.
    """
    if y is None or guidance == 1.0:
        return lambda x, t: network(x, t, y)
    null = torch.full_like(y, null_label)
    if guidance == 0.0:
        return lambda x, t: network(x, t, null)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        out = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    return velocity
