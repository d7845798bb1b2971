"""Pyramidal Flow stage schedule: stages, sigmas, start-level corrections, time windows, block noise.

METHODS.md section 3; coefficients as in jy0205/Pyramid-Flow `diffusion_schedulers/scheduling_flow_matching.py`
(derivations in ORIGIN.md). Upstream's `sigma` is the noise fraction of a stage endpoint; within a stage, upstream
moves its ratio r from 1 (start) to 0 (end). Here the local time u = 1 - r runs from 0 (stage start) to 1 (stage end)
and the global time t from 0 (noise) to 1 (data). Stage 0 is the coarsest. Pure tensor maths: no `bench` import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TRAIN_TIMESTEPS = 1000  # upstream num_train_timesteps: grid of nominal sigmas, local ratios and global timesteps
GAMMA = 1 / 3  # upstream scheduler_gamma: block noise has within-block correlation -gamma
BLOCK = 2  # each stage doubles the resolution; block noise lives on the 2x2 blocks of one coarse pixel


def down(x: Tensor) -> Tensor:
    """2x2 average pooling (equal to upstream's bilinear x0.5 resize for even sizes)."""
    return F.avg_pool2d(x, BLOCK)


def up(x: Tensor) -> Tensor:
    """Nearest-neighbour x2 (upstream's upsampling of clean latents and of the stage end point)."""
    return F.interpolate(x, scale_factor=BLOCK, mode="nearest")


def data_pyramid(x: Tensor, stages: int) -> list[Tensor]:
    """Clean targets per stage, coarsest first: x_k = Down^(K-1-k)(x)."""
    levels = [x]
    for _ in range(stages - 1):
        levels.append(down(levels[-1]))
    return levels[::-1]


def noise_pyramid(eps: Tensor, stages: int) -> list[Tensor]:
    """Noise per stage from ONE full-size N(0, I) draw, coarsest first: n_(k-1) = 2 Down(n_k) (unit variance)."""
    levels = [eps]
    for _ in range(stages - 1):
        levels.append(BLOCK * down(levels[-1]))
    return levels[::-1]


def jump_coefficients(nominal_sigma: float, gamma: float) -> tuple[float, float, float]:
    """(a, b, corrected start sigma) of a stage jump; nominal_sigma is the end sigma of the previous stage.

    With e = 1 - nominal_sigma and c = sqrt(1 + 1/gamma): a = 1 / (c (1 - e) + e), b = a (1 - e) / sqrt(gamma),
    corrected sigma = 1 - a e. Then a Up(end) + b * block_noise has the training start point's law (ORIGIN.md).
    """
    e = 1.0 - nominal_sigma
    c = math.sqrt(1.0 + 1.0 / gamma)
    a = 1.0 / (c * (1.0 - e) + e)
    return a, a * (1.0 - e) / math.sqrt(gamma), 1.0 - a * e


def block_noise(z: Tensor, gamma: float = GAMMA) -> Tensor:
    """Map standard normal z [..., H, W] to block noise: unit variance, correlation -gamma inside each 2x2 block.

    Covariance (1 + gamma) I - gamma 11^T = (1 + gamma)(I - P) + (1 - 3 gamma) P with P the block-mean projector,
    so n = sqrt(1 + gamma) (z - Pz) + sqrt(1 - 3 gamma) Pz. Deterministic in z, hence per-sample seeds hold.
    At gamma = 1/3 every block sums to zero.
    """
    if not 0.0 < gamma <= 1.0 / 3.0:
        raise ValueError(f"block noise needs 0 < gamma <= 1/3 (a valid 2x2 covariance), got {gamma}")
    mean = up(down(z))
    return math.sqrt(1.0 + gamma) * (z - mean) + math.sqrt(max(0.0, 1.0 - 3.0 * gamma)) * mean


@dataclass(frozen=True)
class PyramidSchedule:
    """Per-stage sigmas (noise fractions), jump coefficients and global-time windows, stage 0 coarsest."""

    stages: int
    gamma: float
    train_timesteps: int
    nominal_start: tuple[float, ...]  # upstream ori_start_sigmas
    start: tuple[float, ...]  # upstream start_sigmas (corrected for k > 0; 1 for stage 0)
    end: tuple[float, ...]  # upstream end_sigmas (0 on the last stage)
    jumps: tuple[tuple[float, float], ...]  # (a, b) entering stage k; (1, 0) for stage 0
    windows: tuple[tuple[float, float], ...]  # global t at u = 0 and at u = 1 of each stage

    def global_time(self, stage: int, u: Tensor) -> Tensor:
        """Global time fed to the network for local time u of a stage (upstream timesteps_per_stage, mapped)."""
        lo, hi = self.windows[stage]
        return lo + u * (hi - lo)

    def train_times(self, uniform: Tensor) -> Tensor:
        """Local training times from U[0, 1) draws, on upstream's grid: u = floor(N U) / N in {0, ..., 1 - 1/N}."""
        n = self.train_timesteps
        return (uniform * n).floor().clamp(0, n - 1) / n

    def sample_grid(self, steps: int, kind: str = "upstream") -> list[float]:
        """Local times of a stage's Euler steps: `steps` evaluations, steps + 1 points ending at u = 1.

        upstream: ratios linspace(1, 1/N, steps) then 0 (set_timesteps), i.e. steps - 1 equal steps and a final
        step of 1/N; uniform: linspace(0, 1, steps + 1).
        """
        if kind == "uniform":
            return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
        if kind != "upstream":
            raise ValueError(f"unknown time grid '{kind}'; choose upstream or uniform")
        ratios = torch.linspace(1.0, 1.0 / self.train_timesteps, steps, dtype=torch.float64).tolist()
        return [1.0 - r for r in ratios] + [1.0]

    def endpoints(
        self, stage: int, noise: Tensor, clean: Tensor, clean_coarser: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Training start and end points of a stage (METHODS.md section 3)."""
        s, e = self.start[stage], self.end[stage]
        start = noise if stage == 0 else s * noise + (1.0 - s) * up(clean_coarser)
        end = clean if stage == self.stages - 1 else e * noise + (1.0 - e) * clean
        return start, end

    def renoise(self, stage: int, x_end: Tensor, z: Tensor) -> Tensor:
        """Stage jump: a Up(x) + b block_noise(z), with z ~ N(0, I) at the new stage's size."""
        a, b = self.jumps[stage]
        return a * up(x_end) + b * block_noise(z, self.gamma)


def shifted_sigmas(train_timesteps: int, shift: float) -> list[float]:
    """Upstream init_sigmas: sigma_i = (N - i) / N for i < N, with the SD3 shift s sigma / (1 + (s - 1) sigma)."""
    n = train_timesteps
    base = [(n - i) / n for i in range(n)]
    return [shift * s / (1.0 + (shift - 1.0) * s) for s in base]


def make_schedule(
    stages: int, gamma: float = GAMMA, shift: float = 1.0, train_timesteps: int = TRAIN_TIMESTEPS
) -> PyramidSchedule:
    """Upstream init_sigmas_for_each_stage with stage_range = [0, 1/K, ..., 1], in float64."""
    if stages < 1 or train_timesteps < 1:
        raise ValueError(f"need stages >= 1 and train_timesteps >= 1, got {stages} and {train_timesteps}")
    if not 0.0 < gamma <= 1.0 / 3.0:
        raise ValueError(f"gamma must lie in (0, 1/3], got {gamma}")
    n = train_timesteps
    sigmas = shifted_sigmas(n, shift)
    bounds = [i / stages for i in range(stages + 1)]
    nominal, start, end, jumps = [], [], [], []
    for k in range(stages):
        i0, i1 = max(int(bounds[k] * n), 0), min(int(bounds[k + 1] * n), n)
        nominal.append(sigmas[i0])
        end.append(sigmas[i1] if i1 < n else 0.0)
        if k == 0:
            start.append(sigmas[i0])
            jumps.append((1.0, 0.0))
        else:
            a, b, corrected = jump_coefficients(sigmas[i0], gamma)
            start.append(corrected)
            jumps.append((a, b))
    # Each stage gets a share of the global timestep axis proportional to its flow length (start - end sigma).
    lengths = [s - e for s, e in zip(start, end, strict=True)]
    total = sum(lengths)
    windows = []
    for k in range(stages):
        r0 = 0.0 if k == 0 else sum(lengths[:k]) / total
        r1 = 1.0 if k == stages - 1 else sum(lengths[: k + 1]) / total
        # upstream: timestep_max = timesteps[int(r0 N)], timestep_min = timesteps[min(int(r1 N), N - 1)];
        # our t = 1 - timestep / N.
        windows.append((1.0 - sigmas[int(r0 * n)], 1.0 - sigmas[min(int(r1 * n), n - 1)]))
    return PyramidSchedule(stages, gamma, n, tuple(nominal), tuple(start), tuple(end), tuple(jumps), tuple(windows))
