"""Pyramidal Flow baseline: schedule coefficients, block noise, renoising law, loss, sampling, FLOP trace."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn

from baselines.pyramidal_flow.config import PRESETS, PyramidalFlowConfig
from baselines.pyramidal_flow.model import PyramidalFlow, build
from baselines.pyramidal_flow.schedule import (
    block_noise,
    data_pyramid,
    down,
    jump_coefficients,
    make_schedule,
    noise_pyramid,
    up,
)
from bench.config import resolve
from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.registry import MODELS
from bench.runtime import per_sample_randn_like
from models.sizes import BackboneConfig

TINY = {"depth": 2, "hidden": 64, "heads": 4}


def tiny_model(stages: int = 2, patch: int = 2, num_classes: int = 0, shape=(3, 32, 32), **cfg) -> PyramidalFlow:
    backbone = BackboneConfig("S", patch, **TINY)
    return build(PyramidalFlowConfig(backbone=backbone, stages=stages, **cfg), shape, num_classes)


def randomize(module: nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Replace DiT's zero-initialised output/adaLN layers so the network computes something non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# ---------------------------------------------------------------------------------------------------------------
# schedule


def flat(pairs: tuple[tuple[float, float], ...]) -> list[float]:
    return [v for pair in pairs for v in pair]


def test_schedule_matches_upstream_coefficients() -> None:
    # Reference values: upstream init_sigmas_for_each_stage re-run in float32 (ORIGIN.md), shift 1, gamma 1/3.
    two = make_schedule(2)
    assert two.nominal_start == (1.0, 0.5) and two.end == (0.5, 0.0)
    assert two.start == pytest.approx((1.0, 2 / 3), abs=1e-12)
    assert two.jumps[1] == pytest.approx((2 / 3, 1 / math.sqrt(3)), abs=1e-12)
    # flow lengths 0.5 and 2/3 -> stage 0 gets 3/7 of the timestep axis, cut on upstream's 1/1000 grid
    assert flat(two.windows) == pytest.approx([0.0, 0.428, 0.428, 0.999], abs=1e-12)
    three = make_schedule(3)
    assert three.nominal_start == pytest.approx((1.0, 0.667, 0.334), abs=1e-12)
    assert three.start == pytest.approx((1.0, 0.8002399489, 0.5007496155), abs=1e-7)
    assert flat(three.windows) == pytest.approx([0.0, 0.256, 0.256, 0.614, 0.614, 0.999], abs=1e-12)


@pytest.mark.parametrize("gamma", [1 / 3, 0.2])
@pytest.mark.parametrize("nominal", [0.2, 0.5, 0.667])
def test_jump_coefficients_identities(nominal: float, gamma: float) -> None:
    # a Up(end) + b n': signal a e = 1 - s; noise a^2 (1-e)^2 11^T + b^2 ((1+g) I - g 11^T) = s^2 I.
    a, b, s = jump_coefficients(nominal, gamma)
    e = 1 - nominal
    assert a * e == pytest.approx(1 - s, abs=1e-12)
    assert a**2 * (1 - e) ** 2 == pytest.approx(b**2 * gamma, abs=1e-12)
    assert b**2 * (1 + gamma) == pytest.approx(s**2, abs=1e-12)
    assert nominal < s < 1  # the corrected start is noisier than the nominal level


def test_sample_grid_follows_upstream_set_timesteps() -> None:
    sched = make_schedule(2)
    grid = sched.sample_grid(4)
    # ratios linspace(1, 0.001, 4) then 0 -> local u = 1 - ratio
    assert grid == pytest.approx([0.0, 0.333, 0.666, 0.999, 1.0], abs=1e-12)
    assert sched.sample_grid(3, "uniform") == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-12)
    u = sched.train_times(torch.tensor([0.0, 0.4999, 0.99999]))
    assert u.tolist() == pytest.approx([0.0, 0.499, 0.999], abs=1e-6)


def test_pyramids() -> None:
    x = torch.randn(2, 3, 16, 16)
    levels = data_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [4, 8, 16] and torch.equal(levels[-1], x)
    assert torch.allclose(levels[1], down(x))
    # the upstream bilinear x0.5 resize equals 2x2 average pooling on even sizes
    bilinear = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear")
    assert torch.allclose(bilinear, down(x), atol=1e-6)
    # 2048 x 16 values at the coarsest level: the variance estimate's std is ~0.008, so 0.03 is ~4 sigma.
    noise = noise_pyramid(torch.randn(2048, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 3)
    for lv in noise:  # n_(k-1) = 2 Down(n_k) keeps unit variance
        assert lv.var().item() == pytest.approx(1.0, abs=0.03)


# ---------------------------------------------------------------------------------------------------------------
# block noise and renoising


@pytest.mark.parametrize("gamma", [1 / 3, 0.2])
def test_block_noise_statistics(gamma: float) -> None:
    # 4e5 blocks: standard errors ~0.002 for variances and correlations; tolerance 0.01 (> 4 standard errors).
    z = torch.randn(1000, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    n = block_noise(z, gamma)
    blocks = n.unfold(2, 2, 2).unfold(3, 2, 2).reshape(-1, 4).double()  # [blocks, 4] within 2x2 blocks
    cov = blocks.T @ blocks / blocks.shape[0]
    off = cov[~torch.eye(4, dtype=torch.bool)]
    assert torch.allclose(cov.diagonal(), torch.ones(4, dtype=torch.float64), atol=0.01)  # unit variance
    assert torch.allclose(off, torch.full_like(off, -gamma), atol=0.01)  # within-block correlation -gamma
    sums = blocks.sum(dim=1)
    if gamma == pytest.approx(1 / 3):
        assert sums.abs().max().item() < 1e-5  # block sums are exactly zero
    else:
        assert sums.var().item() == pytest.approx(4 - 12 * gamma, rel=0.02)
    # blocks are independent of each other: neighbouring pixels of different blocks are uncorrelated
    across = (n[..., :, 1:-1:2] * n[..., :, 2::2]).mean().item()
    assert abs(across) < 0.01
    assert torch.equal(block_noise(z, gamma), n)  # deterministic transform of the standard normal draw


def bands(x: Tensor) -> tuple[Tensor, Tensor]:
    """Low band (2x2 block means) and high band (within-block residual)."""
    low = down(x)
    return low, x - up(low)


@pytest.mark.parametrize("stages", [2, 3])
def test_renoise_matches_training_start(stages: int) -> None:
    """Up(end of stage k-1) after renoising has the law of stage k's training start point, per frequency band."""
    sched = make_schedule(stages)
    g = torch.Generator().manual_seed(1)
    m, size = 4000, 16
    for k in range(1, stages):
        # Gaussian data with a mean and correlations across blocks: x_k = 0.4 + 0.6 z + 0.8 Up(z')
        x = 0.4 + 0.6 * torch.randn(m, 1, size, size, generator=g) + 0.8 * up(torch.randn(m, 1, 8, 8, generator=g))
        coarse = down(x)
        s = sched.start[k]
        # training start point of stage k: s n_k + (1 - s) Up(x_(k-1))
        train_start = s * torch.randn(m, 1, size, size, generator=g) + (1 - s) * up(coarse)
        # sampler: ideal end of stage k-1 with its own (coarse, unit) noise, then the jump
        sigma_e = sched.end[k - 1]
        end_prev = sigma_e * torch.randn(m, 1, 8, 8, generator=g) + (1 - sigma_e) * coarse
        jumped = sched.renoise(k, end_prev, torch.randn(m, 1, size, size, generator=g))
        for a, b in zip(bands(train_start), bands(jumped), strict=True):
            assert a.mean().item() == pytest.approx(b.mean().item(), abs=0.01)
            assert a.var().item() == pytest.approx(b.var().item(), rel=0.02)
        # the noise left after removing the signal is white with variance s^2, as in training
        resid = (jumped - (1 - s) * up(coarse)).unfold(2, 2, 2).unfold(3, 2, 2).reshape(-1, 4).double()
        cov = resid.T @ resid / resid.shape[0]
        assert torch.allclose(cov, s**2 * torch.eye(4, dtype=torch.float64), atol=0.01)


