"""LFM adapter: rectified flow on a DiT backbone through the bench contract (METHODS.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from baselines.lfm.config import LFMConfig
from bench.errors import BenchError
from bench.interface import FlopCall, GenerativeModel, LossDraws, RandnLike, SampleOutput, SampleSpec
from bench.solvers import guided, integrate
from models.layers import DiT

NETWORK_CALL = "dit"


class LatentFlowMatching(GenerativeModel):
    def __init__(self, cfg: LFMConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> None:
        super().__init__()
        c, h, w = latent_shape
        if h % cfg.backbone.patch or w % cfg.backbone.patch:
            raise BenchError(f"Latent size {h}x{w} is not divisible by the patch size {cfg.backbone.patch}.")
        self.cfg, self.latent_shape, self.num_classes = cfg, latent_shape, num_classes
        self.net = DiT(
            cfg.backbone, c, (h, w), num_classes=num_classes, class_dropout=cfg.class_dropout, time_scale=cfg.time_scale
        )

    def path(self, x: Tensor, eps: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t and the target velocity u = d x_t / dt (t = 0 noise, t = 1 data)."""
        s = self.cfg.sigma_min
        tb = t.view(-1, *([1] * (x.dim() - 1)))
        return tb * x + (1 - (1 - s) * tb) * eps, x - (1 - s) * eps

    def loss_draws(self, x: Tensor, y: Tensor | None) -> LossDraws:
        eps = torch.randn_like(x)
        return {"eps": eps, "t": torch.rand(x.shape[0], device=x.device), **self.net.y_embedder.dropout_draws(y)}

    def loss(self, x: Tensor, y: Tensor | None, *, draws: LossDraws | None = None) -> Tensor:
        d = self.loss_draws(x, y) if draws is None else draws
        x_t, target = self.path(x, d["eps"], d["t"])
        v = self.net(x_t, d["t"], self.net.y_embedder.drop_labels(y, d))
        return (v.float() - target.float()).pow(2).mean(dim=(1, 2, 3))

    @torch.no_grad()
    def sample(self, noise: Tensor, y: Tensor | None, spec: SampleSpec, randn_like: RandnLike) -> SampleOutput:
        if spec.solver not in ("euler", "heun", "dopri5"):
            raise self.sample_unsupported(f"the '{spec.solver}' solver")
        velocity = guided(self.net, y, spec.guidance, self.num_classes)
        x, nfe = integrate(velocity, noise, 0.0, 1.0, spec.solver, spec.steps, spec.atol, spec.rtol)
        return SampleOutput(latents=x, nfe=nfe, nfe_by_call={NETWORK_CALL: nfe})

    def flop_trace(self, spec: SampleSpec, nfe_by_call: dict[str, int] | None = None) -> list[FlopCall]:
        if nfe_by_call is not None:
            nfe = nfe_by_call[NETWORK_CALL]
        elif spec.solver == "dopri5":
            raise self.adaptive_needs_measurement()
        else:
            nfe = spec.steps * (2 if spec.solver == "heun" else 1)
        cfg_batch = 2 if self.num_classes and spec.guidance not in (0.0, 1.0) else 1
        p = self.device
        x = torch.zeros(cfg_batch, *self.latent_shape, device=p)
        t = torch.zeros(cfg_batch, device=p)
        y = torch.zeros(cfg_batch, dtype=torch.long, device=p) if self.num_classes else None
        tokens = self.latent_shape[1] * self.latent_shape[2] // self.cfg.backbone.patch**2
        note = "CFG: conditional and unconditional halves in one batch-2 call" if cfg_batch == 2 else ""
        return [FlopCall(NETWORK_CALL, self.net, (x, t, y), float(nfe), tokens=tokens, note=note)]


def build(cfg: LFMConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> LatentFlowMatching:
    return LatentFlowMatching(cfg, latent_shape, num_classes)
