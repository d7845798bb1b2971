"""Pyramidal Flow adapter: one shared DiT over K resolution stages through the bench contract (METHODS.md 3).

Training splits the batch evenly over the stages (sample i -> stage i mod K, upstream's column layout) and runs the
shared network once per stage at that stage's size. Sampling integrates each stage in its local time and jumps
between stages by nearest upsampling, rescaling and block noise drawn through `randn_like`.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from baselines.pyramidal_flow.config import PyramidalFlowConfig
from baselines.pyramidal_flow.schedule import PyramidSchedule, data_pyramid, make_schedule, noise_pyramid
from bench.errors import BenchError
from bench.interface import FlopCall, GenerativeModel, LossDraws, RandnLike, SampleOutput, SampleSpec
from bench.solvers import Velocity, guided, integrate, split_steps
from models.layers import DiT, sincos_pos_embed_2d
from models.sizes import BackboneConfig

TIME_GRIDS = ("upstream", "uniform")


def stage_call(stage: int) -> str:
    """FlopCall / nfe_by_call name of a stage's network call."""
    return f"stage{stage}"


class StageDiT(DiT):
    """The shared DiT over any stage's grid: DiT's forward, with fixed 2D sin-cos positions computed on the input's
    own patch grid. Positions of the known stage grids are cached; other grids are computed on the fly.
    """

    def __init__(
        self,
        backbone: BackboneConfig,
        in_channels: int,
        stage_sizes: list[tuple[int, int]],
        num_classes: int = 0,
        class_dropout: float = 0.1,
        time_scale: float = 1.0,
    ) -> None:
        full = stage_sizes[-1]
        super().__init__(
            backbone, in_channels, full, num_classes=num_classes, class_dropout=class_dropout, time_scale=time_scale
        )
        self.hidden = backbone.dims()[1]
        for h, w in stage_sizes:
            gh, gw = h // self.patch, w // self.patch
            self.register_buffer(
                self._pos_name(gh, gw), sincos_pos_embed_2d(self.hidden, gh, gw)[None], persistent=False
            )

    @staticmethod
    def _pos_name(gh: int, gw: int) -> str:
        return f"pos_embed_{gh}x{gw}"

    def positions(self, gh: int, gw: int, like: Tensor) -> Tensor:
        """Positions on the input's own patch grid (DiT.forward adds them in the input's dtype, as for DiT/LFM)."""
        cached = getattr(self, self._pos_name(gh, gw), None)
        pos = cached if cached is not None else sincos_pos_embed_2d(self.hidden, gh, gw)[None]
        return pos.to(device=like.device, dtype=like.dtype)


