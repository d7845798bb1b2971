"""Classifier-free guidance identities for every registered family (generated from the registry).

With guidance w = 1 the CFG sampler is the conditional sampler and with w = 0 the unconditional one (null label
y = num_classes); any other w follows v_u + w (v_c - v_u) at every network call. The references replace each
family's guidance hook (bench.solvers.guided in its model module, or DiT's `network_output`) with the plain
definitions, computed by separate un-batched calls, so the tests see the families' real sampling loops.
DiT takes its learned-variance channels from the conditional half (as upstream), so its "w = 0 is unconditional"
holds for the eps channels; the whole-sample identity is checked with fixed variance (learn_sigma = False).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from bench import solvers
from bench.config import parse_set, resolve
from bench.interface import GenerativeModel, SampleSpec
from bench.registry import MODELS
from bench.runtime import per_sample_randn_like

FAMILIES = MODELS.names()
LATENT = (3, 16, 16)
NUM_CLASSES = 3
SEEDS = [0, 1, 2, 7]
LABELS = torch.tensor([0, 1, 2, 1])
STEPS = 4  # a few steps per trajectory: enough to compound differences, fast on CPU

Call = Callable[[Tensor, Tensor, Tensor], Tensor]  # the network: (x, t, labels) -> output
Reference = Callable[[Call, Tensor, Tensor, Tensor, float, int], Tensor]  # (call, x, t, y, w, null label) -> output


def build(family: str, **model_overrides: object) -> GenerativeModel:
    """`<family>-tiny` on 3x16x16 latents with 3 classes and random weights (adaLN-Zero would start at zero)."""
    cfg = resolve(preset=f"{family}-tiny", overrides=[parse_set("data.res=16")])
    model_cfg = dataclasses.replace(cfg.model, **model_overrides)
    torch.manual_seed(0)
    model = MODELS.load(family)(model_cfg, LATENT, NUM_CLASSES)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def spec(family: str, guidance: float) -> SampleSpec:
    base = resolve(preset=f"{family}-tiny").sample
    return dataclasses.replace(base, steps=min(base.steps, STEPS), stage_steps=None, guidance=guidance)


def sample(model: GenerativeModel, labels: Tensor, sample_spec: SampleSpec) -> Tensor:
    """Latents for SEEDS; every call replays the same per-seed noise (initial and any renoising)."""
    randn_like = per_sample_randn_like(SEEDS, "cpu")
    with torch.inference_mode():
        return model.sample(randn_like(torch.empty(len(SEEDS), *LATENT)), labels, sample_spec, randn_like).latents


def close(a: Tensor, b: Tensor) -> bool:
    """Equal up to float rounding of batched vs separate calls, relative to the size of the latents."""
    return bool((a - b).abs().max() <= 1e-5 * max(1.0, float(b.abs().max())))


def null(y: Tensor) -> Tensor:
    return torch.full_like(y, NUM_CLASSES)


# ----------------------------------------------------------------------------------------------------------------
# references (the definitions, one network call per label set)


def conditional(call: Call, x: Tensor, t: Tensor, y: Tensor, w: float, null_label: int) -> Tensor:
    return call(x, t, y)


def unconditional(call: Call, x: Tensor, t: Tensor, y: Tensor, w: float, null_label: int) -> Tensor:
    return call(x, t, torch.full_like(y, null_label))


def two_calls(call: Call, x: Tensor, t: Tensor, y: Tensor, w: float, null_label: int) -> Tensor:
    cond, uncond = call(x, t, y), call(x, t, torch.full_like(y, null_label))
    return uncond + w * (cond - uncond)


def patch_guidance(monkeypatch: pytest.MonkeyPatch, model: GenerativeModel, reference: Reference) -> list[int]:
    """Route the family's guidance through `reference`; returns a one-item call counter (proof the hook is used)."""
    calls = [0]
    module = sys.modules[type(model).__module__]
    if getattr(module, "guided", None) is solvers.guided:

        def guided(network: Call, y: Tensor | None, w: float, null_label: int) -> solvers.Velocity:
            def velocity(x: Tensor, t: Tensor) -> Tensor:
                calls[0] += 1
                return reference(network, x, t, y, w, null_label)

            return velocity

        monkeypatch.setattr(module, "guided", guided)
    elif hasattr(model, "network_output"):  # DiT: guidance on the eps channels of the network output
        c = model.latent_shape[0]

        def network_output(x: Tensor, t: Tensor, y: Tensor | None, w: float) -> Tensor:
            calls[0] += 1
            out = reference(lambda a, b, labels: model.net(a, b, labels).float(), x, t, y, w, model.num_classes)
            cond = model.net(x, t, y).float()
            return torch.cat([out[:, :c], cond[:, c:]], dim=1)  # variance channels from the conditional half

        monkeypatch.setattr(model, "network_output", network_output)
    else:
        pytest.fail(f"{type(model).__name__}: unknown guidance hook; teach tests/test_guidance.py about it")
    return calls


