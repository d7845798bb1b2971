"""LFM configuration and presets (torch-free). Reference recipe: METHODS.md section 2 / VinAIResearch/LFM; the
recipes and the tiny/mini/Imagenette pieces are shared with every family (models/presets_common.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.presets_common import (
    MINI_LR_ABLATION,
    TINY_BACKBONE,
    TINY_TRAIN,
    celebahq_recipe,
    imagenet_recipe,
    imagenette_tiny,
    mini_at_256,
    mini_flow_preset,
    mini_imagenette,
    with_time_scale,
    with_train,
)
from models.sizes import BackboneConfig


@dataclass(frozen=True)
class LFMConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("L", 2))
    sigma_min: float = 0.0  # x_t = t x + (1 - (1 - sigma_min) t) eps; LFM's optional 1e-5
    time_scale: float = 1.0  # t in [0, 1] fed to DiT's sinusoidal embedding as is (LFM/SiT)
    class_dropout: float = 0.1  # label dropout for CFG (class-conditional data only)


PRESETS: dict[str, dict] = {
    "lfm-celebahq256-l2": celebahq_recipe(256),
    "lfm-celebahq512-l2": celebahq_recipe(512),
    "lfm-celebahq1024-l2": celebahq_recipe(1024),
    "lfm-imagenet256-xl2": imagenet_recipe("XL"),
    "lfm-imagenet256-b2": imagenet_recipe("B"),
    "lfm-celebahq128-mini": mini_flow_preset(),
    # CPU demo/tests: pixel space, 32 px, 64 tokens.
    "lfm-tiny": {
        "model": {"backbone": TINY_BACKBONE},
        "data": {"dataset": "synthetic", "res": 32, "autoencoder": "pixel"},
        "train": TINY_TRAIN,
        "sample": {"solver": "euler", "steps": 20},
    },
}
PRESETS["lfm-imagenette-tiny"] = imagenette_tiny(PRESETS["lfm-tiny"])
PRESETS["lfm-celebahq128-mini-ts1000"] = with_time_scale(PRESETS["lfm-celebahq128-mini"])  # time-embedding ablation
for _suffix, _lr in MINI_LR_ABLATION.items():  # learning-rate ablation
    PRESETS[f"lfm-celebahq128-mini-{_suffix}"] = with_train(PRESETS["lfm-celebahq128-mini"], {"lr": _lr})
PRESETS["lfm-celebahq256-mini"] = mini_at_256(PRESETS["lfm-celebahq128-mini"])
PRESETS["lfm-imagenette128-mini"] = mini_imagenette(PRESETS["lfm-celebahq128-mini"])  # class-conditional mini
