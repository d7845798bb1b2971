"""The exponential moving average of the weights: its decay schedule, its update, and how much of the random
initialisation it still holds (sampling from an EMA that is mostly initial weights measures nothing).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.config import RunConfig


def ema_decay_at(decay: float, warmup: bool, step: int) -> float:
    """EMA decay of a step; with warm-up the average forgets the random initial weights within a short run."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


YOUNG_EMA_FRACTION = 0.1  # sampling an EMA that still holds more of its initial (random) weights warns


def ema_initial_weight(decay: float, warmup: bool, steps: int) -> float:
    """The weight the EMA still gives the initial parameters after `steps` updates: prod_t ema_decay_at(t)."""
    log_weight = 0.0
    for step in range(steps):
        d = ema_decay_at(decay, warmup, step)
        if d == decay:  # from here on the decay is constant: the rest of the product in closed form
            log_weight += (steps - step) * math.log(decay) if decay > 0 else -math.inf
            break
        log_weight += math.log(d)
    return math.exp(log_weight)


def young_ema_warning(cfg: RunConfig, steps: int) -> str | None:
    """A loud warning when the EMA of a run after `steps` steps is still mostly its random initialisation."""
    t = cfg.train
    weight = ema_initial_weight(t.ema_decay, t.ema_warmup, steps)
    if weight <= YOUNG_EMA_FRACTION * (1 + 1e-9):  # the first warm-up step keeps exactly 1/10
        return None
    return (
        f"WARNING: the EMA weights after {steps} steps still hold {100 * weight:.0f}% of their random initial values "
        f"(ema_decay {t.ema_decay}, warm-up {'on' if t.ema_warmup else 'off'}): samples and scores from them measure "
        "little. Train longer, lower train.ema_decay, or set train.ema_warmup=true."
    )


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, skip: torch.Tensor | None = None) -> None:
    """ema <- lerp(ema, model, 1 - decay), buffers copied. With `skip` (a 0-dim float32 device tensor, exactly 0.0 or
    1.0: THE step's found_inf) the update happens on the device without a host sync: the weight becomes
    (1 - skip) * (1 - decay), a 0-dim tensor. On skip = 0 that is float32(1 - decay) exactly (x * 1.0 == x), the value
    the scalar lerp uses, and the tensor-weight lerp kernel evaluates the same float formula (ATen's Lerp.h, on CUDA
    cuda/Lerp.cu beside the foreach functor), so the EMA is bitwise the scalar path's: tested on the CPU, and on CUDA
    by the gpu-marked test of tests/test_train_device_skip.py. On skip = 1 each value becomes ema + 0 * (model - ema)
    = ema (the model is finite: its update was skipped too; only an exact -0.0 could turn into +0.0) and every
    buffer keeps its value (torch.where). The tensor weight takes ATen's per-tensor lerp (the fused multi-tensor
    kernel takes scalar weights only): one launch per parameter instead of a few."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if skip is None:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for eb, b in zip(ema.buffers(), model.buffers(), strict=True):
            eb.copy_(b)
        return
    weight = (1 - skip) * (1.0 - decay)
    torch._foreach_lerp_(ema_params, params, [weight] * len(ema_params))
    keep = skip == 0
    for eb, b in zip(ema.buffers(), model.buffers(), strict=True):
        eb.copy_(torch.where(keep, b, eb))
