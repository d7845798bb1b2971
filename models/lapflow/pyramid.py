"""Laplacian pyramid and LapFlow's per-scale paths (METHODS.md section 1). Pure functions; never imports `bench`.

Scales are indexed k = 0 (finest) ... S-1 (coarsest); lists returned here are finest first.
Time runs from noise (t = 0) to data (t = 1); scale k is active on [T_{k+1}, 1] ("start" below is T_{k+1}).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def down(x: Tensor) -> Tensor:
    """2x2 average pooling, stride 2."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def up(x: Tensor) -> Tensor:
    """Nearest-neighbour x2 (each value copied into a 2x2 block)."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def decompose(x: Tensor, num_scales: int) -> list[Tensor]:
    """[B, C, H, W] -> [x^(0), ..., x^(S-1)]: residuals g_k - Up(g_{k+1}), then the coarsest g_{S-1}."""
    if num_scales < 1:
        raise ValueError(f"a pyramid needs at least one scale, got {num_scales}")
    factor = 2 ** (num_scales - 1)
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"size {tuple(x.shape[-2:])} is not divisible by {factor} for {num_scales} scales")
    gaussians = [x]
    for _ in range(num_scales - 1):
        gaussians.append(down(gaussians[-1]))
    residuals = [g - up(g_next) for g, g_next in itertools.pairwise(gaussians)]
    return [*residuals, gaussians[-1]]


def reconstruct(coeffs: list[Tensor]) -> Tensor:
    """Inverse of `decompose`: g_{S-1} = x^(S-1), g_k = x^(k) + Up(g_{k+1}); returns g_0."""
    g = coeffs[-1]
    for residual in reversed(coeffs[:-1]):
        g = residual + up(g)
    return g


def activation_times(critical_times: tuple[float, ...], num_scales: int) -> tuple[float, ...]:
    """(T_{S-1}, ..., T_1) increasing -> per-scale start times (T_1, ..., T_{S-1}, T_S = 0), finest first."""
    times = tuple(float(c) for c in critical_times)
    if len(times) != num_scales - 1:
        raise ValueError(f"{num_scales} scales need {num_scales - 1} critical times, got {len(times)}")
    bounds = (0.0, *times, 1.0)
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"critical times must increase strictly inside (0, 1), got {times}")
    return (*reversed(times), 0.0)


def noise_level(path: str, t: Tensor | float) -> Tensor | float:
    """sigma(t), shared by all scales: 1 - t (linear) or cos(pi/2 t) (GVP)."""
    if path == "linear":
        return 1 - t
    if path == "gvp":
        return torch.cos(math.pi / 2 * t) if isinstance(t, Tensor) else math.cos(math.pi / 2 * t)
    raise ValueError(f"unknown path '{path}'; choose linear or gvp")


def start_table(starts: tuple[float, ...]) -> Tensor:
    """[S, 3] float32: per scale (finest first) its start T_{k+1}, its span 1 - T_{k+1} and the span's reciprocal,
    each computed in float64 and rounded once: the float32 values these Python floats become in float32 kernels.
    LapFlow's loss reads them from a buffer, so the critical times are inputs of a compiled graph, not constants
    baked into it: every T1 compiles to the same graph (bench.compiling) and the values stay those of the floats."""
    return torch.tensor([(s, 1.0 - s, 1.0 / (1.0 - s)) for s in starts], dtype=torch.float32)


def stage_time_table(starts: tuple[float, ...], segment: bool) -> Tensor:
    """[S, 2] float32: per stage s (finest first) the low end T_{s+1} and the width of its training times, 1 - T_{s+1}
    (its scale's active interval, METHODS.md) or, with `segment`, T_s - T_{s+1} (its sampler segment, T_0 = 1); in
    float64, rounded once. The active widths equal start_table's spans bit for bit."""
    ends = (1.0, *starts[:-1]) if segment else (1.0,) * len(starts)
    return torch.tensor([(s, e - s) for s, e in zip(starts, ends, strict=True)], dtype=torch.float32)


Start = float | Tensor  # T_{k+1} as a float, or its start_table row


def _over_span(x: Tensor, span: Start, rate: Start) -> Tensor:
    """x / (1 - T_{k+1}) as a float divisor computes it: CPU kernels divide; CUDA kernels (a host scalar divisor) and
    inductor's CUDA lowering (a constant divisor) multiply by the reciprocal instead, so a table row does the same."""
    if isinstance(span, Tensor) and x.is_cuda:
        return x * rate
    return x / span


def stage_times(start: Start, u: Tensor) -> Tensor:
    """A stage's training times from draws u ~ U[0, 1]: t ~ U[T_{s+1}, 1] for a float start, else low + width u for a
    table row (low end, width): start_table's, or stage_time_table's (its active interval or its segment)."""
    if isinstance(start, Tensor):
        return start[0] + start[1] * u
    return start + (1 - start) * u


def coefficients(path: str, t: Tensor, start: Start) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a_k, sigma, da_k/dt, dsigma/dt) at t [B] for a scale that starts at T_{k+1} = start (a float or its
    start_table row: the same values).

    Linear: a_k = (t - start) / (1 - start), sigma = 1 - t. GVP: a_k = sin(pi/2 tau), sigma = cos(pi/2 t) with
    tau the local time (t - start) / (1 - start) clamped to [0, 1].
    """
    if isinstance(start, Tensor):
        start, span, rate = start[0], start[1], start[2]
        full_rate = rate.to(t.dtype).expand_as(t)
    else:
        span = 1.0 - start
        rate = 1 / span
        full_rate = torch.full_like(t, rate)
    if path == "linear":
        a = _over_span(t - start, span, rate)
        return a, 1 - t, full_rate, torch.full_like(t, -1.0)
    if path == "gvp":
        tau = _over_span(t - start, span, rate).clamp(0.0, 1.0)
        half_pi = math.pi / 2
        inside = ((t >= start) & (t <= 1.0)).to(t.dtype)  # the clamp freezes a_k outside its interval
        da = _over_span(half_pi * torch.cos(half_pi * tau), span, rate) * inside
        return torch.sin(half_pi * tau), torch.cos(half_pi * t), da, -half_pi * torch.sin(half_pi * t)
    raise ValueError(f"unknown path '{path}'; choose linear or gvp")


def interpolate(x_k: Tensor, eps_k: Tensor, t: Tensor, start: Start, path: str = "linear") -> tuple[Tensor, Tensor]:
    """Scale k's state x_t^(k) = a_k(t) x^(k) + sigma(t) eps^(k) and its target velocity d x_t^(k) / dt."""
    a, sigma, da, dsigma = (c.view(-1, *([1] * (x_k.dim() - 1))) for c in coefficients(path, t, start))
    return a * x_k + sigma * eps_k, da * x_k + dsigma * eps_k
