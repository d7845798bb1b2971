"""THE training loop for every family (DESIGN.md): AdamW, EMA, LR schedule, clipping, bf16 autocast on CUDA,
gradient accumulation, length in images seen, torchrun DDP, auto-resume, SIGTERM checkpoints, stats.jsonl, grids.

Determinism: the data order is a function of (seed, epoch) only, and model randomness uses the per-rank global RNG
whose state is checkpointed, so N steps straight equal N/2 + resume + N/2.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bench.checkpoint import (
    CONFIG_FILE,
    TrainState,
    checked_resume_point,
    load_checkpoint,
    restore_rng,
    rng_snapshot,
    save_checkpoint,
)
from bench.compiling import CompileMeter
from bench.config import RunConfig, TrainConfig, dump, load_run_config, to_dict
from bench.dist import DistInfo, all_reduce_mean, barrier
from bench.errors import BenchError
from bench.interface import GenerativeModel
from bench.runtime import configure_numerics
from bench.stop import StopFlag
from bench.train_log import TrainLogger, crossed
from bench.train_step import LossModule, check_graph_layout, compile_loss, compile_note, guarded_step, make_optimizer

if TYPE_CHECKING:
    from bench.datasets.latents import LatentDataset

# Fields that may change between a run and its resumption (length, cadence); anything else must match.
RESUMABLE_FIELDS = {
    "total_images",
    "max_seconds",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "sample_every",
    "grid_size",
}


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    interrupted: bool
    last_loss: float


def lr_at(cfg: RunConfig, images_seen: int) -> float:
    t = cfg.train
    warm = min(1.0, (images_seen + 1) / t.warmup_images) if t.warmup_images > 0 else 1.0
    progress = min(1.0, images_seen / max(1, t.total_images))
    if t.lr_schedule == "constant":
        decay = 1.0
    elif t.lr_schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    elif t.lr_schedule == "linear":
        decay = 1.0 - progress
    else:
        raise BenchError(f"Unknown lr_schedule '{t.lr_schedule}'; choose constant, cosine or linear.")
    return t.lr * warm * decay


def batch_indices(seed: int, step: int, global_batch: int, n: int) -> tuple[Tensor, Tensor]:
    """Indices and flip flags of the global batch at `step`: epoch-wise permutations seeded by (seed, epoch)."""
    positions = torch.arange(step * global_batch, (step + 1) * global_batch)
    epochs, offsets = positions // n, positions % n
    idx = torch.empty_like(positions)
    flips = torch.empty(global_batch, dtype=torch.bool)
    for epoch in epochs.unique().tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm, flip = torch.randperm(n, generator=g), torch.rand(n, generator=g) < 0.5
        sel = epochs == epoch
        idx[sel], flips[sel] = perm[offsets[sel]], flip[perm[offsets[sel]]]
    return idx, flips


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: refuse to resume a different one (length/cadence may change)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    old, new = to_dict(load_run_config(path)), to_dict(cfg)
    for section in (old, new):
        section["train"] = {k: v for k, v in section["train"].items() if k not in RESUMABLE_FIELDS}
    if old != new:
        diff = sorted(
            f"{s}.{k}" for s in new if isinstance(new[s], dict) for k in new[s] if old.get(s, {}).get(k) != new[s][k]
        ) or sorted(k for k in new if old.get(k) != new[k])
        raise BenchError(
            f"Run directory '{run_dir}' holds a run with a different config ({', '.join(diff[:4])}); "
            "use --name for a new run."
        )


# Called at evaluation points (images seen) with the train state and the EMA model; its time is not training time.
PointHook = Callable[[TrainState, nn.Module], None]


def train(
    cfg: RunConfig,
    run_dir: Path,
    dist_info: DistInfo,
    data_root: Path | None,
    cache_dir: Path,
    progress: bool = True,
    points: Sequence[int] = (),
    on_point: PointHook | None = None,
) -> TrainResult:
    """Train `cfg` in `run_dir` (resuming its last checkpoint); `on_point` runs after the step that reaches each of
    `points` (images seen), with the training clock paused, e.g. to sample and score the EMA mid-run."""
    t = cfg.train
    device, rank, world = dist_info.device, dist_info.rank, dist_info.world
    micro, accum = t.layout(world)
    if t.compile:
        check_graph_layout(t.compile_mode, device, world)
    numerics = configure_numerics(device, t.precision)
    _claim_run_dir(run_dir, cfg, dist_info)
    data = _load_data(cfg, data_root, cache_dir, dist_info, progress)
    model, ema, optimizer, state = _build_and_resume(cfg, data, run_dir, dist_info)
    eager_module = _loss_module(model, dist_info)
    meter = CompileMeter(cache_dir) if t.compile else None  # a fresh dynamo state: bench.compiling says why
    loss_module = compile_loss(eager_module, mode=t.compile_mode, device=device) if t.compile else eager_module

    logger = TrainLogger(run_dir, cfg, dist_info, state, progress, numerics)
    if t.compile and (note := compile_note(t.compile_mode, device)):
        logger.event("compile_note", reason=note)
    clock = _Budget(t.max_seconds, state, device)
    ledger = _Ledger(state, t, logger)
    with StopFlag() as stop:
        while state.images_seen < t.total_images and not stop.stop and not clock.spent():
            idx, flips = batch_indices(cfg.seed, state.step, t.batch_size, len(data))
            lr = lr_at(cfg, state.images_seen)
            for group in optimizer.param_groups:
                group["lr"] = lr
            mine = slice(rank * accum * micro, (rank + 1) * accum * micro)  # this rank's share of the global batch

            shards = list(zip(idx[mine].split(micro), flips[mine].split(micro), strict=True))
            try:
                loss_module, (loss_sum, grad_norm, finite) = guarded_step(
                    loss_module, eager_module, model, ema, optimizer, data, shards, accum, t, state.step, device,
                    world, lambda reason: logger.event("compile_fallback", reason=reason),
                )  # fmt: skip
            except BaseException:
                with suppress(Exception):
                    ledger.settle()  # the step before still gets its row
                raise
            ledger.push(_Outcome(all_reduce_mean(loss_sum), grad_norm, finite, lr))  # books the step before
            state.step += 1
            state.images_seen += t.batch_size
            at_point = on_point is not None and state.images_seen in points
            at_checkpoint = crossed(state.images_seen, t.batch_size, t.checkpoint_every)
            at_grid = bool(t.sample_every and t.grid_size) and crossed(state.images_seen, t.batch_size, t.sample_every)
            if at_point or at_checkpoint or at_grid or not ledger.deferred:  # the same on every rank
                ledger.settle()
            clock.tick()
            if at_point and meter is not None:
                meter.report(logger.event)  # the records written at this point say what compiled so far
            if at_point and on_point is not None:
                with clock.paused():
                    on_point(state, ema)
            if at_checkpoint:
                _checkpoint(run_dir, model, ema, optimizer, state, cfg, dist_info)
            if dist_info.is_main and at_grid:
                write_grid(ema, cfg, run_dir, state.images_seen, device)
        if ledger.deferred:  # the last step, still on the device
            ledger.settle()
            clock.tick()
    if meter is not None:
        meter.close(logger.event)
    _checkpoint(run_dir, model, ema, optimizer, state, cfg, dist_info)
    if dist_info.is_main and not stop.stop and t.grid_size:
        write_grid(ema, cfg, run_dir, state.images_seen, device)
    logger.close()
    return TrainResult(run_dir, state, stop.stop, ledger.last_loss)


def _claim_run_dir(run_dir: Path, cfg: RunConfig, dist_info: DistInfo) -> None:
    """The run directory holds this config (a different one is refused); its config.yaml is written first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        check_run_dir(run_dir, cfg)
        (run_dir / CONFIG_FILE).write_text(dump(cfg))
    barrier()