# ---------------------------------------------------------------------------------------------------------------
# training loss


@pytest.mark.parametrize("stages", [2, 3])
def test_loss_closed_form_on_constant_data(stages: int) -> None:
    """Fresh DiT outputs zero, so loss = |end - start|^2 = (start_sigma - end_sigma)^2 (1 + c^2) for data = c."""
    torch.manual_seed(0)
    model = tiny_model(stages)
    c, b = 0.5, 48
    loss = model.loss(torch.full((b, 3, 32, 32), c), None)
    assert loss.shape == (b,) and torch.isfinite(loss).all()
    sched = model.schedule
    for k in range(stages):
        expected = (sched.start[k] - sched.end[k]) ** 2 * (1 + c**2)
        assert loss[k::stages].mean().item() == pytest.approx(expected, rel=0.1)


def test_loss_is_cheap_and_reaches_parameters() -> None:
    torch.manual_seed(0)
    model = tiny_model(2, num_classes=5)
    randomize(model)
    seen: list[tuple[int, int]] = []
    model.net.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape[0], args[0].shape[-1])))
    x, y = torch.randn(7, 3, 32, 32), torch.randint(0, 5, (7,))
    model.loss(x, y).mean().backward()
    # one call per stage, the batch split evenly (sample i -> stage i mod 2): 4 coarse + 3 fine samples
    assert seen == [(4, 16), (3, 32)]
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.loss(x[:1], y[:1]).shape == (1,)  # fewer samples than stages


