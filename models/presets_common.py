"""Preset pieces every family shares (torch-free): the paper's training recipes, the tiny CPU pieces, the mini
benchmark's and Imagenette's settings. Each family's config module builds its PRESETS from these, so a comparison
between families changes only the method."""

from __future__ import annotations

import copy


def celebahq_recipe(res: int) -> dict:
    """LFM's CelebA-HQ recipe (METHODS.md section 2): DiT-L/2, SD-VAE ft-mse, AdamW 2e-4, wd 0, batch 32, constant
    LR; dopri5 1e-5."""
    return {
        "model": {"backbone": {"size": "L", "patch": 2}},
        "data": {"dataset": "celebahq", "res": res, "autoencoder": "sd-vae-ft-mse"},
        "train": {"batch_size": 32, "lr": 2e-4, "weight_decay": 0.0, "lr_schedule": "constant"},
        "sample": {"solver": "dopri5", "atol": 1e-5, "rtol": 1e-5},
    }


def imagenet_recipe(size: str) -> dict:
    """LFM's class-conditional ImageNet 256 recipe for a DiT size (guidance 1.5 for B/2)."""
    return {
        "model": {"backbone": {"size": size, "patch": 2}},
        "data": {"dataset": "imagenet", "res": 256, "autoencoder": "sd-vae-ft-ema", "num_classes": 1000},
        "train": {"batch_size": 256, "lr": 1e-4, "weight_decay": 0.0},
        "sample": {"solver": "dopri5", "guidance": 1.5 if size == "B" else 1.0},
    }


def with_model(preset: dict, model: dict | None = None) -> dict:
    """A copy of `preset` with `model` options merged into its model section."""
    out = copy.deepcopy(preset)
    out["model"] = {**out.get("model", {}), **(model or {})}
    return out


TINY_BACKBONE = {"size": "S", "patch": 4, "depth": 4, "hidden": 128, "heads": 4}
TINY_TRAIN = {
    "total_images": 60_000,
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_images": 2_000,
    "ema_decay": 0.999,
    "ema_warmup": True,  # CPU runs of a few hundred steps: without it the EMA is still mostly the initial weights
    "checkpoint_every": 20_000,
    "log_every": 1_024,
    "sample_every": 0,
    "grid_size": 16,
}

# Mini benchmark (`bench reproduce mini-*`, README): CelebA-HQ 5k at 128 px in TAESD latents (4x16x16), DiT-B/2
# (64 tokens), the same budget for every family, 50 sampling steps.
MINI_DATA = {"dataset": "celebahq", "res": 128, "autoencoder": "taesd"}
MINI_BACKBONE = {"size": "B", "patch": 2}
MINI_STEPS = 50  # NFE of every family's mini sampler (flows: Euler steps; DiT: respaced DDPM steps)
MINI_TRAIN = {
    "total_images": 1_000_000_000,  # not the limit: train.max_seconds is
    "max_seconds": 60.0,
    "batch_size": 256,
    "lr": 2e-4,
    "ema_decay": 0.999,  # a run of ~10^3 steps: 0.9999 would still weigh the initial weights heavily
    "ema_warmup": True,  # (added after the first H200 mini-run, which ran without it)
    "checkpoint_every": 0,  # one checkpoint, at the end
    "log_every": 256 * 50,
    "sample_every": 0,
    "grid_size": 16,
}


# Class-conditional mini benchmark (`bench reproduce mini` on an Imagenette carry): the train split's 9,469 images at
# 128 px in TAESD latents with their 10 class labels; backbone, optimiser, budget and sampler as the CelebA-HQ mini
# presets. Guidance 1.5 is the paper's DiT-B/2 CFG comparison (LapFlow 4.12 vs LFM 4.46); label dropout 0.1 (METHODS).
MINI_IMAGENETTE_DATA = {"dataset": "imagenette", "res": 128, "autoencoder": "taesd", "num_classes": 10}
MINI_IMAGENETTE_GUIDANCE = 1.5
MINI_CLASS_DROPOUT = 0.1


def mini_imagenette(preset: dict, model: dict | None = None) -> dict:
    """A family's CelebA-HQ mini preset moved onto Imagenette: its data, label dropout and guidance; `model` merged."""
    out = with_model(preset, {"class_dropout": MINI_CLASS_DROPOUT, **(model or {})})
    out["data"] = dict(MINI_IMAGENETTE_DATA)
    out["sample"] = {**out.get("sample", {}), "guidance": MINI_IMAGENETTE_GUIDANCE}
    return out


def mini_at_256(preset: dict) -> dict:
    """A family's CelebA-HQ 128 px mini preset at 256 px: TAESD latents 4x32x32, the paper's token geometry at B/2
    (256 fine tokens; 64 on the coarse scale or first stage); backbone, optimiser, budget and sampler unchanged."""
    out = copy.deepcopy(preset)
    out["data"] = {**out["data"], "res": 256}
    return out


# Time-embedding ablation (issue #14): t in [0, 1] into DiT's sinusoidal embedding (periods up to 10^4 time units)
# leaves most frequencies nearly constant; x1000 spreads t over them as DiT's integer timesteps do. Flow families only.
MINI_TIME_SCALE = 1000.0


def with_time_scale(preset: dict, scale: float = MINI_TIME_SCALE) -> dict:
    """A copy of a flow family's mini preset whose network sees t * scale."""
    return with_model(preset, {"time_scale": scale})


# Learning-rate ablation (issue #14 item 8): half and twice the mini recipe's AdamW learning rate, for LapFlow and
# LFM (whose ordering the mini benchmark contradicts), suffix -> lr.
MINI_LR_ABLATION = {"lr1e-4": 1e-4, "lr4e-4": 4e-4}


def with_train(preset: dict, train: dict) -> dict:
    """A copy of `preset` with `train` options merged into its train section (e.g. another learning rate)."""
    out = copy.deepcopy(preset)
    out["train"] = {**out.get("train", {}), **train}
    return out


def mini_flow_preset() -> dict:
    """The mini benchmark's flow-matching preset (LFM's; LapFlow adds its model options)."""
    return {
        "model": {"backbone": dict(MINI_BACKBONE)},
        "data": dict(MINI_DATA),
        "train": dict(MINI_TRAIN),
        "sample": {"solver": "euler", "steps": MINI_STEPS},
    }


# Class-conditional CPU runs on Imagenette (10 ImageNet classes, /work/shared/data): the ImageNet 256 setting scaled
# down. TAESD latents of 64 px images are 4x8x8 (SD-VAE latent space, like the paper's); patch 2 gives 16 tokens, so
# 40K images (~4 epochs, 1250 steps) take about 3 minutes on one CPU thread (OMP_NUM_THREADS=1 on a busy machine).
# 1250 steps need a faster EMA than TINY_TRAIN's 0.999. Guidance 2.0 (the paper's B/2 setting uses 1.5).
IMAGENETTE_TINY = {
    "model": {"backbone": {"patch": 2}},
    "data": {"dataset": "imagenet", "res": 64, "autoencoder": "taesd", "num_classes": 10},
    "train": {"total_images": 40_000, "ema_decay": 0.995, "grid_size": 20},
    "sample": {"guidance": 2.0},
}


def imagenette_tiny(tiny: dict) -> dict:
    """A family's `<family>-tiny` preset moved onto Imagenette (IMAGENETTE_TINY's entries win, section by section)."""
    out = copy.deepcopy(tiny)
    for section, values in IMAGENETTE_TINY.items():
        merged = out.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return out
