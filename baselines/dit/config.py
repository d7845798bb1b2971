"""DiT configuration and presets (torch-free). Reference recipe: METHODS.md section 4 / facebookresearch/DiT."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.presets_common import (
    MINI_BACKBONE,
    MINI_DATA,
    MINI_STEPS,
    MINI_TRAIN,
    TINY_BACKBONE,
    TINY_TRAIN,
    imagenette_tiny,
    mini_at_256,
    mini_imagenette,
)
from models.sizes import BackboneConfig

GUIDE_ALL_CHANNELS = 0  # guidance_channels value: CFG on every latent channel (the standard form)
DIT_RELEASE_GUIDANCE_CHANNELS = 3  # DiT's released forward_with_cfg guides only the first 3 of 4 eps channels


@dataclass(frozen=True)
class DiTConfig:
    """Gaussian diffusion on a DiT backbone. The network sees integer timesteps 0..diffusion_steps-1 (time_scale 1)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("XL", 2))
    diffusion_steps: int = 1000  # training chain length (DDPM)
    beta_start: float = 1e-4  # linear beta schedule (Ho et al.), scaled by 1000 / diffusion_steps like upstream
    beta_end: float = 0.02
    learn_sigma: bool = True  # output 2C channels: eps and the variance interpolation (improved DDPM hybrid loss)
    class_dropout: float = 0.1  # label dropout for CFG (class-conditional data only)
    guidance_channels: int = GUIDE_ALL_CHANNELS  # 0 = all channels; 3 = DiT's released sampler
    clip_denoised: bool = False  # clamp predicted x_0 to [-1, 1] while sampling (DiT's sample_ddp.py: False)
    ddim_eta: float = 0.0  # DDIM stochasticity (0 = deterministic DDIM)


def _imagenet(size: str) -> dict:
    # DiT recipe: AdamW 1e-4, wd 0, batch 256, EMA 0.9999, constant LR, sd-vae-ft-ema, 250 DDPM steps.
    # Guidance: 1.5 for B/2 as LFM's preset (LapFlow paper's B/2 comparison); XL/2 FID-50K without guidance.
    preset = {
        "model": {"backbone": {"size": size, "patch": 2}},
        "data": {"dataset": "imagenet", "res": 256, "autoencoder": "sd-vae-ft-ema", "num_classes": 1000},
        "train": {"batch_size": 256, "lr": 1e-4, "weight_decay": 0.0, "ema_decay": 0.9999, "lr_schedule": "constant"},
        "sample": {"solver": "ddpm", "steps": 250, "guidance": 1.5 if size == "B" else 1.0},
    }
    if size == "XL":
        # DiT paper Table 4: DiT-XL/2 at 400K steps x batch 256 reaches FID-50K 19.47 (the LapFlow table's 19.50).
        preset["train"]["total_images"] = 400_000 * 256
    return preset


PRESETS: dict[str, dict] = {
    "dit-imagenet256-xl2": _imagenet("XL"),
    "dit-imagenet256-b2": _imagenet("B"),
    # Not in the DiT paper: LFM's CelebA-HQ data recipe (sd-vae-ft-mse, batch 32) with DiT's optimiser and sampler.
    "dit-celebahq256-l2": {
        "model": {"backbone": {"size": "L", "patch": 2}},
        "data": {"dataset": "celebahq", "res": 256, "autoencoder": "sd-vae-ft-mse"},
        "train": {"batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "ema_decay": 0.9999, "lr_schedule": "constant"},
        "sample": {"solver": "ddpm", "steps": 250},
    },
    # Mini benchmark (as lfm-celebahq128-mini) with DiT's learning rate; DDPM respaced to the same 50 steps.
    "dit-celebahq128-mini": {
        "model": {"backbone": dict(MINI_BACKBONE)},
        "data": dict(MINI_DATA),
        "train": {**MINI_TRAIN, "lr": 1e-4},
        "sample": {"solver": "ddpm", "steps": MINI_STEPS},
    },
    # CPU demo/tests: pixel space, 32 px, 64 tokens, 25 respaced DDPM steps.
    "dit-tiny": {
        "model": {"backbone": TINY_BACKBONE},
        "data": {"dataset": "synthetic", "res": 32, "autoencoder": "pixel"},
        "train": TINY_TRAIN,
        "sample": {"solver": "ddpm", "steps": 25},
    },
}
PRESETS["dit-imagenette-tiny"] = imagenette_tiny(PRESETS["dit-tiny"])
# Class-conditional mini benchmark: DiT's recipe guidance (1.5 for B/2) on all channels; -cfg3 guides only the first
# 3 of 4 eps channels, as DiT's released sampler does (the option METHODS section 4 names).
PRESETS["dit-celebahq256-mini"] = mini_at_256(PRESETS["dit-celebahq128-mini"])
PRESETS["dit-imagenette128-mini"] = mini_imagenette(PRESETS["dit-celebahq128-mini"])
PRESETS["dit-imagenette128-mini-cfg3"] = mini_imagenette(
    PRESETS["dit-celebahq128-mini"], {"guidance_channels": DIT_RELEASE_GUIDANCE_CHANNELS}
)