def test_bad_config_raises_one_sentence() -> None:
    with pytest.raises(BenchError, match="not divisible"):
        tiny_model(3, patch=4, shape=(3, 24, 24))
    with pytest.raises(BenchError, match="gamma"):
        tiny_model(2, gamma=0.5)
    with pytest.raises(BenchError, match="stage_steps"):
        tiny_model(2).stage_steps(SampleSpec(stage_steps=(3, 3, 3)))


# ---------------------------------------------------------------------------------------------------------------
# sampling


class PointMassOracle(nn.Module):
    """Exact velocity field when the data set is one image: stage k's path is x_u = alpha(u) n + m(u)."""

    def __init__(self, model: PyramidalFlow, image: Tensor) -> None:
        super().__init__()
        self.sched, self.clean = model.schedule, data_pyramid(image[None], model.cfg.stages)
        self.sizes = [c.shape[-1] for c in self.clean]

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        k = self.sizes.index(x.shape[-1])
        lo, hi = self.sched.windows[k]
        u = ((t - lo) / (hi - lo)).view(-1, 1, 1, 1).double()
        s, e = self.sched.start[k], self.sched.end[k]
        start_signal = (1 - s) * up(self.clean[k - 1]) if k > 0 else torch.zeros_like(self.clean[0])
        end_signal = self.clean[k] if k == len(self.sizes) - 1 else (1 - e) * self.clean[k]
        alpha = (1 - u) * s + u * e
        noise = (x.double() - (1 - u) * start_signal - u * end_signal) / alpha
        return ((e - s) * noise + end_signal - start_signal).float()


@pytest.mark.parametrize("time_grid", ["upstream", "uniform"])
@pytest.mark.parametrize("stages", [2, 3])
def test_oracle_sampling_lands_on_the_data(stages: int, time_grid: str) -> None:
    """With the exact velocity, Euler is exact on straight paths: jumps, windows and signs must all agree."""
    model = tiny_model(stages, time_grid=time_grid)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    model.net = PointMassOracle(model, image)
    randn_like = per_sample_randn_like([0, 1], "cpu")
    steps = tuple(range(2, 2 + stages))
    out = model.sample(randn_like(torch.empty(2, 3, 32, 32)), None, SampleSpec(stage_steps=steps), randn_like)
    assert out.nfe == sum(steps)
    assert torch.allclose(out.latents, image.expand(2, -1, -1, -1), atol=1e-4)


def tiny_preset_model(num_classes: int = 0) -> tuple[PyramidalFlow, SampleSpec]:
    cfg = resolve(preset="pyramidal-flow-tiny", overrides=[{"model": {"backbone": TINY}}])
    model = MODELS.load(cfg.family)(cfg.model, (3, cfg.data.res, cfg.data.res), num_classes)
    randomize(model)
    return model.eval(), cfg.sample


