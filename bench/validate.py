"""Up-front checks of a resolved config, so bad input fails in one sentence before any work or file is written."""

from __future__ import annotations

import torch

from bench.config import RunConfig
from bench.errors import BenchError


def validate_run_config(cfg: RunConfig) -> tuple[int, int, int]:
    """Check names, the resolution against the autoencoder and the model (patch, pyramid factors); return the
    latent shape. The model is built on the meta device: its constructor's checks run without allocating weights."""
    from bench.autoencoders import get_spec, latent_shape, resolve_weights
    from bench.registry import AUTOENCODERS, DATASETS, MODELS

    DATASETS.check(cfg.data.dataset)
    spec = get_spec(AUTOENCODERS.check(cfg.data.autoencoder))
    if cfg.data.res <= 0:
        raise BenchError(f"Resolution must be positive, got {cfg.data.res}.")
    shape = latent_shape(cfg.data.autoencoder, cfg.data.res)
    build = MODELS.load(cfg.family)
    try:
        with torch.device("meta"):
            build(cfg.model, shape, cfg.data.num_classes)
    except (ValueError, AssertionError) as exc:
        raise BenchError(f"Model '{cfg.family}' cannot be built at {cfg.data.res} px: {exc}.") from None
    if spec.kind != "identity":
        resolve_weights(spec, cfg.data.autoencoder_path)  # missing weights: one sentence naming the folder
    return shape
