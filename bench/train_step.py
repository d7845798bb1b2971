"""THE training step of every family (bench.train's loop and the throughput measurements run the same code): the
loss module DDP wraps, its torch.compile with an eager fallback, the optimizer, and one step over micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from bench.checkpoint import restore_rng, rng_snapshot
from bench.config import TrainConfig
from bench.dist import all_reduce_mean
from bench.ema import ema_decay_at, update_ema
from bench.errors import BenchError
from bench.interface import GenerativeModel, LossDraws
from bench.runtime import autocast

if TYPE_CHECKING:
    from bench.datasets.latents import LatentDataset


class LossModule(nn.Module):
    """Routes forward() to model.loss so DistributedDataParallel hooks the family's own loss. Its random numbers
    arrive drawn (model.loss_draws, in eager code: see LossDraws; a call without them draws inside), and a
    multi-stage family's stage as a Python int drawn outside (see draw_stage), so a compiled loss holds no RNG op and
    one graph per stage."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None, draws: LossDraws | None = None, stage: int | None = None) -> Tensor:
        if stage is None:
            return self.model.loss(x, y, draws=draws)
        return self.model.loss(x, y, stage=stage, draws=draws)  # type: ignore[call-arg]


def draw_stage(model: nn.Module) -> int | None:
    """The stage of the next loss call for a family that draws one per batch (LapFlow: `draw_stage()`), else None.

    Drawn here, in eager Python before the (compiled) loss module, and with the same RNG call the loss would make:
    inside torch.compile the draw's `.item()` broke the graph every step (dynamo on the CPU: a graph before the break
    and one per stage after it); outside it, dynamo sees a constant int and keeps one whole graph per stage."""
    draw = getattr(model, "draw_stage", None)
    return int(draw()) if callable(draw) else None


def plan_stages(model: nn.Module, micro_batches: int) -> None:
    """Announces an optimizer step of `micro_batches` micro-batches to a family that plans its stages per step
    (LapFlow's stratified stage sampling: `plan_stages(n)`); a no-op otherwise, and it draws nothing for uniform
    stages. Called before the step's first draw_stage, so a re-run step (compile fallback) plans afresh."""
    plan = getattr(model, "plan_stages", None)
    if callable(plan):
        plan(micro_batches)


GRAPH_MODES = ("reduce-overhead",)  # the inductor modes of bench.validate.COMPILE_MODES that capture CUDA graphs


def uses_cuda_graphs(mode: str, device: torch.device, backend: str = "inductor") -> bool:
    """Whether THE step's compiled loss replays CUDA graphs: an inductor graph mode on a CUDA device."""
    return backend == "inductor" and mode in GRAPH_MODES and device.type == "cuda"


def compile_note(mode: str, device: torch.device) -> str | None:
    """Why a configured mode runs differently here (recorded beside the run): CUDA graphs need a CUDA device."""
    if mode in GRAPH_MODES and device.type != "cuda":
        return f"compile_mode {mode} captures CUDA graphs, which need a CUDA device: compiled without them on {device}"
    return None


def check_graph_layout(mode: str, device: torch.device, world: int) -> None:
    """CUDA graphs in THE step are supported on one process: DDP's gradient hooks run collectives between the
    compiled backward's graphs, which this suite neither captures nor tests."""
    if uses_cuda_graphs(mode, device) and world > 1:
        raise BenchError(
            f"train.compile_mode {mode} (CUDA graphs) runs on one process only, not with {world} processes; "
            "use train.compile_mode=default under torchrun."
        )