def draw(model: PyramidalFlow, seeds: list[int], spec: SampleSpec, y: Tensor | None = None):
    randn_like = per_sample_randn_like(seeds, "cpu")
    return model.sample(randn_like(torch.empty(len(seeds), *model.latent_shape)), y, spec, randn_like)


def test_tiny_preset_sampling_deterministic_and_batch_independent() -> None:
    model, spec = tiny_preset_model()
    assert spec.steps == 20 and spec.stage_steps is None
    out = draw(model, [3, 4, 5], spec)
    assert out.nfe == 20 and out.nfe_by_call == {"stage0": 10, "stage1": 10}
    assert out.latents.shape == (3, 3, 32, 32) and torch.isfinite(out.latents).all()
    spec = dataclasses.replace(spec, steps=6)  # fewer steps for the repeated draws
    out = draw(model, [3, 4, 5], spec)
    assert torch.equal(draw(model, [3, 4, 5], spec).latents, out.latents)
    alone = draw(model, [4], spec).latents
    assert torch.allclose(alone[0], out.latents[1], atol=1e-5)
    assert not torch.allclose(out.latents[0], out.latents[1])
    custom = draw(model, [3], dataclasses.replace(spec, stage_steps=(2, 5)))
    assert custom.nfe_by_call == {"stage0": 2, "stage1": 5}
    heun = draw(model, [3], SampleSpec(solver="heun", steps=4))
    assert heun.nfe == 8


def test_class_conditional_guidance_on_every_stage() -> None:
    model, _ = tiny_preset_model(num_classes=10)
    batches: list[int] = []
    model.net.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    spec = SampleSpec(steps=4, guidance=2.0)
    out = draw(model, [0, 1], spec, torch.tensor([3, 7]))
    assert out.nfe == 4 and batches == [4] * 4  # conditional and null halves in one call, on both stages
    assert all(call.inputs[0].shape[0] == 2 for call in model.flop_trace(spec))
    guided = out.latents
    plain = draw(model, [0, 1], dataclasses.replace(spec, guidance=1.0), torch.tensor([3, 7])).latents
    assert not torch.allclose(guided, plain)


def test_flop_trace_per_stage() -> None:
    model, spec = tiny_preset_model()
    calls = model.flop_trace(spec)
    assert [(c.name, c.tokens, c.count) for c in calls] == [("stage0", 16, 10.0), ("stage1", 64, 10.0)]
    for call, size in zip(calls, (16, 32), strict=True):
        assert call.module(*call.inputs).shape == (1, 3, size, size)
    measured = model.flop_trace(SampleSpec(solver="dopri5"), {"stage0": 11, "stage1": 17})
    assert [c.count for c in measured] == [11.0, 17.0]
    with pytest.raises(BenchError):
        model.flop_trace(SampleSpec(solver="dopri5"))


def test_presets_resolve() -> None:
    for name in PRESETS:
        cfg = resolve(preset=name)
        assert cfg.family == "pyramidal-flow"
    assert resolve(preset="pyramidal-flow-celebahq256-l2").sample.stage_steps == (45, 45)
    assert resolve(preset="pyramidal-flow-celebahq512-l2").model.stages == 3
    assert resolve(preset="pyramidal-flow-imagenet256-b2").data.num_classes == 1000


# ---------------------------------------------------------------------------------------------------------------
# GFLOPs relative to LFM (paper, CelebA-HQ 256: Pyramidal Flow 14.2 vs LFM 22.1)

REFERENCE_STEPS = (45, 45)  # Pyramidal Flow at 256 px: Euler 45 + 45
LATENT_256 = (4, 32, 32)  # SD-VAE latents of 256 px images


def dit_macs(tokens: int, depth: int, hidden: int, patch: int = 2, channels: int = 4, mlp_ratio: float = 4.0) -> int:
    """Closed-form multiply-adds of one DiT forward, counted the fvcore way (layer norm = 4 per element)."""
    d, n = hidden, tokens
    per_block = 6 * d * d + n * (4 + 2 * mlp_ratio) * d * d + 2 * n * n * d + 2 * 4 * n * d  # adaLN, linears, attn, LN
    embed = n * channels * patch * patch * d + 256 * d + d * d  # patch conv + timestep MLP
    final = 2 * d * d + n * d * patch * patch * channels + 4 * n * d
    return int(depth * per_block + embed + final)


