"""Process-level runtime: per-sample noise streams, numerics flags (set per command, recorded), environment."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.interface import RandnLike

REPO_ROOT = Path(__file__).resolve().parents[1]


def per_sample_randn_like(seeds: Sequence[int], device: torch.device | str) -> RandnLike:
    """Noise source where row i always comes from seed i's own stream.

    Draws happen on the CPU in float32 (then move), so a seed gives the same noise on any device, batch size
    or number of processes. Each call continues every stream, so trajectories with renoising stay per-sample.
    """
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def randn_like(like: Tensor) -> Tensor:
        if like.shape[0] != len(generators):
            raise ValueError(f"randn_like got batch {like.shape[0]} for {len(generators)} seeds")
        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(rows).to(device=device, dtype=like.dtype)

    return randn_like


def balanced_labels(seeds: Sequence[int], num_classes: int) -> Tensor | None:
    """Class labels for sampling by seed (seed mod classes): balanced over any contiguous seed range."""
    if num_classes <= 0:
        return None
    return torch.tensor([int(s) % num_classes for s in seeds], dtype=torch.long)


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N; an unknown name or a GPU that is not there is one BenchError sentence."""
    name = name.strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BenchError(f"Unknown device '{name}'; choose {DEVICE_CHOICES}.") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"Device '{name}' is not supported; choose {DEVICE_CHOICES}.")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BenchError(f"Device '{name}' was asked for, but no CUDA GPU is visible here; use --device cpu.")
        if device.index is not None and device.index >= count:
            raise BenchError(f"Device '{name}' does not exist: {count} CUDA GPU(s) are visible (cuda:0..).")
    return device


def configure_numerics(device: torch.device, precision: str = "auto", tf32: bool = True) -> dict[str, object]:
    """Set numerics flags for this command (never at import) and return them for the record."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    dtype = autocast_dtype(device, precision)
    return {
        "precision": precision,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype else "float32",
        "tf32": bool(tf32 and device.type == "cuda"),
    }


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("bf16", "auto"):
        return torch.bfloat16
    raise BenchError(f"Unknown precision '{precision}'; choose auto, fp32 or bf16.")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    dtype = autocast_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@lru_cache(maxsize=1)
def git_state() -> dict[str, object]:
    """Commit and dirty flag of the checkout this code runs from (or 'unknown' outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            != ""
        )
    except (OSError, subprocess.SubprocessError):
        # A copy of the tree without .git (e.g. a lent GPU machine): the launcher passes the state along.
        dirty = os.environ.get("BENCH_GIT_DIRTY")
        return {
            "commit": os.environ.get("BENCH_GIT_COMMIT", "unknown"),
            "dirty": None if dirty is None else dirty == "1",
        }
    return {"commit": commit, "dirty": dirty}


def environment(device: torch.device | None = None) -> dict[str, object]:
    env: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1)
        )
    else:
        env.update(gpu=None)
    return env
