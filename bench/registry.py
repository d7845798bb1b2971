"""Lazy registries: name -> "module:attr". Nothing is imported until a name is loaded.

CLI choices and `bench ls` come from these tables; unknown names get one sentence with the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError


@dataclass(frozen=True)
class Registry:
    kind: str  # "model", "dataset", ... used in messages
    table: dict[str, str]

    def names(self) -> list[str]:
        return sorted(self.table)

    def check(self, name: str) -> str:
        if name in self.table:
            return name
        raise BenchError(unknown_name_message(self.kind, name, self.names()))

    def load(self, name: str) -> Any:
        target = self.table[self.check(name)]
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown {kind} '{name}'; choose one of: {', '.join(choices)}.{hint}"


# Families: the adapter factory `build(model_cfg, latent_shape, num_classes) -> GenerativeModel`.
MODELS = Registry(
    "model",
    {
        "lfm": "baselines.lfm.model:build",
        "lapflow": "models.lapflow.model:build",
        "pyramidal-flow": "baselines.pyramidal_flow.model:build",
        "dit": "baselines.dit.model:build",
    },
)

# Each family's frozen config dataclass (torch-free modules, cheap to import).
MODEL_CONFIGS = Registry(
    "model",
    {
        "lfm": "baselines.lfm.config:LFMConfig",
        "lapflow": "models.lapflow.config:LapFlowConfig",
        "pyramidal-flow": "baselines.pyramidal_flow.config:PyramidalFlowConfig",
        "dit": "baselines.dit.config:DiTConfig",
    },
)

# Each family's presets: a dict {preset name: nested override dict} in the same torch-free config module.
PRESET_TABLES = Registry(
    "model",
    {
        "lfm": "baselines.lfm.config:PRESETS",
        "lapflow": "models.lapflow.config:PRESETS",
        "pyramidal-flow": "baselines.pyramidal_flow.config:PRESETS",
        "dit": "baselines.dit.config:PRESETS",
    },
)

DATASETS = Registry(
    "dataset",
    {
        "synthetic": "bench.data:SyntheticSource",
        "celebahq": "bench.data:FolderSource",
        "imagenet": "bench.data:ClassFolderSource",
    },
)

# Autoencoders: an `AutoencoderSpec` constant each (geometry, scale, weights source); `load_autoencoder` builds it.
AUTOENCODERS = Registry(
    "autoencoder",
    {
        "pixel": "bench.autoencoders:PIXEL",
        "taesd": "bench.autoencoders:TAESD",
        "taesd3": "bench.autoencoders:TAESD3",
        "sd-vae-ft-mse": "bench.autoencoders:SD_VAE_FT_MSE",
        "sd-vae-ft-ema": "bench.autoencoders:SD_VAE_FT_EMA",
        "eq-vae": "bench.autoencoders:EQ_VAE",
    },
)


def all_presets() -> dict[str, tuple[str, dict]]:
    """{preset name: (family, overrides)} over every family."""
    out: dict[str, tuple[str, dict]] = {}
    for family in PRESET_TABLES.names():
        for name, overrides in PRESET_TABLES.load(family).items():
            out[name] = (family, overrides)
    return out


def preset(name: str) -> tuple[str, dict]:
    presets = all_presets()
    if name not in presets:
        raise BenchError(unknown_name_message("preset", name, sorted(presets)))
    return presets[name]
