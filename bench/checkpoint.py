"""Checkpoints: safetensors weights and EMA, optimizer state, JSON state (config, step, RNG states).

Each checkpoint is a folder written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint; the last K are kept. Rerunning the same training command resumes from the newest one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.config import RunConfig, load_run_config, to_dict
from bench.errors import BenchError
from bench.io import atomic_write_text

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
    """The newest intact checkpoint (corrupt newer ones are skipped: see resume_point)."""
    return resume_point(run_dir)[0]


STATE_KEYS = ("step", "images_seen")
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "state.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (truncated, empty, bad header), without reading its tensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
    except (OSError, ValueError) as exc:
        return f"{path.name} cannot be read ({exc})"
    if not isinstance(header, dict):
        return f"{path.name} has no valid header ({size} bytes)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        return f"{path.name} is truncated ({size} bytes, its header describes {8 + n + max(ends, default=0)})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """None when the checkpoint folder looks intact, else what is wrong with it (cheap: no tensor is loaded)."""
    import zipfile

    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"state.json is malformed ({exc})"
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in STATE_KEYS):
        return f"state.json lacks {' or '.join(STATE_KEYS)}"
    for name in ("model.safetensors", "ema.safetensors"):
        if (problem := _safetensors_problem(path / name)) is not None:
            return problem
    if not zipfile.is_zipfile(path / "optimizer.pt"):
        return "optimizer.pt is truncated or not a torch file"
    return None


def resume_point(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest intact checkpoint or None, [(newer corrupt checkpoint, what is wrong)] newest first)."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(checkpoint_dirs(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def checked_resume_point(run_dir: Path, set_aside: bool = False) -> Path | None:
    """resume_point, warning (logging) about every corrupt checkpoint skipped; none intact is a BenchError.

    `set_aside` (training) renames each corrupt one to corrupt-step-*, kept for inspection: it no longer counts
    as the newest, so pruning to the last K checkpoints never keeps it in place of an intact one.
    """
    import logging

    path, skipped = resume_point(run_dir)
    if path is None and skipped:
        raise BenchError(
            f"No intact checkpoint in '{run_dir / CHECKPOINT_DIR}' (the newest, '{skipped[0][0].name}', is corrupt: "
            f"{skipped[0][1]}); remove the corrupt ones to start over."
        )
    for bad, problem in skipped:
        moved = ""
        if set_aside:
            target = bad.with_name(f"corrupt-{bad.name}")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(bad, target)
            moved = f", set aside as {target.name}"
        instead = f"using '{path.name}' instead" if path is not None else "no older intact checkpoint"
        logging.getLogger("bench.checkpoint").warning(
            "checkpoint '%s' is corrupt (%s)%s; %s", bad, problem, moved, instead
        )
    return path


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


def truncate_stats(path: Path, images_seen: int) -> int:
    """Cut stats.jsonl back to a resume point: drop rows past `images_seen` and any half-written line.

    Rewritten atomically (temporary file + rename) only when something is dropped; returns the rows dropped.
    """
    if not path.is_file():
        return 0
    text = path.read_text(errors="replace")
    kept, dropped = [], 0
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            row = None
        if isinstance(row, dict) and int(row.get("images", 0)) <= images_seen:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped


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
    except Exception as exc:  # safetensors' own error type: a file damaged beyond what checkpoint_problem sees
        raise BenchError(f"Checkpoint '{path}' cannot be read ({str(exc).splitlines()[0]}).") from None
    if optimizer is not None:
        try:
            opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged zip or pickle: many error types, all mean "unreadable"
            raise BenchError(f"Checkpoint '{path}' has an unreadable optimizer.pt ({exc}).") from None
        optimizer.load_state_dict(opt_state)
    return read_state(path), json.loads((path / "state.json").read_text()).get("rng", [])


def read_state(path: Path) -> TrainState:
    """A checkpoint's progress (step, images seen, non-finite skips, training seconds) without its weights."""
    meta = json.loads((Path(path) / "state.json").read_text())
    return TrainState(
        meta["step"], meta["images_seen"], meta.get("nonfinite_skipped", 0), meta.get("train_seconds", 0.0)
    )


def load_run(run_dir: Path, weights: str = "ema", device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """The trained model of a run directory (EMA weights by default) and its resolved config."""
    from bench.autoencoders import latent_shape
    from bench.registry import MODELS

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise BenchError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}).")
    ckpt = checked_resume_point(run_dir)
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
    if weights == "ema":
        from bench.ema import young_ema_warning

        warning = young_ema_warning(cfg, read_state(ckpt).step)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return model.to(device).eval(), cfg
