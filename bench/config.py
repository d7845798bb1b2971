"""Frozen typed configs, presets and their precedence.

Precedence: family defaults < preset < `--config file.yaml` < CLI flags / `--set key=value`.
Every override is type-checked against the dataclass fields; unknown keys are refused with a close match.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.interface import SampleSpec


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"  # synthetic | celebahq | imagenet (registry)
    res: int = 256  # image resolution (square)
    autoencoder: str = "sd-vae-ft-mse"  # registry name, or a local folder via `autoencoder_path`
    autoencoder_path: str = ""  # optional local weights folder overriding BENCH_WEIGHTS_ROOT / hub id
    path: str = ""  # dataset folder; empty: found under the data root by dataset name
    split: str = "train"  # imagenet-style data sets: sub-folder holding the class folders ("" for none)
    num_classes: int = 0  # 0 = unconditional; class-conditional data sets set it from their class list
    flip: bool = True  # horizontal flip augmentation
    synthetic_size: int = 2048  # images the synthetic data set generates
    latent_cache: bool = True  # encode once and reuse (non-pixel autoencoders)


@dataclass(frozen=True)
class TrainConfig:
    total_images: int = 1_000_000  # training length in images seen (never epochs)
    batch_size: int = 32  # global batch (all processes, all accumulation steps)
    micro_batch: int = 0  # per-process forward batch; 0 = batch_size / world size (no accumulation)
    lr: float = 2e-4  # LFM reference: AdamW 2e-4, weight decay 0, constant
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"  # constant | cosine | linear
    warmup_images: int = 0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay min(ema_decay, (1 + step) / (10 + step)): short runs; off = the papers' EMA
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    compile_mode: str = "default"  # with compile: default | reduce-overhead (CUDA graphs) | max-autotune-no-cudagraphs
    checkpoint_every: int = 50_000  # images between checkpoints
    keep_checkpoints: int = 2
    log_every: int = 1_000  # images between stats.jsonl rows
    sample_every: int = 100_000  # images between sample grids; 0 = only at the end
    grid_size: int = 16  # samples in a grid; 0 = no grids
    # Non-finite steps skipped before training stops with an error. On GPUs (fused AdamW: THE step skips on the
    # device) each step is read back one step late, so the step after the one exceeding it has run by then.
    max_nonfinite: int = 20
    max_seconds: float = 0.0  # > 0: also stop after this many seconds of training steps (summed over resumes)

    def layout(self, world: int) -> tuple[int, int]:
        """(micro-batch per process, micro-batches per optimizer step and process) of the global batch on `world`
        processes; a batch that does not split so is refused in one sentence."""
        micro = self.micro_batch or self.batch_size // world
        if micro <= 0 or self.batch_size % (world * micro):
            raise BenchError(
                f"batch_size {self.batch_size} is not divisible by {world} process(es) x micro_batch {micro}."
            )
        return micro, self.batch_size // (world * micro)


@dataclass(frozen=True)
class RunConfig:
    family: str
    model: Any  # the family's frozen config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleSpec = field(default_factory=SampleSpec)
    preset: str = ""
    seed: int = 0
    name: str = ""  # run directory name; empty: the preset, or "<family>-<dataset><res>"

    @property
    def run_name(self) -> str:
        return self.name or self.preset or f"{self.family}-{self.data.dataset}{self.data.res}"


# ----------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON dumps."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one value against a type hint; one clear sentence on mismatch."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise BenchError(f"Config key '{key}' expects a mapping, got {value!r}.")
        return from_dict(hint, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except BenchError as exc:
                errors.append(str(exc))
        raise BenchError(errors[0] if errors else f"Config key '{key}' got an invalid value {value!r}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise BenchError(f"Config key '{key}' expects {len(args)} values, got {len(value)}.")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise BenchError(f"Config key '{key}' expects {getattr(hint, '__name__', hint)}, got {value!r}.")


def from_dict(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise BenchError(unknown_key_message(prefix + key, [prefix + n for n in names]))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def unknown_key_message(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown config key '{key}'.{hint}"


def merge(base: dict, override: dict) -> dict:
    """Deep-merge nested override dicts (the override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(assignment: str) -> dict:
    """'train.lr=1e-4' -> {'train': {'lr': 0.0001}} (values parsed as YAML scalars/lists)."""
    if "=" not in assignment:
        raise BenchError(f"--set expects key=value, got '{assignment}'.")
    key, raw = assignment.split("=", 1)
    if not key.strip() or any(not part for part in key.strip().split(".")):
        raise BenchError(f"--set expects key=value with a dotted key such as train.lr, got '{assignment}'.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise BenchError(f"--set {key}: the value '{raw}' is not a valid YAML scalar or list.") from None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"Config file '{p}' is a folder; name a YAML file.")
    if not p.is_file():
        raise BenchError(f"Config file '{p}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise BenchError(f"Config file '{p}' is not a text (UTF-8 YAML) file.") from None
    except OSError as exc:
        raise BenchError(f"Config file '{p}' cannot be read ({exc.strerror}).") from None
    except yaml.YAMLError as exc:
        raise BenchError(f"Config file '{p}' is not valid YAML ({str(exc).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise BenchError(f"Config file '{p}' must hold a mapping at the top level.")
    return data


# ----------------------------------------------------------------------------------------------------------------
# resolve


def resolve(
    family: str | None = None,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[dict] | None = None,
) -> RunConfig:
    """Build the RunConfig from defaults < preset < config file < overrides (CLI flags, then --set)."""
    from bench import registry
    from bench.registry import MODEL_CONFIGS, MODELS
    from bench.registry import preset as lookup_preset

    layers: list[dict] = []
    if preset:
        preset_family, preset_values = lookup_preset(preset)
        if family and family != preset_family:
            raise BenchError(f"Preset '{preset}' belongs to model '{preset_family}', not '{family}'.")
        family = preset_family
        layers.append(merge(preset_values, {"preset": preset}))
    if config_file:
        file_values = load_yaml(config_file)
        file_family = file_values.get("family")
        if family and file_family and file_family != family:
            raise BenchError(f"Config file '{config_file}' is for model '{file_family}', not '{family}'.")
        family = family or file_family
        layers.append(file_values)
    if not family:
        raise BenchError(f"Name a model (e.g. '{registry.reference().name}') or a preset.")
    MODELS.check(family)
    merged: dict = {}
    for layer in [*layers, *(overrides or [])]:
        merged = merge(merged, layer)
    merged["family"] = family
    model_cls = MODEL_CONFIGS.load(family)
    model_values = merged.pop("model", {}) or {}
    cfg_values = {k: v for k, v in merged.items()}
    cfg = from_dict(RunConfig, {**cfg_values, "model": {}})
    return dataclasses.replace(cfg, model=from_dict(model_cls, model_values, prefix="model."))


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig from its dump (e.g. a run directory's config.yaml)."""
    values = dict(values)
    family = values.get("family")
    if not family:
        raise BenchError("The config has no 'family' entry.")
    return resolve(family=family, overrides=[values])


def load_run_config(path: Path) -> RunConfig:
    return config_from_dict(load_yaml(path))