class GraphedLoss(nn.Module):
    """The compiled loss module under CUDA graphs (inductor's cudagraph trees: one recorded graph per stage shape for
    the forward and one for its backward; inputs are copied into the graphs' static buffers on every replay).

    Outputs of a replay live in the graphs' memory pool until the next replay: THE step turns the per-sample loss into
    a fresh mean at once, and train_step keeps accumulated gradients out of the pool (see _own_grads)."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: Tensor, y: Tensor | None, draws: LossDraws | None = None, stage: int | None = None) -> Tensor:
        # Every micro-batch is a new generation of the tree: the previous one's outputs are dead by now (its
        # backward ran, gradients are owned), so nothing live is overwritten by this replay.
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x, y, draws) if stage is None else self.compiled(x, y, draws, stage=stage)


def compile_loss(
    module: nn.Module, backend: str = "inductor", mode: str = "default", device: torch.device | None = None
) -> nn.Module:
    """torch.compile for THE training step in `mode` (bench.validate.COMPILE_MODES). The loss's random numbers arrive
    drawn in eager code (LossDraws), so the graph holds no RNG op and a compiled run sees eager's numbers under the
    same seeds (its loss curve matches within rounding); fallback_random would only matter to an RNG op left inside,
    whose numbers then match eager's only where inductor keeps its program order. torch.compile refuses mode=
    beside options=, so the mode's own inductor options are spelled out. dynamic=False: the shapes of
    one stage never change, so each stage compiles one static graph (and, in graph modes, records one CUDA graph).
    Off CUDA, graph modes compile without graphs (compile_note says so)."""
    device = device or torch.device("cpu")
    options = None
    if backend == "inductor":
        from torch._inductor import list_mode_options

        effective = mode if uses_cuda_graphs(mode, device) or mode not in GRAPH_MODES else "default"
        options = {**list_mode_options(effective, False), "fallback_random": True}
    compiled = torch.compile(module, backend=backend, options=options, dynamic=False)
    return GraphedLoss(compiled) if uses_cuda_graphs(mode, device, backend) else compiled  # type: ignore[return-value]


COMPILER_MODULES = ("torch._dynamo", "torch._inductor", "torch._functorch", "triton")


def compile_failure(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) comes from torch.compile's stack rather than from the model or the data."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.startswith(COMPILER_MODULES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def make_optimizer(model: nn.Module, t: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW of the config; the fused CUDA kernel on GPUs (one launch for all parameters), the default on CPUs."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, **fused)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether THE step can skip a non-finite step on the device, with no host sync: fused Adam and AdamW take
    `optimizer.found_inf` (as torch.amp.GradScaler sets it) into their kernel, which returns at once when it is 1.0,
    and subtract it from the step counts they had just incremented (torch/optim/adam.py, _fused_adam), so params,
    exp_avg, exp_avg_sq and step stay as they were. The foreach and for-loop Adam raise on found_inf, and the EMA's
    device path is bitwise the scalar one for float32 weights only (bench.ema.update_ema): anything else reads the
    non-finite check on the host."""
    groups = optimizer.param_groups
    return (
        isinstance(optimizer, torch.optim.Adam)
        and all(g.get("fused") for g in groups)
        and all(p.dtype == torch.float32 for g in groups for p in g["params"])
        and getattr(optimizer, "found_inf", None) is None
        and getattr(optimizer, "grad_scale", None) is None
    )


