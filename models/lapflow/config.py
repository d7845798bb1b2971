"""LapFlow configuration and presets (torch-free). The method: METHODS.md section 1 (arXiv 2602.19461).

Paper presets are the shared recipes of the matching LFM presets (models/presets_common.py: same backbone,
autoencoder, optimiser and sampler), so a LapFlow-vs-LFM comparison changes only the method. The paper's best
CelebA-HQ numbers use EQ-VAE; here the default stays sd-vae-ft-mse like LFM (fair default) and
`--set data.autoencoder=eq-vae` is the option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    with_model,
    with_time_scale,
    with_train,
)
from models.sizes import BackboneConfig

PATHS = ("linear", "gvp")
MASKS = ("causal", "none", "self")
ATTENTION_IMPLS = ("prefix", "masked")
STAGE_SAMPLINGS = ("uniform", "stratified")
STAGE_TIMES = ("active", "segment")  # a stage's training times: its finest scale's active interval, or its segment
POSITIONS = ("own", "aligned")  # where a scale's sin-cos positions live: own grid (METHODS.md) or the finest's
MAX_SCALES = 4  # the paper's ablation range (1..4 scales)
TWO_SCALE_MAX_LATENT = 32  # paper: 2 scales at 256 px (32x32 SD-VAE latents), 3 scales at 512 and 1024 px


@dataclass(frozen=True)
class LapFlowConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("L", 2))
    num_scales: int = 0  # S; 0 = by latent side (2 for side <= 32, else 3); S = 1 is LFM
    critical_times: tuple[float, ...] = ()  # (T_{S-1}, ..., T_1), increasing; () = evenly spaced k/S
    path: str = "linear"  # linear | gvp (ablation)
    mask: str = "causal"  # block mask of the global attention: causal | none | self (ablations)
    attention: str = "prefix"  # prefix (exact, unmasked SDPA per scale) | masked (boolean-mask SDPA reference)
    separate_networks: bool = False  # ablation: one full network per scale instead of one MoT
    curriculum_images: int = 0  # > 0: coarse-to-fine curriculum, one finer stage unlocked every this many images
    # uniform: one stage per micro-batch, drawn uniformly (METHODS.md); stratified (ablation): the micro-batches of
    # one optimizer step cycle through the available stages in random order, so every expert is updated every step
    stage_sampling: str = "uniform"
    # active: stage s trains at t ~ U[T_{s+1}, 1], the whole interval its finest scale is active in (METHODS.md);
    # segment (ablation): t ~ U[T_{s+1}, T_s], the sampler's segment in which exactly scales s..S-1 run (T_0 = 1),
    # stages drawn in proportion to their segments' lengths, so t is uniform on [0, 1] as in LFM. With the causal
    # mask a coarse-only stage at t > T_1 only repeats the coarse half of a finer stage's loss, and under `active`
    # the coarse-only segment the sampler runs gets half of LFM's training density at those times.
    stage_times: str = "active"
    # own: each scale's sin-cos positions on its own token grid (METHODS.md); aligned (ablation): on the finest
    # scale's grid, a coarse token at the centre of the fine cells it covers, so positions match across scales
    positions: str = "own"
    time_scale: float = 1.0  # t in [0, 1] fed to DiT's sinusoidal embedding as is (same as LFM)
    class_dropout: float = 0.1  # label dropout for CFG (class-conditional data only)


def resolve_num_scales(cfg: LapFlowConfig, latent_side: int) -> int:
    """The configured number of scales, or the paper default for this latent side."""
    if cfg.num_scales:
        return cfg.num_scales
    return 2 if latent_side <= TWO_SCALE_MAX_LATENT else 3


def scales_of(model: Mapping[str, Any], latent_side: int) -> int:
    """The number of scales of a config given as a dict (a result record's `model` section): the registry's hook."""
    return int(model.get("num_scales", 0) or 0) or resolve_num_scales(LapFlowConfig(), latent_side)


def stratified_multiple(cfg: LapFlowConfig, num_scales: int) -> int:
    """What an optimizer step's micro-batch count must be a multiple of under stratified stage sampling: the number
    of stages, or with a curriculum every stage count it passes through (1..S), so no unlock can break the layout."""
    if cfg.stage_sampling != "stratified":
        return 1
    return math.lcm(*range(1, num_scales + 1)) if cfg.curriculum_images > 0 else num_scales


def default_critical_times(num_scales: int) -> tuple[float, ...]:
    """Evenly spaced (1/S, ..., (S-1)/S): the paper's T_1 = 0.5 for S = 2 and (1/3, 2/3) for S = 3."""
    return tuple(k / num_scales for k in range(1, num_scales))


def resolve_critical_times(cfg: LapFlowConfig, num_scales: int) -> tuple[float, ...]:
    return tuple(cfg.critical_times) or default_critical_times(num_scales)


MINI = mini_flow_preset()  # the mini benchmark's flow preset (LFM's): 64 fine + 16 coarse tokens at 2 scales
MINI_STAGE_MICRO_BATCH = 128  # the stage-sampling ablation: 2 micro-batches (one per stage) per step of 256


PRESETS: dict[str, dict] = {
    "lapflow-celebahq256-l2": with_model(celebahq_recipe(256), {"num_scales": 2}),
    "lapflow-celebahq512-l2": with_model(celebahq_recipe(512), {"num_scales": 3}),
    "lapflow-celebahq1024-l2": with_model(celebahq_recipe(1024), {"num_scales": 3}),
    "lapflow-imagenet256-xl2": with_model(imagenet_recipe("XL"), {"num_scales": 2}),
    "lapflow-imagenet256-b2": with_model(imagenet_recipe("B"), {"num_scales": 2}),
    # Mini benchmark: LFM's mini preset with 2 scales (64 fine + 16 coarse tokens); the mask ablations beside it.
    "lapflow-celebahq128-mini": with_model(MINI, {"num_scales": 2}),
    "lapflow-celebahq128-mini-mask-none": with_model(MINI, {"num_scales": 2, "mask": "none"}),
    "lapflow-celebahq128-mini-mask-self": with_model(MINI, {"num_scales": 2, "mask": "self"}),
    # Critical-time and number-of-scales ablations (METHODS.md section 5); 3 scales: 16, 8 and 4 latent px per side.
    "lapflow-celebahq128-mini-t1-0.3": with_model(MINI, {"num_scales": 2, "critical_times": [0.3]}),
    "lapflow-celebahq128-mini-t1-0.7": with_model(MINI, {"num_scales": 2, "critical_times": [0.7]}),
    "lapflow-celebahq128-mini-scales-1": with_model(MINI, {"num_scales": 1}),
    "lapflow-celebahq128-mini-scales-3": with_model(MINI, {"num_scales": 3}),
    # Stage-sampling ablation (issue #14 item 8): the step of 256 as 2 micro-batches of 128, stages drawn uniformly
    # per micro-batch (the control: accumulation alone) or stratified (one micro-batch per stage every step).
    "lapflow-celebahq128-mini-mb128": with_train(
        with_model(MINI, {"num_scales": 2}), {"micro_batch": MINI_STAGE_MICRO_BATCH}
    ),
    "lapflow-celebahq128-mini-stratified": with_train(
        with_model(MINI, {"num_scales": 2, "stage_sampling": "stratified"}), {"micro_batch": MINI_STAGE_MICRO_BATCH}
    ),
    # Stage-time ablation: each stage trains on its own sampler segment, stages drawn by segment length (t ~ U[0, 1]).
    "lapflow-celebahq128-mini-segment": with_model(MINI, {"num_scales": 2, "stage_times": "segment"}),
    # Positional-code ablation: every scale's positions on the finest grid (coarse (i, j) at fine (2i + 0.5, 2j + 0.5)).
    "lapflow-celebahq128-mini-aligned": with_model(MINI, {"num_scales": 2, "positions": "aligned"}),
    # CPU demo/tests: pixel space, 32 px; 64 fine + 16 coarse tokens.
    "lapflow-tiny": {
        "model": {"backbone": dict(TINY_BACKBONE), "num_scales": 2},
        "data": {"dataset": "synthetic", "res": 32, "autoencoder": "pixel"},
        "train": dict(TINY_TRAIN),
        "sample": {"solver": "euler", "steps": 20},
    },
}
PRESETS["lapflow-celebahq128-mini-ts1000"] = with_time_scale(PRESETS["lapflow-celebahq128-mini"])
for _suffix, _lr in MINI_LR_ABLATION.items():  # learning-rate ablation
    PRESETS[f"lapflow-celebahq128-mini-{_suffix}"] = with_train(PRESETS["lapflow-celebahq128-mini"], {"lr": _lr})
PRESETS["lapflow-imagenette-tiny"] = imagenette_tiny(PRESETS["lapflow-tiny"])
# Class-conditional mini benchmark on Imagenette: the CelebA-HQ mini preset with 10 classes and CFG.
PRESETS["lapflow-celebahq256-mini"] = mini_at_256(PRESETS["lapflow-celebahq128-mini"])
PRESETS["lapflow-imagenette128-mini"] = mini_imagenette(PRESETS["lapflow-celebahq128-mini"])
