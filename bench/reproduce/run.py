"""`bench reproduce mini-run` (GPU): every model trains for the same GPU-time budget, then samples seeds 0..N-1.

Each model goes through THE training loop (bench.train, stopped by `train.max_seconds`) on the carried latents, then
through the sampling harness (bench.sample.generate, per-sample seeds) with its EMA weights. What comes back (OUT):
  <model>.safetensors  float16 latents [N, C, h, w] and their seeds; the resolved config in the metadata
  mini-run.json        per model: config, images seen, steps, GPU seconds, NFE, sampler, final loss; environment, git
  grid.png             the first samples of each model decoded, one row per model (order: mini-run.json "grid_rows")
Files are written atomically after each model, so a command killed at its time limit still returns finished models.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor

from bench.config import RunConfig
from bench.dist import DistInfo
from bench.errors import BenchError
from bench.interface import GenerativeModel
from bench.io import atomic_write
from bench.reproduce.mini import (
    FORMAT_VERSION,
    GRID_FILE,
    LATENTS_FORMAT,
    MAX_RETURN_FILE_BYTES,
    RUN_FORMAT,
    RUN_SUMMARY,
    Carry,
    check_return_limits,
    code_fingerprint,
    model_presets,
    read_carry,
    sha256_file,
    write_json_atomic,
)

FIRST_OVERHEAD_S = 60.0  # guess of a model's seconds beyond its budget (build, checkpoint, sampling) until measured


@dataclass
class RunOptions:
    carry: Path
    out: Path
    models: list[str]
    budget_s: float
    num_samples: int
    work_dir: Path  # run directories (checkpoints): never under `out`, which travels back
    steps: int = 0  # sampling steps (NFE) for every model; 0 = each preset's
    sample_batch: int = 500
    deadline_s: float = 0.0  # > 0: skip a model that would end later than this many seconds into the command
    limits: bool = True  # enforce the GPU machine's return limits (files, bytes)
    overrides: list[dict] = field(default_factory=list)  # --set overrides applied to every model
    grid_columns: int = 8
    progress: bool = False


def mini_config(carry: Carry, preset: str, name: str, opts: RunOptions) -> RunConfig:
    """The preset, on the carried data (data set, resolution, autoencoder from the carry), with the budget."""
    from bench.config import resolve

    data = carry.data_overrides()
    train = {"max_seconds": float(opts.budget_s), "grid_size": 0}  # grid.png replaces the per-run grids
    base = {"data": data, "train": train, "name": name}
    steps = [{"sample": {"steps": opts.steps}}] if opts.steps else []
    return resolve(preset=preset, overrides=[base, *steps, *opts.overrides])


def run_mini(opts: RunOptions) -> dict:
    """Train and sample every model in turn; returns the summary (also written to OUT/mini-run.json)."""
    from bench.autoencoders import latent_shape
    from bench.dist import init_distributed
    from bench.paths import device_name
    from bench.runtime import environment, git_state
    from bench.validate import validate_run_config

    started = time.perf_counter()
    if opts.budget_s <= 0 or opts.num_samples < 1:
        raise BenchError("mini-run needs --budget-s > 0 and --num-samples >= 1.")
    out, work = opts.out.resolve(), opts.work_dir.resolve()
    if work == out or out in work.parents:
        raise BenchError(f"The work folder '{opts.work_dir}' must lie outside --out (checkpoints must not travel).")
    carry = read_carry(opts.carry)
    cfgs = {name: mini_config(carry, preset, name, opts) for name, preset in model_presets(opts.models).items()}
    if opts.limits:
        check_return_limits(
            list(cfgs), opts.num_samples, latent_shape(carry.manifest["autoencoder"], carry.manifest["res"])
        )
    for cfg in cfgs.values():
        validate_run_config(cfg)  # every model builds (on the meta device) before the first one trains
    info = init_distributed(device_name())
    if info.world > 1:
        raise BenchError("mini-run is one process on one GPU; run it without torchrun.")
    opts.out.mkdir(parents=True, exist_ok=True)
    summary = _new_summary(carry, opts, environment(info.device), {**git_state(), "code_sha256": code_fingerprint()})
    ae = grid_autoencoder(carry, info.device, summary)
    warm_up(info.device)  # CUDA context and library handles: not charged to the first model's budget
    rows: dict[str, Tensor] = {}
    overhead: float | None = None
    for name, cfg in cfgs.items():
        elapsed = time.perf_counter() - started
        need = opts.budget_s + (overhead if overhead is not None else FIRST_OVERHEAD_S)
        if opts.deadline_s and elapsed + need > opts.deadline_s:
            why = f"skipped: {elapsed:.0f} s spent, about {need:.0f} s more needed, deadline {opts.deadline_s:g} s"
            print(f"[{name}] {why}", flush=True)
            summary["skipped"][name] = why
            write_json_atomic(opts.out / RUN_SUMMARY, summary)
            continue
        tic = time.perf_counter()
        entry, first = run_model(name, cfg, opts, info)
        entry["wall_seconds"] = time.perf_counter() - tic
        if ae is not None:
            rows[name] = decode_row(first, ae)
            write_grid(rows, opts.out)
            summary["grid_rows"] = list(rows)
        overhead = max(overhead or 0.0, entry["wall_seconds"] - entry["train"]["train_seconds"])
        summary["models"][name] = entry
        summary["command_seconds"] = time.perf_counter() - started
        write_json_atomic(opts.out / RUN_SUMMARY, summary)
    return summary


def _new_summary(carry: Carry, opts: RunOptions, env: dict, git: dict) -> dict:
    keep = ("dataset", "res", "autoencoder", "weights_hash", "source_hash", "count", "latents", "flip")
    return {
        "format": RUN_FORMAT,
        "version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench", *sys.argv[1:]]) if sys.argv else "",
        "budget_s": float(opts.budget_s),
        "num_samples": opts.num_samples,
        "seeds": {"start": 0, "count": opts.num_samples},
        "carry": {k: carry.manifest.get(k) for k in keep},
        "environment": env,
        "git": git,
        "models": {},
        "skipped": {},
        "grid_rows": [],
    }


def warm_up(device: torch.device) -> None:
    """Initialise the GPU's context, matmul and attention kernels once, before any budget is measured."""
    from bench.runtime import autocast

    if device.type != "cuda":
        return

    x = torch.randn(256, 64, 256, device=device, requires_grad=True)
    with autocast(device, "auto"):
        y = torch.nn.functional.scaled_dot_product_attention(x[None], x[None], x[None]) @ x.transpose(1, 2)
    y.float().sum().backward()
    _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_model(name: str, cfg: RunConfig, opts: RunOptions, info: DistInfo) -> tuple[dict, Tensor]:
    """Train `cfg` for its budget, sample seeds 0..N-1 with the EMA weights, write the latents file."""
    from bench.checkpoint import latest_checkpoint, load_run
    from bench.config import to_dict
    from bench.paths import cache_dir
    from bench.runtime import configure_numerics
    from bench.train import train

    device = info.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_dir = opts.work_dir / name
    resumed = f", resuming {latest_checkpoint(run_dir)}" if latest_checkpoint(run_dir) else ""
    print(f"[{name}] training {cfg.preset} for {opts.budget_s:g} s of device time{resumed}", flush=True)
    result = train(cfg, run_dir, info, None, cache_dir(), progress=opts.progress)
    if result.interrupted:
        raise BenchError(f"mini-run was interrupted while training '{name}'; finished models are in '{opts.out}'.")
    model, _ = load_run(result.run_dir, "ema", device)
    latents, nfe, sample_seconds = sample_seeds(model, cfg, opts.num_samples, opts.sample_batch)
    path = save_samples(latents, name, cfg, nfe, opts.out)
    if opts.limits and path.stat().st_size > MAX_RETURN_FILE_BYTES:
        raise BenchError(f"'{path}' is over the {MAX_RETURN_FILE_BYTES // 2**20} MiB the GPU machine returns per file.")
    state = result.state
    entry = {
        "family": cfg.family,
        "preset": cfg.preset,
        "config": to_dict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "latents_file": path.name,
        "latents_sha256": sha256_file(path),
        "sampling": to_dict(cfg.sample),
        "nfe": nfe,
        "train": {
            "budget_s": float(opts.budget_s),
            "train_seconds": state.train_seconds,
            "images_seen": state.images_seen,
            "steps": state.step,
            "nonfinite_skipped": state.nonfinite_skipped,
            "final_loss": final_loss(result.run_dir, result.last_loss),
        },
        "sample_seconds": sample_seconds,
        "numerics": configure_numerics(device, cfg.train.precision),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(
        f"[{name}] {state.images_seen} images in {state.step} steps ({state.train_seconds:.1f} s), "
        f"loss {entry['train']['final_loss']:.4f}; {opts.num_samples} samples at NFE {nfe} in {sample_seconds:.1f} s",
        flush=True,
    )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return entry, latents[: opts.grid_columns].float()


def sample_seeds(model: GenerativeModel, cfg: RunConfig, n: int, batch_size: int) -> tuple[Tensor, int, float]:
    """(float16 latents of seeds 0..n-1 on the CPU, NFE per sample, device seconds) through the sampling harness."""
    from bench.sample import generate

    device = model.device
    _sync(device)
    tic = time.perf_counter()
    parts, nfes = [], set()
    for batch in generate(model, range(n), cfg.sample, batch_size, cfg.train.precision):
        parts.append(batch.latents.to(torch.float16))
        nfes.add(batch.nfe)
    _sync(device)
    return torch.cat(parts), max(nfes), time.perf_counter() - tic


def final_loss(run_dir: Path, last_step_loss: float) -> float:
    """The mean loss of the last stats.jsonl window (log_every images), else the last step's loss."""
    path = run_dir / "stats.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    losses = [r["loss"] for r in rows if "loss" in r]
    return float(losses[-1]) if losses else float(last_step_loss)


def save_samples(latents: Tensor, name: str, cfg: RunConfig, nfe: int, out: Path) -> Path:
    """OUT/<name>.safetensors: latents (float16) and seeds; format, preset, config and NFE in the metadata."""
    from safetensors.torch import save_file

    from bench.config import to_dict

    path = out / f"{name}.safetensors"
    tensors = {"latents": latents.contiguous(), "seeds": torch.arange(len(latents), dtype=torch.long)}
    meta = {
        "format": LATENTS_FORMAT,
        "version": str(FORMAT_VERSION),
        "name": name,
        "family": cfg.family,
        "preset": cfg.preset,
        "nfe": str(nfe),
        "config": json.dumps(to_dict(cfg)),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))  # 0644: travels elsewhere