def learned_variance_off(family: str) -> dict:
    """Overrides that make every output channel a guided one (DiT's learn_sigma), else none."""
    return {"learn_sigma": False} if getattr(resolve(preset=f"{family}-tiny").model, "learn_sigma", False) else {}


# ----------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_change_the_samples(family: str) -> None:
    """Guards the identities below from passing vacuously: the label reaches the network."""
    model = build(family)
    cond, uncond = sample(model, LABELS, spec(family, 1.0)), sample(model, null(LABELS), spec(family, 1.0))
    assert torch.isfinite(cond).all() and not close(cond, uncond)
    other = sample(model, torch.tensor([1, 2, 0, 0]), spec(family, 1.0))
    assert not close(cond, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_one_is_the_conditional_sampler(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(family)
    cfg_sample = sample(model, LABELS, spec(family, 1.0))
    calls = patch_guidance(monkeypatch, model, conditional)
    plain = sample(model, LABELS, spec(family, 1.0))
    assert calls[0] > 0
    assert torch.equal(cfg_sample, plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_zero_is_the_unconditional_sampler(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(family, **learned_variance_off(family))
    guided_zero = sample(model, LABELS, spec(family, 0.0))
    null_labels = sample(model, null(LABELS), spec(family, 1.0))  # y = num_classes, no CFG
    assert close(guided_zero, null_labels)
    calls = patch_guidance(monkeypatch, model, unconditional)
    assert close(guided_zero, sample(model, LABELS, spec(family, 0.0))) and calls[0] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_other_scales_follow_the_cfg_formula(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """w = 2: the families' batched (conditional + null in one call) CFG equals two separate calls per step."""
    model = build(family)
    batched = sample(model, LABELS, spec(family, 2.0))
    calls = patch_guidance(monkeypatch, model, two_calls)
    separate = sample(model, LABELS, spec(family, 2.0))
    assert calls[0] > 0 and close(batched, separate)
    assert not close(batched, sample(model, LABELS, spec(family, 1.0)))


def test_dit_guidance_zero_takes_eps_from_the_null_label_and_variance_from_the_label() -> None:
    model = build("dit")
    assert model.cfg.learn_sigma
    c = LATENT[0]
    x, t = torch.randn(len(SEEDS), *LATENT), torch.full((len(SEEDS),), 500, dtype=torch.long)
    with torch.inference_mode():
        out = model.network_output(x, t, LABELS, 0.0)
        cond, uncond = model.net(x, t, LABELS).float(), model.net(x, t, null(LABELS)).float()
    assert out.shape == (len(SEEDS), 2 * c, *LATENT[1:])
    assert close(out[:, :c], uncond[:, :c]) and not close(out[:, :c], cond[:, :c])
    assert close(out[:, c:], cond[:, c:])