def train_step(
    loss_module: nn.Module,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[tuple[Tensor, Tensor | None]],
    accum: int,
    t: TrainConfig,
    step: int,
    device: torch.device,
    world: int = 1,
    stages: list[int] | None = None,
    on_device: bool | None = None,
) -> tuple[Tensor, Tensor, bool | Tensor]:
    """THE training step of every family, for training and for throughput measurements alike: forward and backward
    over `accum` micro-batches (DDP syncs on the last), gradient clipping, a non-finite check (all ranks agree), the
    optimizer step and the EMA update only when finite. Returns (mean loss, gradient norm, finite); `stages`, when
    given, receives each micro-batch's drawn stage.

    The non-finite check runs on the device when the optimizer can skip there (`on_device`, by default
    skips_on_device(optimizer): fused AdamW, i.e. on GPUs): the optimizer and the EMA read the agreed flag as a
    tensor, `finite` comes back as a 0-dim bool tensor and the step never waits for the device, so the host can
    queue the next step while this one runs. Otherwise `finite` is a bool read on the host (the step's one sync).
    Both paths compute the same values bitwise (tests/test_train_device_skip.py). One difference of form: the
    device path runs the optimizer on a skipped step too, so a parameter whose first gradient comes on a skipped
    step gets Adam's initial state (zero moments, step 0) then rather than at its first finite step."""
    loss_sum = torch.zeros((), device=device)
    graphed, owned = isinstance(loss_module, GraphedLoss), set()
    plan_stages(model, accum)
    for k, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device) if y is not None else None
        sync = k == accum - 1 or world == 1
        ctx = loss_module.no_sync() if not sync and hasattr(loss_module, "no_sync") else nullcontext()
        stage = draw_stage(model)
        if stages is not None and stage is not None:
            stages.append(stage)
        draws = model.loss_draws(x, y)  # type: ignore[operator]  # eager, in program order (see LossDraws)
        with ctx, autocast(device, t.precision):
            loss = (loss_module(x, y, draws) if stage is None else loss_module(x, y, draws, stage=stage)).float().mean()
        (loss / accum).backward()
        loss_sum += loss.detach() / accum
        if graphed and k < accum - 1:
            _own_grads(model, owned)
    # A non-finite norm spoils the clipped gradients (a NaN or zero coefficient); zero_grad drops them below, and on
    # such a step nothing that persists (weights, optimizer state, EMA) is touched on either path.
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else 1e30)
    # 1.0 exactly when every rank saw a finite loss and gradient norm (the mean over ranks of each rank's 0/1).
    agreed = all_reduce_mean(torch.stack([loss_sum, grad_norm.float()]).isfinite().all().float())
    decay = ema_decay_at(t.ema_decay, t.ema_warmup, step)
    finite: bool | Tensor
    if on_device is None:
        on_device = skips_on_device(optimizer)
    if on_device:
        finite = agreed == 1
        found_inf = (~finite).float()  # 0.0 or 1.0, float32: what the fused kernel reads
        optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
        update_ema(ema, model, decay, skip=found_inf)
    else:
        finite = bool(agreed == 1)
        if finite:
            optimizer.step()
            update_ema(ema, model, decay)
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, finite


def _own_grads(model: nn.Module, owned: set[int]) -> None:
    """Gradients a graphed backward left in .grad may be the graph's own output memory (AccumulateGrad keeps the
    first gradient it gets): the next micro-batch's replay would overwrite them before they are summed. A copy
    outside the pool, once per parameter and step, keeps eager's sum (first gradient, then += each later one)."""
    for p in model.parameters():
        if p.grad is not None and id(p) not in owned:
            p.grad = p.grad.clone()
            owned.add(id(p))


def guarded_step(
    loss_module: nn.Module,
    eager_module: nn.Module,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: LatentDataset,
    shards: list[tuple[Tensor, Tensor]],
    accum: int,
    t: TrainConfig,
    step: int,
    device: torch.device,
    world: int,
    on_fallback: Callable[[str], None],
) -> tuple[nn.Module, tuple[Tensor, Tensor, bool | Tensor]]:
    """train_step on these micro-batch shards; a torch.compile failure (at any stage shape) falls back to the eager
    module once (`on_fallback` gets the reason, e.g. for a note in stats.jsonl); returns the module for the
    following steps and the step's outcome."""

    def run(module: nn.Module) -> tuple[Tensor, Tensor, bool | Tensor]:
        batches = (data.batch(i, f) for i, f in shards)
        return train_step(module, model, ema, optimizer, batches, accum, t, step, device, world)

    if loss_module is eager_module:
        return loss_module, run(loss_module)
    # The failed attempt drew the step's stages and loss draws before the compiler failed: the eager re-run starts
    # from the same RNG state, so it trains on the numbers that attempt would have used.
    rng = rng_snapshot()
    try:
        return loss_module, run(loss_module)
    except Exception as exc:
        if not compile_failure(exc):
            raise
        restore_rng(rng)
        optimizer.zero_grad(set_to_none=True)
        on_fallback(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        return eager_module, run(eager_module)
