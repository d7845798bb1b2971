"""Checkpoints: safetensors weights and EMA, optimizer state, JSON state (config, step, RNG states).

Each checkpoint is a folder written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint; the last K are kept. Rerunning the same training command resumes from the newest one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.config import RunConfig, load_run_config, to_dict
from bench.errors import BenchError

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"


@dataclass
class TrainState:
    step: int = 0
    images_seen: int = 0
    nonfinite_skipped: int = 0
    train_seconds: float = 0.0  # wall-clock seconds spent in training steps (train.max_seconds budget)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and not p.suffix)


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def _decode_rng(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_snapshot() -> dict[str, Any]:
    snap: dict[str, Any] = {"torch": _encode_rng(torch.get_rng_state())}
    if torch.cuda.is_available():
        snap["cuda"] = [_encode_rng(s) for s in torch.cuda.get_rng_state_all()]
    return snap


def restore_rng(snap: dict[str, Any]) -> None:
    torch.set_rng_state(_decode_rng(snap["torch"]))
    if "cuda" in snap and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_rng(s) for s in snap["cuda"]])


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    cfg: RunConfig,
    rng_states: list[dict[str, Any]],
    keep: int,
) -> Path:
    """Write step-XXXXXXXX/ atomically; `rng_states` holds one snapshot per process (rank order)."""
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".step-{state.step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_state_dict(model), str(tmp / "model.safetensors"))
    save_file(_state_dict(ema), str(tmp / "ema.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    meta = {
        "step": state.step,
        "images_seen": state.images_seen,
        "nonfinite_skipped": state.nonfinite_skipped,
        "train_seconds": state.train_seconds,
        "config": to_dict(cfg),
        "rng": rng_states,
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path, model: nn.Module, ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Load weights (strict: a mismatched checkpoint is one clear error) and return the state and RNG snapshots."""
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        if ema is not None:
            ema.load_state_dict(load_file(str(path / "ema.safetensors")), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BenchError(f"Checkpoint '{path}' does not match this model's architecture ({first}).") from None
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    meta = json.loads((path / "state.json").read_text())
    state = TrainState(
        meta["step"], meta["images_seen"], meta.get("nonfinite_skipped", 0), meta.get("train_seconds", 0.0)
    )
    return state, meta.get("rng", [])


def load_run(run_dir: Path, weights: str = "ema", device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """The trained model of a run directory (EMA weights by default) and its resolved config."""
    from bench.autoencoders import latent_shape
    from bench.registry import MODELS

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise BenchError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}).")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise BenchError(f"Run directory '{run_dir}' holds no checkpoint yet.")
    if weights not in ("ema", "model"):
        raise BenchError(f"Unknown weights '{weights}'; choose ema or model.")
    cfg = load_run_config(run_dir / CONFIG_FILE)
    model = MODELS.load(cfg.family)(cfg.model, latent_shape(cfg.data.autoencoder, cfg.data.res), cfg.data.num_classes)
    try:
        model.load_state_dict(load_file(str(ckpt / f"{weights}.safetensors")), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BenchError(f"Checkpoint '{ckpt}' does not match the model of its config ({first}).") from None
    return model.to(device).eval(), cfg
