"""Contract tests generated from the registry: every family, through its tiny preset (DESIGN.md "Tests")."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.config import parse_set, resolve
from bench.interface import GenerativeModel, SampleSpec
from bench.registry import MODELS
from bench.runtime import per_sample_randn_like
from bench.sample import generate

FAMILIES = MODELS.names()
LATENT = (3, 16, 16)  # pixel space, 16 px: every tiny preset (patch 4, up to 2 scales) divides it


def build(family: str, num_classes: int = 0) -> GenerativeModel:
    cfg = resolve(preset=f"{family}-tiny", overrides=[parse_set("data.res=16")])
    torch.manual_seed(0)
    model = MODELS.load(family)(cfg.model, LATENT, num_classes)
    # adaLN-Zero starts with zero gates and output: give every weight a value so gradients can reach everything.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def tiny_spec(family: str) -> SampleSpec:
    spec = resolve(preset=f"{family}-tiny").sample
    return dataclasses.replace(spec, steps=min(spec.steps, 6), stage_steps=None)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_is_finite_per_sample(family):
    model = build(family).train()
    loss = model.loss(torch.rand(5, *LATENT) * 2 - 1, None)
    assert loss.shape == (5,) and torch.isfinite(loss).all() and (loss > 0).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_classes", [0, 3])
def test_gradients_reach_every_parameter(family, num_classes):
    model = build(family, num_classes).train()
    x = torch.rand(4, *LATENT) * 2 - 1
    y = torch.tensor([0, 1, 2, 0]) if num_classes else None
    torch.manual_seed(1)
    for _ in range(12):  # several calls: stage-sampling families touch every scale/stage with high probability
        model.loss(x, y).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_is_seed_deterministic_and_batch_independent(family):
    model = build(family)
    spec = tiny_spec(family)
    seeds = [3, 1, 4, 1000]
    together = torch.cat([b.latents for b in generate(model, seeds, spec, batch_size=4)])
    again = torch.cat([b.latents for b in generate(model, seeds, spec, batch_size=4)])
    one_by_one = torch.cat([b.latents for b in generate(model, seeds, spec, batch_size=1)])
    assert torch.equal(together, again)
    scale = together.abs().max()  # random weights can give large latents: compare relative to their size
    assert (together - one_by_one).abs().max() <= 1e-5 * max(1.0, float(scale))
    assert together.shape == (4, *LATENT) and torch.isfinite(together).all()
    other = torch.cat([b.latents for b in generate(model, [5, 6, 7, 8], spec, batch_size=4)])
    assert not torch.allclose(together, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_reports_nfe_matching_flop_trace(family):
    model = build(family)
    spec = tiny_spec(family)
    randn_like = per_sample_randn_like([0, 1], "cpu")
    with torch.inference_mode():
        out = model.sample(randn_like(torch.empty(2, *LATENT)), None, spec, randn_like)
        calls = model.flop_trace(spec, out.nfe_by_call)
        assert out.nfe > 0 and sum(out.nfe_by_call.values()) == out.nfe
        assert sum(c.count for c in calls) == pytest.approx(out.nfe)
        for call in calls:
            assert call.module(*call.inputs) is not None  # each call runs at its example shape


@pytest.mark.parametrize("family", FAMILIES)
def test_conditional_sampling_with_guidance(family):
    model = build(family, num_classes=3)
    spec = dataclasses.replace(tiny_spec(family), guidance=2.0)
    batch = next(generate(model, [0, 1, 2], spec, batch_size=3))
    assert batch.labels.tolist() == [0, 1, 2] and torch.isfinite(batch.latents).all()
