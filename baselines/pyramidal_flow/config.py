"""Pyramidal Flow configuration and presets (torch-free). METHODS.md section 3 / jy0205/Pyramid-Flow (ORIGIN.md)."""

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
    with_time_scale,
)
from models.sizes import BackboneConfig

UPSTREAM_GAMMA = 1 / 3  # Pyramid-Flow scheduler_gamma: block-noise correlation -1/3
UPSTREAM_TRAIN_TIMESTEPS = 1000  # Pyramid-Flow num_train_timesteps
REFERENCE_STAGE_STEPS = (45, 45)  # LapFlow paper's Pyramidal Flow baseline at 256 px: Euler, NFE 90


@dataclass(frozen=True)
class PyramidalFlowConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("L", 2))
    stages: int = 2  # resolution stages, each doubling the size: 2 at 256 px, 3 at 512/1024 px
    gamma: float = UPSTREAM_GAMMA  # block noise: unit variance, within-2x2-block correlation -gamma (0 < gamma <= 1/3)
    shift: float = 1.0  # SD3 timestep shift of the nominal sigmas (upstream timestep_shift default 1.0)
    train_timesteps: int = UPSTREAM_TRAIN_TIMESTEPS  # upstream grid of sigmas, training ratios and timesteps
    time_grid: str = "upstream"  # Euler grid per stage: upstream (ratios linspace(1, 1/N, n) then 0) | uniform
    time_scale: float = 1.0  # global t in [0, 1] fed to DiT's sinusoidal embedding as is (as LFM; METHODS 0)
    class_dropout: float = 0.1  # label dropout for CFG (class-conditional data only)


def _celebahq(res: int) -> dict:
    # Backbone and optimiser as LFM's CelebA-HQ recipe (the paper compares at equal backbone); Euler 45 + 45 at 256.
    stages = 2 if res == 256 else 3
    sample: dict = {"solver": "euler", "steps": 90}
    if res == 256:
        sample["stage_steps"] = list(REFERENCE_STAGE_STEPS)
    return {
        "model": {"backbone": {"size": "L", "patch": 2}, "stages": stages},
        "data": {"dataset": "celebahq", "res": res, "autoencoder": "sd-vae-ft-mse"},
        "train": {"batch_size": 32, "lr": 2e-4, "weight_decay": 0.0, "lr_schedule": "constant"},
        "sample": sample,
    }


def _imagenet(size: str) -> dict:
    return {
        "model": {"backbone": {"size": size, "patch": 2}, "stages": 2},
        "data": {"dataset": "imagenet", "res": 256, "autoencoder": "sd-vae-ft-ema", "num_classes": 1000},
        "train": {"batch_size": 256, "lr": 1e-4, "weight_decay": 0.0},
        "sample": {
            "solver": "euler",
            "steps": 90,
            "stage_steps": list(REFERENCE_STAGE_STEPS),
            "guidance": 1.5 if size == "B" else 1.0,
        },
    }


PRESETS: dict[str, dict] = {
    "pyramidal-flow-celebahq256-l2": _celebahq(256),
    "pyramidal-flow-celebahq512-l2": _celebahq(512),
    "pyramidal-flow-celebahq1024-l2": _celebahq(1024),
    "pyramidal-flow-imagenet256-xl2": _imagenet("XL"),
    "pyramidal-flow-imagenet256-b2": _imagenet("B"),
    # Mini benchmark (as lfm-celebahq128-mini): two stages of 16 and 64 tokens, Euler 25 + 25 steps.
    "pyramidal-flow-celebahq128-mini": {
        "model": {"backbone": dict(MINI_BACKBONE), "stages": 2},
        "data": dict(MINI_DATA),
        "train": dict(MINI_TRAIN),
        "sample": {"solver": "euler", "steps": MINI_STEPS},
    },
    # CPU demo/tests: pixel space, 32 px, two stages of 16 and 64 tokens.
    "pyramidal-flow-tiny": {
        "model": {"backbone": TINY_BACKBONE, "stages": 2},
        "data": {"dataset": "synthetic", "res": 32, "autoencoder": "pixel"},
        "train": TINY_TRAIN,
        "sample": {"solver": "euler", "steps": 20},
    },
}
PRESETS["pyramidal-flow-celebahq128-mini-ts1000"] = with_time_scale(PRESETS["pyramidal-flow-celebahq128-mini"])
PRESETS["pyramidal-flow-imagenette-tiny"] = imagenette_tiny(PRESETS["pyramidal-flow-tiny"])
PRESETS["pyramidal-flow-celebahq256-mini"] = mini_at_256(PRESETS["pyramidal-flow-celebahq128-mini"])
PRESETS["pyramidal-flow-imagenette128-mini"] = mini_imagenette(PRESETS["pyramidal-flow-celebahq128-mini"])