def _load_data(
    cfg: RunConfig, data_root: Path | None, cache_dir: Path, dist_info: DistInfo, progress: bool
) -> LatentDataset:
    """The training latents; rank 0 prepares them (verifies, caches) first, the other ranks then read its cache."""
    from bench.data import load_training_data

    if not dist_info.is_main:
        barrier()
    data = load_training_data(cfg.data, data_root, cache_dir, device="cpu", progress=progress)
    if dist_info.is_main:
        barrier()
    return data


def _build_and_resume(
    cfg: RunConfig, data: LatentDataset, run_dir: Path, dist_info: DistInfo
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, TrainState]:
    """Model, EMA and optimizer (identical initial weights on every rank), restored from the newest intact
    checkpoint with each rank's RNG state, so N steps straight equal N/2 + resume + N/2."""
    from bench.registry import MODELS

    torch.manual_seed(cfg.seed)
    model = MODELS.load(cfg.family)(cfg.model, tuple(data.latents.shape[1:]), cfg.data.num_classes)
    model = model.to(dist_info.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = make_optimizer(model, cfg.train, dist_info.device)
    state, rngs = TrainState(), []
    ckpt = checked_resume_point(run_dir, set_aside=dist_info.is_main)  # a corrupt newest one is named, skipped
    if ckpt is not None:
        state, rngs = load_checkpoint(ckpt, model, ema, optimizer)
    torch.manual_seed(cfg.seed * 1000 + dist_info.rank + 1)
    if dist_info.rank < len(rngs):
        restore_rng(rngs[dist_info.rank])
    return model, ema, optimizer, state


def _loss_module(model: nn.Module, dist_info: DistInfo) -> nn.Module:
    """The family's loss as a module; under DDP wrapped so gradients are averaged over ranks."""
    module: nn.Module = LossModule(model)
    if dist_info.world > 1:
        device = dist_info.device
        module = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(model, "may_skip_parameters", False),
        )
    return module


