"""Where data, caches and weights live: read from the environment (the CLI's global options set the same values)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE_DIR = "./.cache/bench"


def data_root() -> Path | None:
    """`BENCH_DATA_ROOT`, or None: data sets are then found only through `data.path` (synthetic needs neither)."""
    value = os.environ.get("BENCH_DATA_ROOT", "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """`BENCH_CACHE_DIR`, default ./.cache/bench (prepared images and cached latents)."""
    return Path(os.environ.get("BENCH_CACHE_DIR", "").strip() or DEFAULT_CACHE_DIR).expanduser()


def compile_cache_dir(cache: Path | None = None) -> Path:
    """`BENCH_COMPILE_CACHE_DIR`, default <cache folder>/torch-compile: torch.compile's on-disk caches (FX graphs,
    compiled forwards and backwards, Triton kernels), shared by every run and command that uses the cache folder."""
    value = os.environ.get("BENCH_COMPILE_CACHE_DIR", "").strip()
    return Path(value).expanduser() if value else (cache if cache is not None else cache_dir()) / "torch-compile"


def weights_root() -> Path | None:
    """`BENCH_WEIGHTS_ROOT`: one diffusers folder per autoencoder name, e.g. $BENCH_WEIGHTS_ROOT/taesd."""
    value = os.environ.get("BENCH_WEIGHTS_ROOT", "").strip()
    return Path(value).expanduser() if value else None


def results_dir() -> Path:
    """`BENCH_RESULTS_DIR` (the CLI's --results-dir), default ./results: committed result records."""
    return Path(os.environ.get("BENCH_RESULTS_DIR", "").strip() or "results").expanduser()


def runs_dir() -> Path:
    """`BENCH_RUNS_DIR`, default ./runs: run directories (checkpoints, stats, samples; git-ignored)."""
    return Path(os.environ.get("BENCH_RUNS_DIR", "").strip() or "runs").expanduser()


def device_name() -> str:
    """`BENCH_DEVICE` (the CLI's --device): auto | cpu | cuda | cuda:N."""
    return os.environ.get("BENCH_DEVICE", "").strip() or "auto"


def check_writable_dir(path: Path, what: str) -> Path:
    """Fail in one sentence, before any work, when `path` cannot become a writable folder; creates nothing.

    A folder that exists must accept a file (probed with a temporary file, so it holds for root and read-only
    mounts alike); a folder that does not exist yet must have a writable nearest existing parent folder.
    """
    import tempfile

    from bench.errors import BenchError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BenchError(f"The {what} '{path}' is a file, not a folder; name a folder.")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BenchError(f"The {what} '{path}' cannot be created: '{parent}' is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".bench-write-check-")
    except OSError as exc:
        raise BenchError(f"The {what} '{path}' is not writable ({exc.strerror} in '{parent}').") from None
    os.close(fd)
    os.unlink(probe)
    return path