def grid_autoencoder(carry: Carry, device: torch.device, summary: dict) -> torch.nn.Module | None:
    """The carried autoencoder for grid.png, or None (noted in the summary) where it cannot load, e.g. no diffusers."""
    from bench.autoencoders import load_autoencoder

    try:
        return load_autoencoder(carry.manifest["autoencoder"], device, str(carry.weights))
    except (BenchError, ImportError) as exc:
        summary["grid_note"] = f"no grid: {exc}"
        print(f"warning: {summary['grid_note']}", flush=True)
        return None


def decode_row(latents: Tensor, ae: torch.nn.Module) -> Tensor:
    """Decode a model's first samples with the carried autoencoder and quantise them once: uint8 [k, H, W, 3]."""
    from bench.sample import quantize

    with torch.inference_mode():
        return quantize(ae.decode(latents.to(next(ae.parameters()).device))).cpu()


def write_grid(rows: dict[str, Tensor], out: Path) -> Path:
    """One row of decoded samples per model (seeds 0..k-1) as OUT/grid.png."""
    from bench.sample import atomic_write_image, image_grid

    columns = max(len(r) for r in rows.values())
    path = out / GRID_FILE
    atomic_write_image(image_grid(torch.cat(list(rows.values())), columns=columns), path)
    return path
