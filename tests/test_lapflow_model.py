"""LapFlow adapter: stage-sampled loss, segmented sampling, S = 1 equals LFM, cost trace (METHODS.md section 1)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines.lfm.config import LFMConfig
from baselines.lfm.model import build as build_lfm
from bench.errors import BenchError
from bench.interface import SampleOutput, SampleSpec
from bench.metrics.flops import analyse, trace_flops
from bench.runtime import per_sample_randn_like
from models.lapflow.config import PRESETS, LapFlowConfig
from models.lapflow.model import build
from models.lapflow.mot import dit_to_expert_state
from models.lapflow.pyramid import decompose, interpolate, noise_level, reconstruct
from models.sizes import BackboneConfig

TINY = BackboneConfig("S", patch=2, depth=2, hidden=64, heads=4)
LATENT = (3, 16, 16)
TINY_PRESET_BACKBONE = PRESETS["lapflow-tiny"]["model"]["backbone"]


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def lapflow(randomized: bool = True, num_classes: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(LapFlowConfig(backbone=TINY, **options), LATENT, num_classes)
    if randomized:
        randomize(model)
    return model.eval()


def noise(seeds: list[int]) -> torch.Tensor:
    return per_sample_randn_like(seeds, "cpu")(torch.empty(len(seeds), *LATENT))


# ----------------------------------------------------------------------------------------------------------------
# training


def test_loss_closed_form_at_zero_init() -> None:
    """adaLN-Zero init outputs v = 0, so the loss is sum over active scales of mean(u^2), with u drawn as specified."""
    model = lapflow(randomized=False, num_scales=3)
    x = torch.rand(4, *LATENT) * 2 - 1
    for stage in range(3):
        torch.manual_seed(5)
        loss = model.loss(x, None, stage=stage)
        torch.manual_seed(5)
        eps = torch.randn_like(x)
        start = model.starts[stage]
        t = start + (1 - start) * torch.rand(4)
        assert (t >= start).all()
        xs, es = decompose(x, 3), decompose(eps, 3)
        expected = sum(
            interpolate(xs[k], es[k], t, model.starts[k])[1].pow(2).mean(dim=(1, 2, 3)) for k in range(stage, 3)
        )
        assert loss.shape == (4,)
        assert torch.allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("stage", [0, 1])
def test_only_active_scales_are_fed(stage: int) -> None:
    model = lapflow().train()
    model.loss(torch.rand(2, *LATENT), None, stage=stage).mean().backward()
    fine_grads = [p.grad for p in model.net.experts[0].parameters()]
    coarse_grads = [p.grad for p in model.net.experts[1].parameters()]
    assert all(g is not None for g in coarse_grads)
    assert all(g is None for g in fine_grads) == (stage == 1)
    assert model.may_skip_parameters  # tells the training loop to let DDP find unused parameters


def test_stage_is_drawn_per_call_and_curriculum_unlocks_finer_stages() -> None:
    model = lapflow(num_scales=3)
    torch.manual_seed(0)
    assert {model.draw_stage() for _ in range(60)} == {0, 1, 2}
    cur = lapflow(num_scales=3, curriculum_images=8).train()
    assert list(cur.available_stages()) == [2]
    cur.loss(torch.rand(8, *LATENT), None)
    assert list(cur.available_stages()) == [1, 2]
    cur.loss(torch.rand(8, *LATENT), None)
    assert list(cur.available_stages()) == [0, 1, 2] and "images_seen" in cur.state_dict()


@pytest.mark.parametrize(("num_classes", "positions"), [(0, "own"), (10, "own"), (10, "aligned")])
def test_single_scale_loss_equals_lfm(num_classes: int, positions: str) -> None:
    lfm, lap = single_scale_pair(num_classes, positions)  # one scale: aligned positions are the own grid's
    lfm.train(), lap.train()  # label dropout draws from the same RNG stream in both
    x = torch.rand(6, *LATENT) * 2 - 1
    y = torch.arange(6) % 10 if num_classes else None
    torch.manual_seed(11)
    expected = lfm.loss(x, y)
    torch.manual_seed(11)
    assert torch.equal(lap.loss(x, y), expected)
    assert not lap.may_skip_parameters


def single_scale_pair(num_classes: int = 0, positions: str = "own") -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    lfm = build_lfm(LFMConfig(backbone=TINY), LATENT, num_classes)
    randomize(lfm, seed=2)
    lap = lapflow(randomized=False, num_classes=num_classes, num_scales=1, positions=positions)
    lap.net.load_state_dict(dit_to_expert_state(lfm.net.state_dict()), strict=True)
    return lfm.eval(), lap.eval()


# ----------------------------------------------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("solver", ["euler", "heun", "dopri5"])
def test_single_scale_samples_equal_lfm(solver: str) -> None:
    lfm, lap = single_scale_pair(num_classes=10)
    spec = SampleSpec(solver=solver, steps=4, atol=1e-2, rtol=1e-2, guidance=1.5)
    z, y = noise([0, 1]), torch.tensor([1, 2])
    ref = lfm.sample(z, y, spec, per_sample_randn_like([0, 1], "cpu"))
    out = lap.sample(z, y, spec, per_sample_randn_like([0, 1], "cpu"))
    assert torch.equal(out.latents, ref.latents) and out.nfe == ref.nfe


def test_tiny_preset_euler_sampling() -> None:
    cfg = LapFlowConfig(**{**PRESETS["lapflow-tiny"]["model"], "backbone": BackboneConfig(**TINY_PRESET_BACKBONE)})
    torch.manual_seed(0)
    model = build(cfg, (3, 32, 32), 0).eval()
    randomize(model)
    spec = SampleSpec(solver="euler", steps=7)

    def run(seeds: list[int]) -> SampleOutput:
        z = per_sample_randn_like(seeds, "cpu")(torch.empty(len(seeds), 3, 32, 32))
        return model.sample(z, None, spec, per_sample_randn_like(seeds, "cpu"))

    out = run([0, 1])
    assert out.latents.shape == (2, 3, 32, 32) and torch.isfinite(out.latents).all()
    assert out.nfe == 7 and out.nfe_by_call == {"segment0": 4, "segment1": 3}  # split_steps(7, [0.5, 0.5])
    assert torch.equal(run([0, 1]).latents, out.latents)
    assert torch.allclose(run([1]).latents, out.latents[1:], atol=1e-5)


@pytest.mark.parametrize("solver", ["heun", "dopri5"])
def test_reported_nfe_is_the_number_of_network_calls(solver: str) -> None:
    model = lapflow(num_scales=3)
    calls = []
    model.net.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    spec = SampleSpec(solver, steps=7, atol=1e-3, rtol=1e-3)
    out = model.sample(noise([0, 1]), None, spec, lambda a: a)
    assert out.nfe == len(calls) and list(out.nfe_by_call) == ["segment0", "segment1", "segment2"]
    by_segment = [calls.count(active) for active in (1, 2, 3)]  # calls with 1, 2, 3 active scales
    assert by_segment == list(out.nfe_by_call.values())
    if solver == "heun":
        steps = model.segment_steps(spec)  # split_steps over the segment lengths (1/3 each, up to rounding)
        assert sorted(steps) == [2, 2, 3] and by_segment == [2 * n for n in steps]


def test_sampling_is_deterministic_per_seed_and_batch_independent() -> None:
    model = lapflow()
    spec = SampleSpec(steps=5)
    together = model.sample(noise([3, 1, 4]), None, spec, per_sample_randn_like([3, 1, 4], "cpu")).latents
    again = model.sample(noise([3, 1, 4]), None, spec, per_sample_randn_like([3, 1, 4], "cpu")).latents
    alone = model.sample(noise([1]), None, spec, per_sample_randn_like([1], "cpu")).latents
    assert torch.equal(together, again)
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_guidance_combines_conditional_and_unconditional_on_every_scale() -> None:
    model = lapflow(num_classes=10)
    z, y, w = noise([0, 1]), torch.tensor([4, 5]), 3.0
    spec = SampleSpec(steps=4, guidance=w)
    out = model.sample(z, y, spec, per_sample_randn_like([0, 1], "cpu")).latents
    cond = model.sample(z, y, dataclasses.replace(spec, guidance=1.0), per_sample_randn_like([0, 1], "cpu")).latents
    assert out.shape == z.shape and not torch.allclose(out, cond)
    # One Euler step of the coarse segment by hand: v = v_u + w (v_c - v_u) on the coarse scale.
    coarse = decompose(z, 2)[1]
    t = torch.zeros(2)
    v_c = model.net([coarse], t, y)[0]
    v_u = model.net([coarse], t, torch.full_like(y, 10))[0]
    one_step = model.sample(z, y, SampleSpec(steps=2, guidance=w, critical_times=(0.5,)), lambda a: a)
    assert one_step.nfe == 2
    state_coarse = coarse + 0.5 * (v_u + w * (v_c - v_u))
    fine_start = 0.5 * decompose(z, 2)[0]
    t_half = torch.full((2,), 0.5)
    v_c2 = model.net([state_coarse, fine_start], t_half, y)
    v_u2 = model.net([state_coarse, fine_start], t_half, torch.full_like(y, 10))
    final = [s + 0.5 * (u + w * (c - u)) for s, c, u in zip([state_coarse, fine_start], v_c2, v_u2, strict=True)]
    assert torch.allclose(one_step.latents, reconstruct(final[::-1]), atol=1e-5)


@pytest.mark.parametrize("path", ["linear", "gvp"])
def test_zero_network_sampling_keeps_activation_states(path: str) -> None:
    """With v = 0 each scale stays at its activation state sigma(T_{k+1}) eps^(k) (no renoising anywhere)."""
    model = lapflow(randomized=False, num_scales=3, path=path)
    z = noise([0, 1])
    out = model.sample(z, None, SampleSpec(steps=6), per_sample_randn_like([0, 1], "cpu"))
    sigma = [noise_level(path, start) for start in model.starts]
    expected = reconstruct([s * e for s, e in zip(sigma, decompose(z, 3), strict=True)])
    assert torch.allclose(out.latents, expected, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"separate_networks": True},
        {"path": "gvp"},
        {"mask": "none"},
        {"mask": "self", "attention": "masked"},
        {"num_scales": 4, "critical_times": (0.1, 0.3, 0.6)},
        {"positions": "aligned"},
        {"positions": "aligned", "separate_networks": True, "num_scales": 3},
    ],
)
def test_ablation_options_train_sample_and_trace(options: dict) -> None:
    model = lapflow(num_classes=10, **options).train()
    loss = model.loss(torch.rand(2, *LATENT), torch.tensor([1, 2]), stage=0)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    model.eval()
    out = model.sample(noise([0, 1]), torch.tensor([1, 2]), SampleSpec(steps=4), per_sample_randn_like([0, 1], "cpu"))
    assert torch.isfinite(out.latents).all() and out.nfe == 4 and len(out.nfe_by_call) == model.num_scales
    calls = model.flop_trace(SampleSpec(steps=4), out.nfe_by_call)
    assert len(calls[-1].module(*calls[-1].inputs)) == model.num_scales


def test_sample_spec_critical_times_override() -> None:
    model = lapflow()
    assert model.segments(SampleSpec()) == [(0.0, 0.5), (0.5, 1.0)]
    assert model.segments(SampleSpec(critical_times=(0.2,))) == [(0.0, 0.2), (0.2, 1.0)]
    assert model.segment_steps(SampleSpec(steps=10, critical_times=(0.2,))) == [2, 8]
    with pytest.raises(BenchError, match="critical times"):
        model.sample(noise([0]), None, SampleSpec(critical_times=(0.2, 0.4)), per_sample_randn_like([0], "cpu"))


def test_bad_options_fail_with_one_sentence() -> None:
    with pytest.raises(BenchError, match="divisible"):
        build(LapFlowConfig(backbone=TINY, num_scales=3), (3, 12, 12), 0)
    with pytest.raises(BenchError, match="mask"):
        build(LapFlowConfig(backbone=TINY, mask="diagonal"), LATENT, 0)
    with pytest.raises(BenchError, match="1 to 4 scales"):
        build(LapFlowConfig(backbone=TINY, num_scales=5), (3, 64, 64), 0)


# ----------------------------------------------------------------------------------------------------------------
# cost


def test_flop_trace_counts_tokens_and_measurement() -> None:
    model = lapflow()
    calls = model.flop_trace(SampleSpec(solver="heun", steps=9))
    assert [(c.name, c.count, c.tokens) for c in calls] == [("segment0", 10.0, 16), ("segment1", 8.0, 80)]
    outs = calls[1].module(*calls[1].inputs)
    assert [o.shape for o in outs] == [(1, 3, 8, 8), (1, 3, 16, 16)]
    with pytest.raises(BenchError, match="measured"):
        model.flop_trace(SampleSpec(solver="dopri5"))
    measured = model.flop_trace(SampleSpec(solver="dopri5"), {"segment0": 14, "segment1": 20})
    assert [c.count for c in measured] == [14.0, 20.0]
    guided_calls = lapflow(num_classes=10).flop_trace(SampleSpec(steps=4, guidance=2.0))
    assert all(c.inputs[0].shape[0] == 2 and c.inputs[-1].shape == (2,) for c in guided_calls)


@pytest.mark.parametrize("attention", ["prefix", "masked"])
def test_attention_flops_closed_form(attention: str) -> None:
    """The prefix path computes (and fvcore counts) only the blocks the causal mask allows."""
    model = lapflow(attention=attention)
    call = model.flop_trace(SampleSpec(steps=2))[1]  # 16 coarse + 64 fine tokens
    _, by_op, uncounted = analyse(call.module, call.inputs)  # SDPA: B*H*Lq*Lk*(D+Dv) multiply-adds
    assert not uncounted
    head_dims = 2 * 16  # D + Dv with hidden 64 over 4 heads
    pairs = 16 * 16 + 64 * 80 if attention == "prefix" else 80 * 80
    assert by_op["scaled_dot_product_attention"] * 1e9 == pytest.approx(TINY.depth * 4 * pairs * head_dims)


def time_averaged_gflops(size: str, depth: int, num_scales: int) -> float:
    backbone = BackboneConfig(size, 2, depth=depth)
    torch.manual_seed(0)
    if num_scales == 0:
        model = build_lfm(LFMConfig(backbone=backbone), (4, 32, 32), 0)
    else:
        model = build(LapFlowConfig(backbone=backbone, num_scales=num_scales), (4, 32, 32), 0)
    # Euler steps split in proportion to segment length: averaging over calls is averaging over time.
    report = trace_flops(model, SampleSpec(solver="euler", steps=100))
    assert report.nfe == 100
    return report.time_avg_gflops_per_forward


@pytest.mark.parametrize(("size", "dit_gflops"), [("L", 80.70), ("B", 23.01)])
def test_time_averaged_gflops_ratio_over_lfm(size: str, dit_gflops: float) -> None:
    """256 px (32x32x4 latents), 2 scales, T_1 = 0.5: paper 16.5 / 22.1 = 0.747 of LFM's per-forward GFLOPs.

    FLOPs are affine in depth, so depths 1 and 2 give the full-depth count exactly without building it.
    """
    full_depth = {"L": 24, "B": 12}[size]

    def at_full_depth(num_scales: int) -> float:
        one, two = time_averaged_gflops(size, 1, num_scales), time_averaged_gflops(size, 2, num_scales)
        return one + (two - one) * (full_depth - 1)

    lfm, lap = at_full_depth(0), at_full_depth(2)
    assert lfm == pytest.approx(dit_gflops, abs=0.05)  # DESIGN.md check: DiT-L/2 80.70, B/2 23.01 at 256 px
    assert lap / lfm == pytest.approx(0.75, abs=0.01)