class PyramidalFlow(GenerativeModel):
    def __init__(self, cfg: PyramidalFlowConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> None:
        super().__init__()
        check_config(cfg, latent_shape)
        c, h, w = latent_shape
        self.cfg, self.latent_shape, self.num_classes = cfg, latent_shape, num_classes
        self.schedule: PyramidSchedule = make_schedule(cfg.stages, cfg.gamma, cfg.shift, cfg.train_timesteps)
        k = cfg.stages
        self.stage_sizes = [(h >> (k - 1 - s), w >> (k - 1 - s)) for s in range(k)]  # coarsest first
        self.net = StageDiT(cfg.backbone, c, self.stage_sizes, num_classes, cfg.class_dropout, cfg.time_scale)

    def stage_tokens(self, stage: int) -> int:
        h, w = self.stage_sizes[stage]
        return h * w // self.cfg.backbone.patch**2

    def loss_draws(self, x: Tensor, y: Tensor | None) -> LossDraws:
        """Full-resolution noise (the pyramid's every level comes from it), a uniform time per sample, and label
        dropout for the whole batch (each stage's rows take theirs)."""
        eps = torch.randn_like(x)
        return {"eps": eps, "u": torch.rand(x.shape[0], device=x.device), **self.net.y_embedder.dropout_draws(y)}

    def loss(self, x: Tensor, y: Tensor | None, *, draws: LossDraws | None = None) -> Tensor:
        """Per-sample MSE of v = end - start on each sample's stage (sample i trains stage i mod K).

        Stage k's samples are the strided slice k::K: a view with a shape known from B alone, so no host sync and
        no data-dependent shape (a `nonzero()` index synced every stage and broke a compiled graph at each one)."""
        k_stages = self.cfg.stages
        b = x.shape[0]
        d = self.loss_draws(x, y) if draws is None else draws
        y = self.net.y_embedder.drop_labels(y, d)
        clean = data_pyramid(x, k_stages)
        noise = noise_pyramid(d["eps"], k_stages)
        u = self.schedule.train_times(d["u"])
        losses = torch.zeros(b, device=x.device, dtype=torch.float32)
        for k in range(min(k_stages, b)):
            rows = slice(k, None, k_stages)
            coarser = clean[k - 1][rows] if k > 0 else None
            start, end = self.schedule.endpoints(k, noise[k][rows], clean[k][rows], coarser)
            uk = u[rows].view(-1, 1, 1, 1)
            x_u = (1 - uk) * start + uk * end
            v = self.net(x_u, self.schedule.global_time(k, u[rows]), y[rows] if y is not None else None)
            losses[rows] = (v.float() - (end - start).float()).pow(2).mean(dim=(1, 2, 3))
        return losses

    def stage_steps(self, spec: SampleSpec) -> list[int]:
        """Per-stage step counts: spec.stage_steps if given, else spec.steps split evenly (largest remainder)."""
        k = self.cfg.stages
        if spec.stage_steps is not None:
            if len(spec.stage_steps) != k or min(spec.stage_steps) < 1:
                raise BenchError(
                    f"stage_steps must give {k} positive step counts, one per stage; got {spec.stage_steps}."
                )
            return list(spec.stage_steps)
        if spec.steps < k:
            raise BenchError(f"Pyramidal Flow needs at least one step per stage ({k}), got steps={spec.steps}.")
        return split_steps(spec.steps, [1.0] * k)

    def stage_velocity(self, stage: int, y: Tensor | None, guidance: float) -> Velocity:
        """Velocity in the stage's local time u, with CFG on every stage."""

        def network(x: Tensor, u: Tensor, labels: Tensor | None) -> Tensor:
            return self.net(x, self.schedule.global_time(stage, u), labels)

        return guided(network, y, guidance, self.num_classes)

    @torch.no_grad()
    def sample(self, noise: Tensor, y: Tensor | None, spec: SampleSpec, randn_like: RandnLike) -> SampleOutput:
        if spec.solver not in ("euler", "heun", "dopri5"):
            raise self.sample_unsupported(f"the '{spec.solver}' solver")
        steps = self.stage_steps(spec)
        x = noise_pyramid(noise, self.cfg.stages)[0]  # upstream: full-size noise, bilinear x0.5 and x2 per level
        nfe_by_call: dict[str, int] = {}
        for k, n_steps in enumerate(steps):
            if k > 0:
                z = randn_like(torch.empty(x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3], device=x.device))
                x = self.schedule.renoise(k, x, z.to(x.dtype))
            velocity = self.stage_velocity(k, y, spec.guidance)
            if spec.solver == "euler" and self.cfg.time_grid == "upstream":
                x, nfe = euler_on_grid(velocity, x, self.schedule.sample_grid(n_steps, "upstream"))
            else:
                x, nfe = integrate(velocity, x, 0.0, 1.0, spec.solver, n_steps, spec.atol, spec.rtol)
            nfe_by_call[stage_call(k)] = nfe
        return SampleOutput(latents=x, nfe=sum(nfe_by_call.values()), nfe_by_call=nfe_by_call)

    def flop_trace(self, spec: SampleSpec, nfe_by_call: dict[str, int] | None = None) -> list[FlopCall]:
        """One call per stage at that stage's size and token count, counted by its NFE."""
        if nfe_by_call is not None:
            counts = [nfe_by_call[stage_call(k)] for k in range(self.cfg.stages)]
        elif spec.solver == "dopri5":
            raise self.adaptive_needs_measurement()
        else:
            counts = [n * (2 if spec.solver == "heun" else 1) for n in self.stage_steps(spec)]
        cfg_batch = 2 if self.num_classes and spec.guidance not in (0.0, 1.0) else 1
        note = "CFG: conditional and unconditional halves in one batch-2 call" if cfg_batch == 2 else ""
        p, c = self.device, self.latent_shape[0]
        calls = []
        for k, (h, w) in enumerate(self.stage_sizes):
            x = torch.zeros(cfg_batch, c, h, w, device=p)
            t = torch.zeros(cfg_batch, device=p)
            y = torch.zeros(cfg_batch, dtype=torch.long, device=p) if self.num_classes else None
            calls.append(FlopCall(stage_call(k), self.net, (x, t, y), float(counts[k]), self.stage_tokens(k), note))
        return calls


def euler_on_grid(velocity: Velocity, x: Tensor, grid: list[float]) -> tuple[Tensor, int]:
    """Euler steps over the given local times (one velocity evaluation per step)."""
    for ua, ub in itertools.pairwise(grid):
        u = torch.full((x.shape[0],), ua, device=x.device, dtype=torch.float32)
        x = x + (ub - ua) * velocity(x, u)
    return x, len(grid) - 1


def check_config(cfg: PyramidalFlowConfig, latent_shape: tuple[int, int, int]) -> None:
    """One clear sentence for a configuration this family cannot build."""
    _, h, w = latent_shape
    factor = cfg.backbone.patch * 2 ** (cfg.stages - 1)
    if cfg.stages < 1:
        raise BenchError(f"Pyramidal Flow needs at least one stage, got stages={cfg.stages}.")
    if h % factor or w % factor:
        raise BenchError(
            f"Latent size {h}x{w} is not divisible by patch x 2^(stages-1) = {factor} "
            f"(patch {cfg.backbone.patch}, {cfg.stages} stages)."
        )
    if not 0.0 < cfg.gamma <= 1.0 / 3.0:
        raise BenchError(f"Block-noise gamma must lie in (0, 1/3], got {cfg.gamma}.")
    if cfg.time_grid not in TIME_GRIDS:
        raise BenchError(f"Unknown time_grid '{cfg.time_grid}'; choose upstream or uniform.")
    if cfg.train_timesteps < 1 or cfg.shift <= 0:
        raise BenchError(f"Need train_timesteps >= 1 and shift > 0, got {cfg.train_timesteps} and {cfg.shift}.")


def build(cfg: PyramidalFlowConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> PyramidalFlow:
    return PyramidalFlow(cfg, latent_shape, num_classes)
