"""The contract every family implements (DESIGN.md, "The contract").

The harness (training loop, sampler, metrics) only ever talks to a `GenerativeModel`:
- `loss_draws(x, y)` draws every random number of one loss call, `loss(x, y, draws=...)` returns one loss per sample,
- `sample(noise, y, spec, randn_like)` integrates from noise to latents and reports the measured NFE,
- `flop_trace(spec)` lists each distinct network call with example inputs and how often it runs per sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from bench.errors import BenchError

RandnLike = Callable[[Tensor], Tensor]
"""Draws N(0, I) noise shaped like its argument from per-sample generators (row i from sample i's generator)."""

LossDraws = dict[str, Tensor]
"""The random numbers of one loss call by name (noise, times, label dropout), drawn by `loss_draws` in eager code.
THE training step draws them before the loss module, so a compiled loss holds no RNG op: inductor's scheduler may
run independent RNG calls out of program order (pytorch/pytorch#181136, torch 2.14 included), which changes which
numbers land where even under `fallback_random`; a graph that only reads its draws computes eager's values."""


@dataclass(frozen=True)
class SampleSpec:
    """How to sample. Fields a family does not use are ignored by it; NFE is measured, never derived from these."""

    solver: str = "euler"  # euler | heun | dopri5 (flows); ddpm | ddim (diffusion)
    steps: int = 50  # fixed-step solvers; split across segments/stages by the family
    atol: float = 1e-5  # dopri5 tolerances (LFM reference)
    rtol: float = 1e-5
    guidance: float = 1.0  # classifier-free guidance scale w; 1.0 means no guidance
    critical_times: tuple[float, ...] | None = None  # LapFlow override of the trained (T_{S-1}, ..., T_1)
    stage_steps: tuple[int, ...] | None = None  # Pyramidal Flow per-stage steps (e.g. 45, 45)

    def __post_init__(self) -> None:
        if self.solver not in {"euler", "heun", "dopri5", "ddpm", "ddim"}:
            raise BenchError(f"Unknown solver '{self.solver}'; choose euler, heun, dopri5, ddpm or ddim.")
        if self.steps < 1:
            raise BenchError(f"Sampling needs at least one step, got steps={self.steps}.")


@dataclass
class SampleOutput:
    """Latents at t = 1 (data end) and the number of function evaluations per sample actually made."""

    latents: Tensor
    nfe: int
    nfe_by_call: dict[str, int] = field(default_factory=dict)  # per FlopCall name; sums to nfe


@dataclass
class FlopCall:
    """One distinct network call: `module(*inputs)` at batch 1, made `count` times per generated sample.

    `count` already includes the NFE of that call site; classifier-free guidance that doubles the batch is
    expressed by inputs of batch 2 (and noted in `note`), so per-sample GFLOPs are sum(flops(call) * count).
    """

    name: str
    module: nn.Module
    inputs: tuple
    count: float
    tokens: int = 0  # sequence length of this call (for time-averaged token statistics)
    note: str = ""


class GenerativeModel(nn.Module, ABC):
    """Base class of every family's adapter. Subclasses set `latent_shape` and `num_classes` in __init__."""

    latent_shape: tuple[int, int, int]  # (C, H, W) of what the harness feeds and receives
    num_classes: int  # 0 = unconditional

    @abstractmethod
    def loss_draws(self, x: Tensor, y: Tensor | None) -> LossDraws:
        """Every random number that loss(x, y) uses, from the global RNG in one fixed order (stage-independent)."""

    @abstractmethod
    def loss(self, x: Tensor, y: Tensor | None, *, draws: LossDraws | None = None) -> Tensor:
        """Per-sample training loss [B] on latents x [B, C, H, W], from `draws` (loss_draws(x, y) when None)."""

    @abstractmethod
    def sample(self, noise: Tensor, y: Tensor | None, spec: SampleSpec, randn_like: RandnLike) -> SampleOutput:
        """Generate latents from `noise` (N(0, I), shaped like a batch of latents)."""

    @abstractmethod
    def flop_trace(self, spec: SampleSpec, nfe_by_call: dict[str, int] | None = None) -> list[FlopCall]:
        """Every distinct network call of one sample's generation, with its count.

        Counts come from `nfe_by_call` (a measured `SampleOutput.nfe_by_call`) when given; fixed-step solvers may
        derive them from `spec`; adaptive solvers without measured counts raise `adaptive_needs_measurement`.
        """

    def sample_unsupported(self, what: str) -> BenchError:
        """A clear error for an option this family cannot do; the harness records "n/a"."""
        return BenchError(f"{type(self).__name__} does not support {what}.")

    def adaptive_needs_measurement(self) -> BenchError:
        return BenchError("The NFE of an adaptive solver must be measured: sample once and pass nfe_by_call.")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
