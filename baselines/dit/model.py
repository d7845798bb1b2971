"""DiT adapter: Gaussian diffusion (DDPM, learned variance) on the shared DiT backbone (METHODS.md section 4).

Training uses the full 1000-step chain; sampling uses a respaced chain of `SampleSpec.steps` steps (DDPM ancestral
or DDIM), one network call per step, with the network conditioned on the original integer timesteps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from baselines.dit.config import DiTConfig
from baselines.dit.diffusion import GaussianDiffusion, linear_betas, space_timesteps
from bench.errors import BenchError
from bench.interface import FlopCall, GenerativeModel, LossDraws, RandnLike, SampleOutput, SampleSpec
from models.layers import DiT

NETWORK_CALL = "dit"
SOLVERS = ("ddpm", "ddim")


class DiffusionTransformer(GenerativeModel):
    def __init__(self, cfg: DiTConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> None:
        super().__init__()
        c, h, w = latent_shape
        if h % cfg.backbone.patch or w % cfg.backbone.patch:
            raise BenchError(f"Latent size {h}x{w} is not divisible by the patch size {cfg.backbone.patch}.")
        if not 0 <= cfg.guidance_channels <= c:
            raise BenchError(f"guidance_channels must be 0 (all) or at most the {c} latent channels.")
        if cfg.diffusion_steps < 1:
            raise BenchError(f"diffusion_steps must be at least 1, got {cfg.diffusion_steps}.")
        self.cfg, self.latent_shape, self.num_classes = cfg, latent_shape, num_classes
        self.betas = linear_betas(cfg.diffusion_steps, cfg.beta_start, cfg.beta_end)
        if self.betas.max() > 1.0:
            raise BenchError(f"beta_end {cfg.beta_end} is too large for a {cfg.diffusion_steps}-step chain.")
        # A submodule: its coefficient buffers move with the model, so the (compiled) loss only indexes them.
        self.diffusion = GaussianDiffusion(self.betas, learn_sigma=cfg.learn_sigma)
        self._sampling: dict[int, GaussianDiffusion] = {}  # a plain dict: not submodules, not in the EMA or state
        # The network sees integer timesteps of the training chain (time_scale 1, as DiT).
        self.net = DiT(
            cfg.backbone,
            c,
            (h, w),
            out_channels=2 * c if cfg.learn_sigma else c,
            num_classes=num_classes,
            class_dropout=cfg.class_dropout,
            time_scale=1.0,
        )

    def sampling_process(self, steps: int) -> GaussianDiffusion:
        """The chain respaced to `steps` evenly strided steps (cached), its tables on the model's device."""
        if not 1 <= steps <= self.cfg.diffusion_steps:
            raise BenchError(f"Sampling steps must be between 1 and {self.cfg.diffusion_steps}, got {steps}.")
        if steps not in self._sampling:
            kept = space_timesteps(self.cfg.diffusion_steps, steps)
            self._sampling[steps] = GaussianDiffusion.respaced(self.betas, kept, self.cfg.learn_sigma)
        process, device = self._sampling[steps], self.device
        if process.tables_f32.device != device:
            process.to(device)  # in place, once per move of the model
        return process

    def loss_draws(self, x: Tensor, y: Tensor | None) -> LossDraws:
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x, dtype=torch.float32)
        return {"t": t, "eps": eps, **self.net.y_embedder.dropout_draws(y)}

    def loss(self, x: Tensor, y: Tensor | None, *, draws: LossDraws | None = None) -> Tensor:
        x = x.float()
        d = self.loss_draws(x, y) if draws is None else draws
        t, eps = d["t"], d["eps"]
        x_t = self.diffusion.q_sample(x, t, eps)
        out = self.net(x_t, t, self.net.y_embedder.drop_labels(y, d)).float()
        return self.diffusion.training_losses(out, x, x_t, t, eps)["loss"]

    def network_output(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float) -> Tensor:
        """Network output [B, 2C | C, H, W] in float32, with classifier-free guidance on the eps channels.

        The guided channels are all C eps channels (or the first `guidance_channels`, DiT's released sampler); the
        remaining channels, the variance values included, come from the conditional half as upstream.
        """
        if y is None or not self.num_classes or guidance == 1.0:
            return self.net(x, t, y).float()
        null = torch.full_like(y, self.num_classes)
        cond, uncond = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).float().chunk(2)
        k = self.cfg.guidance_channels or x.shape[1]
        guided = uncond[:, :k] + guidance * (cond[:, :k] - uncond[:, :k])
        return torch.cat([guided, cond[:, k:]], dim=1)

    @torch.no_grad()
    def sample(self, noise: Tensor, y: Tensor | None, spec: SampleSpec, randn_like: RandnLike) -> SampleOutput:
        if spec.solver not in SOLVERS:
            raise self.sample_unsupported(f"the '{spec.solver}' solver (choose ddpm or ddim)")
        process = self.sampling_process(spec.steps)
        stochastic = spec.solver == "ddpm" or self.cfg.ddim_eta > 0
        x = noise.float()
        batch = x.shape[0]
        for i in reversed(range(process.num_timesteps)):
            t = torch.full((batch,), i, dtype=torch.long, device=x.device)
            out = self.network_output(x, process.model_timesteps(t), y, spec.guidance)
            noise_i = randn_like(x) if stochastic and i > 0 else None  # no noise is added at the last step
            if spec.solver == "ddpm":
                x = process.p_sample(out, x, t, noise_i, clip=self.cfg.clip_denoised)
            else:
                x = process.ddim_sample(out, x, t, noise_i, eta=self.cfg.ddim_eta, clip=self.cfg.clip_denoised)
        nfe = process.num_timesteps
        return SampleOutput(latents=x, nfe=nfe, nfe_by_call={NETWORK_CALL: nfe})

    def flop_trace(self, spec: SampleSpec, nfe_by_call: dict[str, int] | None = None) -> list[FlopCall]:
        if spec.solver not in SOLVERS:
            raise self.sample_unsupported(f"the '{spec.solver}' solver (choose ddpm or ddim)")
        nfe = nfe_by_call[NETWORK_CALL] if nfe_by_call is not None else self.sampling_process(spec.steps).num_timesteps
        cfg_batch = 2 if self.num_classes and spec.guidance != 1.0 else 1
        device = self.device
        x = torch.zeros(cfg_batch, *self.latent_shape, device=device)
        t = torch.zeros(cfg_batch, dtype=torch.long, device=device)
        y = torch.zeros(cfg_batch, dtype=torch.long, device=device) if self.num_classes else None
        tokens = self.latent_shape[1] * self.latent_shape[2] // self.cfg.backbone.patch**2
        note = "one call per respaced step"
        if cfg_batch == 2:
            note += "; CFG: conditional and null-class halves in one batch-2 call"
        return [FlopCall(NETWORK_CALL, self.net, (x, t, y), float(nfe), tokens=tokens, note=note)]


def build(cfg: DiTConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> DiffusionTransformer:
    return DiffusionTransformer(cfg, latent_shape, num_classes)