@dataclass
class _Outcome:
    """One step as THE step returned it (bench.train_step.train_step): on its device path the values are still
    tensors on the device, `finite` a 0-dim bool tensor; on its synchronous path `finite` is a bool."""

    loss: Tensor  # mean over ranks
    grad_norm: Tensor
    finite: bool | Tensor
    lr: float

    def read(self) -> tuple[float, float, bool]:
        """(loss, gradient norm, finite) on the host: one copy from the device (float32 values exactly, in float64)."""
        if not torch.is_tensor(self.finite):
            return float(self.loss), float(self.grad_norm), bool(self.finite)
        values = torch.stack([self.loss.double(), self.grad_norm.double(), self.finite.double()]).tolist()
        return values[0], values[1], values[2] == 1.0


class _Ledger:
    """Books every step's outcome in order: its non-finite count (training stops with an error past
    train.max_nonfinite) and its stats row. A synchronous step is booked at once. A device-path step (fused AdamW on
    GPUs) is read back only once the next step is queued, so the device always has a step ahead of it and the host
    never waits on the step it just queued: the count, the row and the stop then come one step late. That is the
    lag of train.max_nonfinite: the step after the one that exceeds it has already run when training stops (with
    the same count and message; nothing of it is checkpointed). Before a checkpoint, an evaluation point or a grid,
    and at the end, the loop settles the ledger, so those always see every step booked."""

    def __init__(self, state: TrainState, t: TrainConfig, logger: TrainLogger) -> None:
        self.state, self.t, self.logger = state, t, logger
        self.pending: _Outcome | None = None
        self.last_loss = float("nan")

    def push(self, outcome: _Outcome) -> None:
        """Called once `outcome`'s step is queued, before the loop counts it in the state: books the step before
        it (the state is still as that step left it) and keeps this one pending."""
        self.settle()
        self.pending = outcome

    @property
    def deferred(self) -> bool:
        """Whether the pending step is still on the device (else the loop books it at once, as it always did)."""
        return self.pending is not None and torch.is_tensor(self.pending.finite)

    def settle(self) -> None:
        """Books the pending step, if any (the loop has counted it in the state by now)."""
        outcome, self.pending = self.pending, None
        if outcome is None:
            return
        loss, grad_norm, finite = outcome.read()
        if not finite:
            self.state.nonfinite_skipped += 1
            if self.state.nonfinite_skipped > self.t.max_nonfinite:
                raise BenchError(
                    f"Training stopped: {self.state.nonfinite_skipped} non-finite steps "
                    f"(limit train.max_nonfinite = {self.t.max_nonfinite}); lower the learning rate."
                )
        self.last_loss = loss
        self.logger.step(loss, grad_norm, outcome.lr, finite)


class _Budget:
    """train.max_seconds: wall-clock seconds of the training loop, summed over resumes (TrainState.train_seconds).

    Every step's outcome is read back from the device (see _Ledger: on the device path once the next step is queued),
    so this clock measures device time, behind by at most the step in flight; checkpoints or grids written inside
    the loop count too. Under DDP the ranks stop together, once any rank has spent it (that vote is a collective read
    on the host every step); one process decides on the host alone.
    """

    def __init__(self, max_seconds: float, state: TrainState, device: torch.device) -> None:
        self.max_seconds, self.state, self.device = max_seconds, state, device
        self.base, self.start = state.train_seconds, time.perf_counter()

    def tick(self) -> None:
        self.state.train_seconds = self.base + time.perf_counter() - self.start

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside (evaluation at a point) is not charged to the training clock."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - tic

    def spent(self) -> bool:
        if self.max_seconds <= 0:
            return False
        over = self.state.train_seconds >= self.max_seconds
        if not dist.is_initialized():
            return over
        return bool(all_reduce_mean(torch.tensor(float(over), device=self.device)) > 0)


def _checkpoint(
    run_dir: Path,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    cfg: RunConfig,
    dist_info: DistInfo,
) -> None:
    snap = rng_snapshot()
    snaps = [snap]
    if dist.is_initialized():
        snaps = [None] * dist_info.world
        dist.all_gather_object(snaps, snap)
    if dist_info.is_main:
        save_checkpoint(run_dir, model, ema, optimizer, state, cfg, snaps, cfg.train.keep_checkpoints)
    barrier()


def write_grid(model: GenerativeModel, cfg: RunConfig, run_dir: Path, images_seen: int, device: torch.device) -> Path:
    """Sample seeds 0..grid_size-1 with the EMA weights and write samples/grid-<images>.png."""
    from bench.autoencoders import load_autoencoder
    from bench.sample import atomic_write_image, generate, image_grid

    ae = load_autoencoder(cfg.data.autoencoder, device=device, path=cfg.data.autoencoder_path)
    n = cfg.train.grid_size
    batches = list(generate(model, range(n), cfg.sample, n, cfg.train.precision, ae))
    path = run_dir / "samples" / f"grid-{images_seen:010d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_image(image_grid(torch.cat([b.images for b in batches])), path)
    return path