def fvcore_macs(call) -> float:
    """fvcore count of one FlopCall, with a local handle for SDPA: B*H*Lq*Lk*(D+Dv) (bench/metrics/flops.py absent)."""
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

    def sdpa(inputs, outputs) -> int:
        q, k, v = (get_shape(i) for i in inputs[:3])
        return q[0] * q[1] * q[2] * k[2] * (q[3] + v[3])

    tensors = tuple(i for i in call.inputs if i is not None)
    n_args = len(call.inputs)

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Tensor) -> Tensor:
            return self.inner(*args, *([None] * (n_args - len(args))))

    analysis = FlopCountAnalysis(Wrapped(call.module), tensors).set_op_handle(
        "aten::scaled_dot_product_attention", sdpa
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return float(analysis.total())


def per_sample_gmacs(calls, counter) -> float:
    return sum(counter(c) * c.count for c in calls) / 1e9


def test_gflops_ratio_to_lfm_at_256px() -> None:
    from baselines.lfm.config import LFMConfig
    from baselines.lfm.model import build as build_lfm

    # Token-time ratio in closed form: 45 steps at 16x16/2^2 = 64 tokens + 45 at 256 tokens, vs 90 at 256 tokens.
    token_ratio = (REFERENCE_STEPS[0] * 64 + REFERENCE_STEPS[1] * 256) / (sum(REFERENCE_STEPS) * 256)
    assert token_ratio == 0.625
    backbone = BackboneConfig("S", 2, **TINY)
    pyr = build(PyramidalFlowConfig(backbone=backbone, stages=2), LATENT_256)
    lfm = build_lfm(LFMConfig(backbone=backbone), LATENT_256)
    pyr_calls = pyr.flop_trace(SampleSpec(stage_steps=REFERENCE_STEPS))
    lfm_calls = lfm.flop_trace(SampleSpec(steps=sum(REFERENCE_STEPS)))
    assert [c.tokens for c in pyr_calls] == [64, 256] and lfm_calls[0].tokens == 256
    # fvcore agrees with the closed form call by call (attention included) ...
    for call in [*pyr_calls, *lfm_calls]:
        assert fvcore_macs(call) == pytest.approx(dit_macs(call.tokens, 2, 64), rel=1e-3)
    measured = per_sample_gmacs(pyr_calls, fvcore_macs) / per_sample_gmacs(lfm_calls, fvcore_macs)
    closed = (45 * dit_macs(64, 2, 64) + 45 * dit_macs(256, 2, 64)) / (90 * dit_macs(256, 2, 64))
    assert measured == pytest.approx(closed, rel=1e-3)
    # ... and on paper-size backbones the FLOP ratio is close to the token-time ratio (attention is a small part).
    for size, (depth, hidden) in {"B": (12, 768), "L": (24, 1024), "XL": (28, 1152)}.items():
        ratio = (dit_macs(64, depth, hidden) + dit_macs(256, depth, hidden)) / (2 * dit_macs(256, depth, hidden))
        assert abs(ratio - token_ratio) < 0.01, size
    # Per network call, B/2 averages (5.56 + 23.02) / 2 = 14.3 GMACs: the paper's 14.2 is a per-NFE average.
    assert (dit_macs(64, 12, 768) + dit_macs(256, 12, 768)) / 2e9 == pytest.approx(14.2, rel=0.01)


@pytest.mark.slow
def test_gflops_b2_fvcore() -> None:
    """fvcore on the real DiT-B/2 stages (slow on CPU: builds a 130M-parameter network)."""
    pyr = build(PyramidalFlowConfig(backbone=BackboneConfig("B", 2), stages=2), LATENT_256)
    calls = pyr.flop_trace(SampleSpec(stage_steps=REFERENCE_STEPS))
    counts = [fvcore_macs(c) / 1e9 for c in calls]
    assert counts == pytest.approx([5.562, 23.022], rel=1e-3)
    assert counts[1] == pytest.approx(dit_macs(256, 12, 768) / 1e9, rel=1e-3)
