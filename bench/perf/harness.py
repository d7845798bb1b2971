"""What every performance suite shares: building a preset's model on a device, writing a record, the sampler's
distinct network calls, THE training step as a callable, the GPU's bf16 peak. suites.py measures with these and
profiling.py profiles with them, so neither imports the other."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.config import RunConfig, resolve
from bench.results import run_record, write_record
from bench.runtime import autocast, environment

# Dense bf16 tensor-core peak (vendor datasheets, without sparsity), for model FLOPs utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


# The paper's resolutions with the batch sizes of the attention layouts measured in the method's issue.
LAYOUT_BATCH = {256: 64, 512: 16, 1024: 4}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def record(
    cfg: RunConfig,
    metric: str,
    value: float | None,
    unit: str,
    protocol: dict,
    device: torch.device,
    extra: dict,
    out: Path,
    sampling: dict | None = None,
    note: str = "",
) -> Path:
    """Write one record and print it as one line; `note` says why a value is None (n/a), as Record.note."""
    rec = run_record(
        cfg, metric, value, unit, protocol, environment=environment(device), extra=extra, sampling=sampling or {},
        note=note,
    )  # fmt: skip
    path = write_record(rec, out)
    shown = ("n/a" if value is None else f"{value:.6g}") + f" {unit}" + (f" ({note})" if note else "")
    print(f"{metric} [{protocol['name']}] {cfg.preset} {cfg.data.res}px = {shown}")
    return path


def device_token(device: torch.device) -> str:
    return "" if device.type == "cuda" else f"-{device.type}"


def build(
    preset: str, res: int, device: torch.device, backbone: dict | None = None, **model_overrides: Any
) -> tuple[RunConfig, Any]:
    """The preset's model at `res` (random init); `backbone` shrinks it for CPU tests."""
    from bench.autoencoders import latent_shape
    from bench.registry import MODELS

    model_overrides = {**model_overrides, **({"backbone": backbone} if backbone else {})}
    cfg = resolve(preset=preset, overrides=[{"data": {"res": res}, "model": model_overrides}])
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the target device: paper-size models build in seconds on a GPU
        model = MODELS.load(cfg.family)(cfg.model, latent_shape(cfg.data.autoencoder, res), cfg.data.num_classes)
    return cfg, model.to(device)


def fixed_step_spec(cfg: RunConfig) -> Any:
    """The preset's sampler with fixed steps (dopri5 -> Euler), so flop_trace knows every call and its count;
    24 steps divide evenly over 2, 3 and 4 scales/stages."""
    solver = "euler" if cfg.sample.solver == "dopri5" else cfg.sample.solver
    return dataclasses.replace(cfg.sample, solver=solver, steps=24, stage_steps=None)


def forward_calls(model: Any, cfg: RunConfig, batch: int, precision: str) -> list[tuple[Any, Callable[[], Any]]]:
    """Each distinct network call of sampling (LapFlow: one per segment) with its inputs at `batch`, as a
    no-argument inference forward."""
    model.eval()
    out = []
    for call in model.flop_trace(fixed_step_spec(cfg)):
        inputs = tuple(x.expand(batch, *x.shape[1:]).contiguous() if torch.is_tensor(x) else x for x in call.inputs)

        def run(m: Any = call.module, a: tuple = inputs) -> Any:
            with torch.inference_mode(), autocast(model.device, precision):
                return m(*a)

        out.append((call, run))
    return out


def rng_digest(device: torch.device) -> str:
    """A short hash of the CPU RNG state and, on CUDA, the device generator's (seed, offset)."""
    import hashlib

    state = torch.get_rng_state().numpy().tobytes()
    if device.type == "cuda":
        state += torch.cuda.get_rng_state(device).numpy().tobytes()
    return hashlib.sha256(state).hexdigest()[:16]


def make_train_step(
    model: Any,
    cfg: RunConfig,
    device: torch.device,
    compile_backend: str | None,
    precision: str,
    stages: list[int] | None = None,
    compile_mode: str = "default",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """THE training step (bench.train.train_step: clipping, non-finite check, fused AdamW on GPUs, EMA) on one batch
    of latents at the config's learning rate, compiled in `compile_mode` when a backend is given; returns the
    detached loss. `stages` collects the drawn stages."""
    import copy
    import dataclasses
    import itertools

    from bench.train_step import LossModule, compile_loss, make_optimizer, skips_on_device, train_step

    t = dataclasses.replace(cfg.train, precision=precision)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = make_optimizer(model, t, device)
    loss_fn: Any = LossModule(model)
    if compile_backend:
        from bench.compiling import use_compile_cache

        use_compile_cache()
        loss_fn = compile_loss(loss_fn, compile_backend, compile_mode, device)
    steps = itertools.count()  # the step index drives the EMA warm-up, as in training

    def step(x: torch.Tensor) -> torch.Tensor:
        loss, _, _ = train_step(loss_fn, model, ema, opt, [(x, None)], 1, t, next(steps), device, stages=stages)
        return loss

    # Where THE step reads its non-finite check (train_step's two paths), for the records: "device" (no host sync)
    # or "host" (one sync a step).
    step.nonfinite_check = "device" if skips_on_device(opt) else "host"  # type: ignore[attr-defined]
    return step
